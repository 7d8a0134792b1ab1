"""Qwen2's tokenizer with Hugging Face's habits, on the C++ byte-level BPE in ``qwen2audio._core``.

``Qwen2Tokenizer.from_pretrained(folder)`` reads what a Hugging Face checkpoint ships
(tokenizer.json, or vocab.json + merges.txt; tokenizer_config.json; chat_template.jinja) and gives
the ids HF's fast tokenizer gives. Encoding and decoding run in C++ with the GIL released, so
several Python threads may share one tokenizer.

Differences from HF, on purpose:

* ``padding_side`` defaults to ``"left"`` (HF: ``"right"``) unless tokenizer_config.json sets it.
  This tokenizer feeds a generation engine, and a decoder-only model generating a batch needs its
  prompts aligned at the right edge; right padding there is a known cause of batched answers
  differing from single ones. Pass ``padding_side="right"`` (or set the attribute) for HF's layout.
* Decoding an id outside the vocabulary raises ``ValueError`` (HF drops it silently).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import _core, _files

VERY_LARGE_INTEGER = int(1e30)  # HF's model_max_length when a checkpoint sets none
SPECIAL_TOKENS_ATTRIBUTES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_TRUNCATE = (True, "longest_first", "only_first")
_NO_TRUNCATE = (False, "do_not_truncate")


class AddedToken:
    """A token added on top of the BPE vocabulary (HF's ``tokenizers.AddedToken`` fields)."""

    __slots__ = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")

    def __init__(self, content: str, single_word: bool = False, lstrip: bool = False, rstrip: bool = False,
                 normalized: bool = True, special: bool = False):
        self.content = content
        self.single_word = single_word
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.normalized = normalized
        self.special = special

    def __str__(self) -> str:
        return self.content

    def __repr__(self) -> str:
        return (f"AddedToken({self.content!r}, rstrip={self.rstrip}, lstrip={self.lstrip}, "
                f"single_word={self.single_word}, normalized={self.normalized}, special={self.special})")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.content == other
        return isinstance(other, AddedToken) and all(getattr(self, name) == getattr(other, name)
                                                     for name in self.__slots__)

    def __hash__(self) -> int:
        return hash(self.content)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class BatchEncoding(dict):
    """The dict ``Qwen2Tokenizer.__call__`` returns; keys also read as attributes (``enc.input_ids``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _token_content(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, AddedToken):
        return value.content
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"a special token must be a string or an AddedToken object, got {value!r}")


def _read_json(path: Path) -> Any:
    return _files.read_json(path, _core.ConfigError)


def _read_chat_template(directory: Path, config: dict) -> str | dict[str, str] | None:
    """chat_template.jinja, else chat_template.json, else tokenizer_config.json's entry (transformers'
    order). A list of named templates becomes a dict name -> template, as in HF."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return _files.read_text(jinja, _core.ConfigError)
    json_file = directory / "chat_template.json"
    if json_file.is_file():
        document = _read_json(json_file)
        if not isinstance(document, dict):
            raise _core.ConfigError(f"{json_file}: must hold a JSON object with a 'chat_template' entry")
        template = document.get("chat_template")
    else:
        template = config.get("chat_template")
    if isinstance(template, list):
        try:
            return {entry["name"]: entry["template"] for entry in template}
        except (KeyError, TypeError):
            raise _core.ConfigError("chat_template list entries need 'name' and 'template'") from None
    if template is not None and not isinstance(template, (str, dict)):
        raise _core.ConfigError(f"chat_template must be a string, got {type(template).__name__}")
    return template


class Qwen2Tokenizer:
    """Qwen2 byte-level BPE tokenizer (NFC, Qwen2's pre-tokenizer regex, added tokens never split).

    Qwen2 adds no BOS/EOS: ``add_special_tokens`` is accepted for compatibility and changes nothing.
    """

    vocab_files_names = {"vocab_file": "vocab.json", "merges_file": "merges.txt", "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, vocab_file: str | os.PathLike | None = None, merges_file: str | os.PathLike | None = None,
                 tokenizer_file: str | os.PathLike | None = None, *, tokenizer_config_file: str | os.PathLike | None = None,
                 added_tokens_file: str | os.PathLike | None = None, chat_template: str | dict | None = None,
                 **kwargs: Any):
        if tokenizer_file is None and (vocab_file is None or merges_file is None):
            raise ValueError("Qwen2Tokenizer needs tokenizer_file, or both vocab_file and merges_file "
                             "(or use Qwen2Tokenizer.from_pretrained(folder))")
        as_path = lambda value: None if value is None else Path(value)  # noqa: E731
        self._core = _core.Tokenizer.from_files(
            tokenizer_json=as_path(tokenizer_file), vocab_json=as_path(vocab_file), merges_txt=as_path(merges_file),
            tokenizer_config_json=as_path(tokenizer_config_file), added_tokens_json=as_path(added_tokens_file))
        config = _read_json(Path(tokenizer_config_file)) if tokenizer_config_file is not None else {}
        if not isinstance(config, dict):
            raise _core.ConfigError(f"{tokenizer_config_file}: must hold a JSON object")
        config.update(kwargs)
        if chat_template is not None:
            config["chat_template"] = chat_template
        self._configure(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> "Qwen2Tokenizer":
        """Loads the tokenizer of a local checkpoint folder. tokenizer.json is used when present,
        otherwise vocab.json + merges.txt. Keyword arguments override tokenizer_config.json entries
        (``padding_side="right"``, ``model_max_length=...``, ``eos_token=...``)."""
        directory = Path(pretrained_model_name_or_path)
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a folder: from_pretrained reads a local checkpoint folder "
                             "(this package never downloads)")
        config_path = directory / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise _core.ConfigError(f"{config_path}: must hold a JSON object")
        for loader_only in ("use_fast", "trust_remote_code", "revision", "cache_dir", "local_files_only", "token"):
            kwargs.pop(loader_only, None)
        self = cls.__new__(cls)
        self._core = _core.Tokenizer.from_directory(directory)
        chat_template = kwargs.pop("chat_template", None)
        config["chat_template"] = chat_template if chat_template is not None else _read_chat_template(directory, config)
        config.update(kwargs)
        self._configure(config)
        self.name_or_path = str(pretrained_model_name_or_path)
        return self

    def _configure(self, config: dict) -> None:
        self._config = dict(config)
        self.name_or_path = str(config.get("name_or_path", ""))
        self._added = {entry["id"]: AddedToken(entry["content"], entry["single_word"], entry["lstrip"],
                                               entry["rstrip"], entry["normalized"], entry["special"])
                       for entry in self._core.added_tokens()}
        self._special_tokens: dict[str, str | None] = {}
        for attribute in SPECIAL_TOKENS_ATTRIBUTES:
            self._special_tokens[attribute] = _token_content(config.get(attribute))
        extra = config.get("additional_special_tokens") or []
        if not isinstance(extra, (list, tuple)):
            raise ValueError(f"additional_special_tokens must be a list, got {extra!r}")
        self.additional_special_tokens = [_token_content(token) for token in extra]
        self.chat_template = config.get("chat_template")
        max_length = config.get("model_max_length")
        self.model_max_length = VERY_LARGE_INTEGER if max_length is None else int(max_length)
        self.padding_side = config.get("padding_side") or "left"
        self.truncation_side = config.get("truncation_side") or "right"
        for name, value in (("padding_side", self.padding_side), ("truncation_side", self.truncation_side)):
            if value not in ("left", "right"):
                raise ValueError(f"{name} must be 'left' or 'right', got {value!r}")
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))

    # ----------------------------------------------------------------- special tokens and vocabulary
    def _special_token(self, attribute: str) -> str | None:
        return self._special_tokens.get(attribute)

    def _set_special_token(self, attribute: str, value: Any) -> None:
        self._special_tokens[attribute] = _token_content(value)

    bos_token = property(lambda self: self._special_token("bos_token"),
                         lambda self, value: self._set_special_token("bos_token", value))
    eos_token = property(lambda self: self._special_token("eos_token"),
                         lambda self, value: self._set_special_token("eos_token", value))
    unk_token = property(lambda self: self._special_token("unk_token"),
                         lambda self, value: self._set_special_token("unk_token", value))
    sep_token = property(lambda self: self._special_token("sep_token"),
                         lambda self, value: self._set_special_token("sep_token", value))
    pad_token = property(lambda self: self._special_token("pad_token"),
                         lambda self, value: self._set_special_token("pad_token", value))
    cls_token = property(lambda self: self._special_token("cls_token"),
                         lambda self, value: self._set_special_token("cls_token", value))
    mask_token = property(lambda self: self._special_token("mask_token"),
                          lambda self, value: self._set_special_token("mask_token", value))

    def _token_id(self, token: str | None) -> int | None:
        return None if token is None else self._core.token_to_id(token)

    bos_token_id = property(lambda self: self._token_id(self.bos_token))
    eos_token_id = property(lambda self: self._token_id(self.eos_token))
    unk_token_id = property(lambda self: self._token_id(self.unk_token))
    sep_token_id = property(lambda self: self._token_id(self.sep_token))
    pad_token_id = property(lambda self: self._token_id(self.pad_token))
    cls_token_id = property(lambda self: self._token_id(self.cls_token))
    mask_token_id = property(lambda self: self._token_id(self.mask_token))

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        result: dict[str, Any] = {name: value for name, value in self._special_tokens.items() if value is not None}
        if self.additional_special_tokens:
            result["additional_special_tokens"] = list(self.additional_special_tokens)
        return result

    @property
    def all_special_tokens(self) -> list[str]:
        """Special tokens in HF's order (bos, eos, unk, sep, pad, cls, mask, additional), each once."""
        tokens = [value for value in self._special_tokens.values() if value is not None]
        tokens += self.additional_special_tokens
        return list(dict.fromkeys(tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._core.token_to_id(token) for token in self.all_special_tokens]

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        return [self._core.token_to_id(token) for token in self.additional_special_tokens]

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {token.content: token_id for token_id, token in sorted(self._added.items())}

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._added.items()))

    @property
    def vocab_size(self) -> int:
        """The BPE vocabulary without added tokens (HF's ``vocab_size``)."""
        return self._core.vocab_size

    def __len__(self) -> int:
        """The vocabulary with added tokens (HF's ``len(tokenizer)``)."""
        return len(self._core)

    def get_vocab(self) -> dict[str, int]:
        vocab = self._core.model_vocab()
        vocab.update(self.added_tokens_encoder)
        return vocab

    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | None | list[int | None]:
        """Token spelling(s) -> id(s); None for a token outside the vocabulary (Qwen2 has no unk token)."""
        if isinstance(tokens, str):
            return self._core.token_to_id(tokens)
        return [self._core.token_to_id(token) for token in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False
                              ) -> str | None | list[str | None]:
        """Id(s) -> token spelling(s) (byte-level, e.g. 'Ġworld'); None for an id outside the vocabulary."""
        if isinstance(ids, (int, np.integer)):
            return self._core.id_to_token(int(ids))
        return [self._core.id_to_token(int(token_id)) for token_id in ids
                if not (skip_special_tokens and self._core.is_special(int(token_id)))]

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return [self._core.id_to_token(token_id) for token_id in self.encode(text, **kwargs)]

    # ------------------------------------------------------------------------------------- encoding
    def _split_special(self, split_special_tokens: bool | None) -> bool:
        return self.split_special_tokens if split_special_tokens is None else bool(split_special_tokens)

    def encode(self, text: str, add_special_tokens: bool = True, *, truncation: bool | str | None = None,
               max_length: int | None = None, split_special_tokens: bool | None = None) -> list[int]:
        """Token ids of one text. Qwen2 adds no special tokens, so ``add_special_tokens`` has no effect."""
        if not isinstance(text, str):
            raise ValueError(f"encode takes a string, got {type(text).__name__}")
        ids = self._core.encode(text, self._split_special(split_special_tokens))
        limit = self._truncation_length(truncation, max_length, padding=False)
        return self._truncate(ids, limit)

    def _truncation_length(self, truncation: Any, max_length: int | None, padding: Any) -> int | None:
        if max_length is not None and (not isinstance(max_length, (int, np.integer)) or max_length < 0):
            raise ValueError(f"max_length must be a non-negative integer, got {max_length!r}")
        if truncation in _NO_TRUNCATE:
            return None
        if truncation is None:
            # HF: a max_length without padding to it means truncation ("longest_first").
            return max_length if max_length is not None and padding in (False, None, "do_not_pad") else None
        if truncation not in _TRUNCATE:
            raise ValueError(f"truncation must be True, False, 'longest_first', 'only_first' or "
                             f"'do_not_truncate', got {truncation!r}")
        return self.model_max_length if max_length is None else int(max_length)

    def _truncate(self, ids: list[int], limit: int | None) -> list[int]:
        if limit is None or len(ids) <= limit:
            return ids
        return ids[:limit] if self.truncation_side == "right" else ids[len(ids) - limit:]

    def __call__(self, text: str | Sequence[str], text_pair: Any = None, add_special_tokens: bool = True,
                 padding: bool | str = False, truncation: bool | str | None = None, max_length: int | None = None,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None,
                 return_tensors: str | None = None, return_attention_mask: bool | None = None,
                 split_special_tokens: bool | None = None, **kwargs: Any) -> BatchEncoding:
        """Encodes a text or a batch: ``input_ids`` and ``attention_mask``, as lists, or as int64 NumPy
        arrays (``return_tensors="np"``) / torch tensors (``"pt"``).

        ``padding``: False / "do_not_pad", True / "longest", or "max_length". Pads with ``pad_token_id``
        on ``padding_side`` (default: the tokenizer's ``padding_side`` attribute, "left" unless the
        checkpoint says otherwise; see the module docstring)."""
        if text_pair is not None:
            raise ValueError("text pairs are not supported: Qwen2 has no pair template")
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(kwargs))}")
        if isinstance(text, str):
            batched, texts = False, [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(item, str) for item in text):
            batched, texts = True, list(text)
        else:
            raise ValueError("text input must be a string or a list/tuple of strings, got "
                             f"{type(text).__name__}")
        encoded = self._core.encode_batch(texts, self._split_special(split_special_tokens)) if batched else \
            [self._core.encode(texts[0], self._split_special(split_special_tokens))]
        limit = self._truncation_length(truncation, max_length, padding)
        encoded = [self._truncate(ids, limit) for ids in encoded]
        return self._pad_and_convert(encoded, batched, padding, max_length, pad_to_multiple_of, padding_side,
                                     return_tensors, return_attention_mask)

    def pad(self, encoded_inputs: dict | list[dict], padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: str | None = None) -> BatchEncoding:
        """Pads already-encoded ``input_ids`` (a dict of lists, or a list of dicts), as HF's ``pad``."""
        if isinstance(encoded_inputs, (list, tuple)):
            sequences = [list(item["input_ids"]) for item in encoded_inputs]
            batched = True
        else:
            ids = encoded_inputs["input_ids"]
            batched = len(ids) > 0 and not isinstance(ids[0], (int, np.integer))
            sequences = [list(item) for item in ids] if batched else [list(ids)]
        sequences = [[int(token) for token in sequence] for sequence in sequences]
        return self._pad_and_convert(sequences, batched, padding, max_length, pad_to_multiple_of, padding_side,
                                     return_tensors, return_attention_mask)

    def _pad_and_convert(self, encoded: list[list[int]], batched: bool, padding: Any, max_length: int | None,
                         pad_to_multiple_of: int | None, padding_side: str | None, return_tensors: str | None,
                         return_attention_mask: bool | None) -> BatchEncoding:
        side = self.padding_side if padding_side is None else padding_side
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        if padding in (True, "longest"):
            target = max((len(ids) for ids in encoded), default=0)
        elif padding == "max_length":
            target = self.model_max_length if max_length is None else int(max_length)
            if target >= VERY_LARGE_INTEGER:
                raise ValueError("padding='max_length' needs max_length (this tokenizer has no model_max_length)")
        elif padding in (False, None, "do_not_pad"):
            target = None
        else:
            raise ValueError(f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}")
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        masks = [[1] * len(ids) for ids in encoded]
        if target is not None and any(len(ids) < target for ids in encoded):
            pad_id = self.pad_token_id
            if pad_id is None:
                raise ValueError("asked to pad, but this tokenizer has no pad_token: set tokenizer.pad_token first")
            for index, ids in enumerate(encoded):
                missing = target - len(ids)
                if missing <= 0:
                    continue
                if side == "right":
                    encoded[index] = ids + [pad_id] * missing
                    masks[index] = masks[index] + [0] * missing
                else:
                    encoded[index] = [pad_id] * missing + ids
                    masks[index] = [0] * missing + masks[index]
        result = BatchEncoding()
        with_mask = True if return_attention_mask is None else bool(return_attention_mask)
        fields = {"input_ids": encoded, "attention_mask": masks} if with_mask else {"input_ids": encoded}
        for name, rows in fields.items():
            result[name] = self._convert(rows, batched, return_tensors, name)
        return result

    @staticmethod
    def _convert(rows: list[list[int]], batched: bool, return_tensors: str | None, name: str) -> Any:
        if return_tensors is None:
            return rows if batched else rows[0]
        if return_tensors not in ("np", "pt"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pt', got {return_tensors!r}")
        if len({len(row) for row in rows}) > 1:
            raise ValueError(f"cannot make a tensor of {name} with rows of different lengths "
                             f"{sorted({len(row) for row in rows})}: pass padding=True")
        array = np.array(rows, dtype=np.int64).reshape(len(rows), len(rows[0]) if rows else 0)
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(array)
        return array

    # -------------------------------------------------------------------------------- chat template
    def _select_chat_template(self, chat_template: str | None, tools: Any) -> str:
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is not None:
                return chat_template
            name = "tool_use" if tools is not None and "tool_use" in templates else "default"
            if name not in templates:
                raise ValueError(f"this tokenizer has named chat templates {sorted(templates)} and none is "
                                 "'default': pass chat_template=<name>")
            return templates[name]
        template = chat_template if chat_template is not None else templates
        if template is None:
            raise ValueError("this tokenizer has no chat_template (none in the checkpoint); pass chat_template=")
        return template

    def apply_chat_template(self, conversation: Sequence[dict[str, Any]] | Sequence[Sequence[dict[str, Any]]],
                            tools: list[Any] | None = None, documents: list[Any] | None = None,
                            chat_template: str | None = None, add_generation_prompt: bool = False,
                            continue_final_message: bool = False, tokenize: bool = True, padding: bool | str = False,
                            truncation: bool = False, max_length: int | None = None,
                            return_tensors: str | None = None, return_dict: bool = False,
                            **template_variables: Any) -> Any:
        """Renders a conversation (or a list of them) with the chat template, as transformers' tokenizer-level
        ``apply_chat_template``: the prompt text with ``tokenize=False``, else its token ids (``return_dict=True``:
        ``input_ids`` and ``attention_mask``). Audio items are rendered by the template as their placeholders
        (``<|audio_bos|><|AUDIO|><|audio_eos|>``), one ``<|AUDIO|>`` each: the tokenizer has no audio. For model
        inputs with the audio, use the processor's ``apply_chat_template``."""
        from . import chat_template as _chat_template

        if add_generation_prompt and continue_final_message:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible: the first "
                             "continues the last message, the second starts a new one")
        if not isinstance(conversation, (list, tuple)):
            raise ValueError(f"conversation must be a list of messages (or a list of those), got "
                             f"{type(conversation).__name__}")
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        template = self._select_chat_template(chat_template, tools)
        variables = {"bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token,
                     "tools": tools, "documents": documents, **template_variables}
        prompts = []
        for messages in conversations:
            text = _chat_template.render(template, list(messages), add_generation_prompt=add_generation_prompt,
                                         **variables)
            if continue_final_message:
                text = self._continue_final_message(text, messages)
            prompts.append(text)
        if not tokenize:
            return prompts if batched else prompts[0]
        encoded = self(prompts if batched else prompts[0], padding=padding, truncation=truncation,
                       max_length=max_length, return_tensors=return_tensors)
        return encoded if return_dict else encoded["input_ids"]

    @staticmethod
    def _continue_final_message(text: str, messages: Sequence[dict[str, Any]]) -> str:
        # transformers: cut the render right after the final message's content, so generation continues it.
        if not messages:
            raise ValueError("continue_final_message needs at least one message")
        content = messages[-1].get("content")
        if isinstance(content, (list, tuple)):
            texts = [item.get("text") for item in content if isinstance(item, dict) and item.get("type") == "text"]
            if len(texts) != 1 or not isinstance(texts[0], str):
                raise ValueError("continue_final_message needs the final message to hold one text item")
            content = texts[0]
        if not isinstance(content, str) or content.strip() not in text:
            raise ValueError("continue_final_message: the final message's content is not in the rendered prompt")
        final = content.strip()
        return text[: text.rindex(final) + len(final)]

    # ------------------------------------------------------------------------------------- decoding
    @staticmethod
    def _id_array(token_ids: Any) -> np.ndarray | list | tuple:
        """Ids as the core reads them: lists and tuples as they are (it reads Python ints directly),
        anything else (NumPy, torch) as a checked 1-D int64 array."""
        if isinstance(token_ids, (list, tuple)):
            return token_ids
        if hasattr(token_ids, "detach"):  # a torch tensor
            token_ids = token_ids.detach().cpu().numpy()
        if isinstance(token_ids, (int, np.integer)):
            return [int(token_ids)]
        array = np.asarray(token_ids)
        if array.size == 0:
            return np.zeros(0, dtype=np.int64)
        if array.ndim != 1:
            raise ValueError(f"decode takes one sequence of token ids, got an array of shape {array.shape}; "
                             "use batch_decode for several")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"token ids must be integers, got {array.dtype}")
        return array.astype(np.int64, copy=False)

    def decode(self, token_ids: Any, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str:
        """Text of a sequence of ids (list, tuple, NumPy array, torch tensor or one int). Bytes that do
        not form valid UTF-8 become U+FFFD. ValueError for an id outside the vocabulary."""
        text = self._core.decode(self._id_array(token_ids), skip_special_tokens)
        return self._clean_up(text, clean_up_tokenization_spaces)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> list[str]:
        if hasattr(sequences, "detach"):
            sequences = sequences.detach().cpu().numpy()
        arrays = [self._id_array(sequence) for sequence in sequences]
        texts = self._core.decode_batch(arrays, skip_special_tokens)
        return [self._clean_up(text, clean_up_tokenization_spaces) for text in texts]

    def _clean_up(self, text: str, clean_up: bool | None) -> str:
        if not (self.clean_up_tokenization_spaces if clean_up is None else clean_up):
            return text
        # HF's clean_up_tokenization (off for Qwen2 checkpoints).
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                              (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text

    def incremental_decoder(self, skip_special_tokens: bool = True) -> "_core.IncrementalDecoder":
        """A streaming decoder: ``.add(token_id)`` returns the text completed by that token (a
        character split over several tokens comes out whole, once its last byte arrives) and
        ``.flush()`` the rest. The pieces joined equal ``decode`` of all the ids."""
        return self._core.incremental_decoder(skip_special_tokens)

    # --------------------------------------------------------------------------------------- saving
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> tuple[str, ...]:
        """Writes vocab.json, merges.txt, tokenizer_config.json (with the chat template) and
        special_tokens_map.json, plus tokenizer.json when the tokenizer was loaded from one."""
        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise ValueError(f"{directory} exists and is not a folder")
        directory.mkdir(parents=True, exist_ok=True)
        vocab = self._core.model_vocab()
        merges = self._core.merges()
        written = []

        def write(name: str, text: str) -> None:
            path = directory / name
            path.write_text(text, encoding="utf-8")
            written.append(str(path))

        ordered_vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
        write("vocab.json", json.dumps(ordered_vocab, ensure_ascii=False, separators=(",", ":")))
        write("merges.txt", "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges))
        added = [dict(id=token_id, content=token.content, single_word=token.single_word, lstrip=token.lstrip,
                      rstrip=token.rstrip, normalized=token.normalized, special=token.special)
                 for token_id, token in sorted(self._added.items())]
        if self._core.model_source == "tokenizer.json":
            byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
            document = {
                "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                "normalizer": {"type": "NFC"} if self._core.normalizes_nfc else None,
                "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": self._core.pattern}, "behavior": "Isolated",
                     "invert": False}, byte_level]},
                "post_processor": byte_level, "decoder": byte_level,
                "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                          "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                          "ignore_merges": self._core.ignore_merges, "vocab": ordered_vocab,
                          "merges": [f"{left} {right}" for left, right in merges]},
            }
            write("tokenizer.json", json.dumps(document, ensure_ascii=False, indent=2))
        config = {key: value for key, value in self._config.items() if key != "name_or_path"}
        config.update({
            "added_tokens_decoder": {str(entry.pop("id")): entry for entry in added},
            "additional_special_tokens": list(self.additional_special_tokens),
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "errors": "replace",
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "split_special_tokens": self.split_special_tokens,
            "tokenizer_class": "Qwen2Tokenizer",
        })
        for attribute in SPECIAL_TOKENS_ATTRIBUTES:
            if self._special_tokens.get(attribute) is not None or attribute in ("bos_token", "unk_token"):
                config[attribute] = self._special_tokens.get(attribute)
        if isinstance(self.chat_template, dict):  # named templates are saved as HF saves them
            config["chat_template"] = [{"name": name, "template": template}
                                       for name, template in self.chat_template.items()]
        elif self.chat_template is not None:
            config["chat_template"] = self.chat_template
        else:
            config.pop("chat_template", None)
        write("tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2))
        write("special_tokens_map.json", json.dumps(self.special_tokens_map, ensure_ascii=False, indent=2))
        return tuple(written)

    def __repr__(self) -> str:
        return (f"Qwen2Tokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, len={len(self)}, "
                f"padding_side={self.padding_side!r}, special_tokens={self.all_special_tokens})")


def bundled_tokenizer_dir() -> Path:
    """The folder of the Qwen2 tokenizer shipped inside this package (vocab.json, merges.txt and a
    tokenizer_config.json with Qwen2-Audio's special tokens and chat template; Apache-2.0, see the NOTICE
    there). It is in every install, so ``Qwen2Tokenizer.from_pretrained(bundled_tokenizer_dir())``
    tokenizes without a checkpoint folder."""
    return Path(__file__).resolve().parent / "tokenizer_files"
