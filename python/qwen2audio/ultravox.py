"""Ultravox v0.5 (fixie-ai/ultravox-v0_5-llama-3_2-1b): a Whisper encoder, stacked-frame projector and a
Llama 3.2 decoder, run by the same C++ engine as Qwen2-Audio (CPU only for now).

:class:`UltravoxProcessor` turns a chat-templated prompt with ``<|audio|>`` placeholders and 16 kHz clips
into the reference processor's inputs (``input_ids`` with each placeholder expanded, ``audio_values``,
``audio_lens``, ``audio_token_start_idx``); :class:`UltravoxForConditionalGeneration` computes logits and
generates from them.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence, Union

import numpy as np

from . import _core, _files, _torch
from .config import GenerationConfig
from .modeling import AudioCausalLM, _tokens
from .processor import BatchFeature

__all__ = ["UltravoxConfig", "UltravoxForConditionalGeneration", "UltravoxModelOutput", "UltravoxProcessor"]

_SAMPLING_RATE = 16000
_MIN_SAMPLES = 320  # the reference pads shorter clips to 320 samples (two encoder frames)


def _read_json_object(path: Path) -> dict:
    document = _files.read_json(path, _core.ConfigError, max_bytes=4 << 20)
    if not isinstance(document, dict):
        raise _core.ConfigError(f"{path}: expected a JSON object")
    return document


class UltravoxProcessor:
    """fixie-ai's ``UltravoxProcessor``: Whisper log-mel features of every clip of a call, padded together to
    the longest (rounded up to a 10 ms hop, no 30 s padding), clips over ``audio_context_size`` frames split
    into chunks (the last one zero-padded in feature space), and each ``<|audio|>`` in the text replaced by
    ``ceil(audio_lens / (encoder_ds_factor * stack_factor))`` copies of the EOS id per chunk."""

    def __init__(self, tokenizer: Any, *, audio_placeholder: str = "<|audio|>", audio_context_size: int = 3000,
                 encoder_ds_factor: int = 2, stack_factor: int = 8, feature_size: int = 128,
                 hop_length: int = 160, n_fft: int = 400):
        if encoder_ds_factor != 2:
            raise ValueError(f"encoder_ds_factor must be 2 (Whisper's stride-2 convolution), got {encoder_ds_factor!r}")
        for name, value in (("audio_context_size", audio_context_size), ("stack_factor", stack_factor)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.tokenizer = tokenizer
        self.audio_placeholder = audio_placeholder
        self.audio_context_size = audio_context_size
        self.encoder_ds_factor = encoder_ds_factor
        self.stack_factor = stack_factor
        self.feature_size = feature_size
        self.hop_length = hop_length
        self.n_fft = n_fft
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token: Ultravox's audio positions carry its id")
        self.audio_token_replacement_id = int(eos)
        # What readers of the processor (the CLI, annotate, chat, serve) ask of any family's: the rate and the
        # 30 s window. The features themselves are computed by _features (padded to the longest clip, not 30 s).
        from .audio import WhisperFeatureExtractor

        self.feature_extractor = WhisperFeatureExtractor(
            feature_size=feature_size, sampling_rate=_SAMPLING_RATE, hop_length=hop_length,
            chunk_length=audio_context_size * hop_length // _SAMPLING_RATE, n_fft=n_fft)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs: Any) -> "UltravoxProcessor":
        from .tokenizer import Qwen2Tokenizer

        folder = _files.local_folder(pretrained_model_name_or_path, what="a checkpoint folder")
        settings: dict[str, Any] = {}
        processor_config = folder / "processor_config.json"
        if processor_config.is_file():
            document = _read_json_object(processor_config)
            for key in ("audio_placeholder", "audio_context_size", "encoder_ds_factor", "stack_factor"):
                if key in document:
                    settings[key] = document[key]
        preprocessor_config = folder / "preprocessor_config.json"
        if preprocessor_config.is_file():
            document = _read_json_object(preprocessor_config)
            for key in ("feature_size", "hop_length", "n_fft"):
                if key in document:
                    settings[key] = document[key]
            if document.get("sampling_rate", _SAMPLING_RATE) != _SAMPLING_RATE:
                raise ValueError(f"{preprocessor_config}: Ultravox's features are at {_SAMPLING_RATE} Hz")
        settings.update(kwargs)
        return cls(Qwen2Tokenizer.from_pretrained(folder), **settings)

    def apply_chat_template(self, conversation: Sequence[Any], add_generation_prompt: bool = True,
                            tokenize: bool = False, return_dict: bool = False, return_tensors: str | None = None,
                            padding: bool | str = False, sampling_rate: int | None = None,
                            long_audio: str = "chunk", **variables: Any) -> Any:
        """The Llama 3.2 chat template's text, ``<|audio|>`` left in place for :meth:`__call__` (a list of
        conversations gives a list). Message content may be a string (with ``<|audio|>`` where a clip goes, as
        fixie-ai's examples write it) or HF's list of parts: an audio part (``audio`` / ``audio_url`` / ``path``
        / ``url``: a file path, bytes or a 16 kHz array) becomes ``<|audio|>``, parts are joined by newlines.
        ``tokenize=True`` processes the audio too (``return_dict=True``: every model input)."""
        from .processor import audio_items

        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        prompts = [self.tokenizer.apply_chat_template([self._flatten(message) for message in messages],
                                                      add_generation_prompt=add_generation_prompt, tokenize=False,
                                                      **variables)
                   for messages in conversations]
        if not tokenize:
            return prompts if batched else prompts[0]
        audio = [clip for messages in conversations for clip in audio_items(messages)]
        inputs = self(text=prompts, audio=audio or None, sampling_rate=sampling_rate, padding=padding,
                      long_audio=long_audio, return_tensors="np" if return_tensors is None else return_tensors)
        if return_dict:
            return inputs
        return inputs["input_ids"] if batched else inputs["input_ids"][0]

    def _flatten(self, message: dict[str, Any]) -> dict[str, Any]:
        """A message with list content as the template reads it: one string, audio parts as placeholders."""
        if not isinstance(message, dict):
            raise ValueError(f"a message must be a dict with 'role' and 'content', got {message!r}")
        content = message.get("content")
        if content is None or isinstance(content, str):
            return message
        parts = []
        for item in content:
            if not isinstance(item, dict):
                raise ValueError(f"message content items must be dicts, got {item!r}")
            if "audio" in item or "audio_url" in item:
                parts.append(self.audio_placeholder)
            elif item.get("type", "text") == "text":
                parts.append(str(item.get("text", "")))
            else:
                raise ValueError(f"Ultravox takes text and audio content, not {item.get('type')!r}")
        return {**message, "content": "\n".join(part for part in parts if part)}

    def audio_token_count(self, frames: int) -> int:
        return _core.ultravox_audio_token_count(int(frames), self.stack_factor)

    def _features(self, clips: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        longest = max(clip.size for clip in clips)
        padded = -(-longest // self.hop_length) * self.hop_length
        log_mel = _core.WhisperLogMel(feature_size=self.feature_size, sampling_rate=_SAMPLING_RATE,
                                      hop_length=self.hop_length, n_fft=self.n_fft, padded_samples=padded)
        features, _ = log_mel(clips)
        valid = [-(-clip.size // self.hop_length) for clip in clips]
        return features, valid

    def batch_group(self, samples: int) -> int:
        """Clips that may share a batch have equal keys. Ultravox's encoder reads a chunk's padding (its last
        stack of frames runs past the clip, as in the reference), so a clip padded to a longer neighbour gets
        other audio tokens than alone: only clips of equal frame count batch without changing answers."""
        return -(-int(samples) // self.hop_length)

    def _clips(self, audio: Any, long_audio: str) -> list[np.ndarray]:
        from .audio import AudioTruncatedWarning, load_audio

        if audio is None:
            return []
        items = [audio] if isinstance(audio, (np.ndarray, str, bytes, os.PathLike)) else list(audio)
        window = self.audio_context_size * self.hop_length
        prepared = []
        for index, item in enumerate(items):
            if isinstance(item, (str, bytes, os.PathLike)):
                item = load_audio(item, sampling_rate=_SAMPLING_RATE)  # decoded and resampled
            clip = np.asarray(item, dtype=np.float32)
            if clip.ndim != 1 or clip.size == 0:
                raise ValueError(f"audio clip {index} must be a non-empty 1-D array of samples, got shape {clip.shape}")
            if not np.isfinite(clip).all():
                raise ValueError(f"audio clip {index} holds a NaN or infinite sample")
            if long_audio == "truncate" and clip.size > window:
                warnings.warn(AudioTruncatedWarning(
                    f"audio clip {index} is {clip.size / _SAMPLING_RATE:.1f} s; the model hears its first "
                    f"{window / _SAMPLING_RATE:.0f} s (long_audio='chunk', Ultravox's own rule, hears all of it)"),
                    stacklevel=3)
                clip = clip[:window]
            if clip.size < _MIN_SAMPLES:
                clip = np.pad(clip, (0, _MIN_SAMPLES - clip.size))
            prepared.append(clip)
        return prepared

    def __call__(self, text: Union[str, Sequence[str]], audio: Any = None, sampling_rate: int | None = None,
                 return_tensors: str | None = "np", padding: bool | str = False, long_audio: str = "chunk",
                 **kwargs: Any) -> BatchFeature:
        """Model inputs for one prompt or a list of them; the clips of ``audio`` (arrays at 16 kHz, paths or
        bytes) fill the ``<|audio|>`` placeholders in order. ``long_audio``: ``"chunk"`` (fixie-ai's rule: a clip
        over 30 s becomes several chunks) or ``"truncate"`` (its first 30 s, with an AudioTruncatedWarning).

        Several prompts form a left-padded batch (``padding=True``; the engine decodes left-padded rows); the
        clips of one call are padded together to the longest, as the reference pads the clips of one prompt, and
        ``audio_token_start_idx`` then counts in the flattened ``(batch, steps)`` ids: row * steps + column.
        A clip's audio tokens depend on that padding (see :meth:`batch_group`): batch clips of equal length for
        answers equal to one-by-one ones."""
        if kwargs.get("audios") is not None:
            if audio is not None:
                raise ValueError("give audio= or audios=, not both")
            audio = kwargs.pop("audios")
        kwargs.pop("audios", None)
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        if return_tensors not in ("np", "pt", None):
            raise ValueError(f"return_tensors must be 'np', 'pt' or None, got {return_tensors!r}")
        if long_audio not in ("truncate", "chunk"):
            raise ValueError(f"long_audio must be 'truncate' or 'chunk', got {long_audio!r}")
        if sampling_rate is not None and sampling_rate != _SAMPLING_RATE:
            raise ValueError(f"audio must be {_SAMPLING_RATE} Hz, got sampling_rate={sampling_rate}; resample it first "
                             f"(qwen2audio.load_audio(path, sampling_rate={_SAMPLING_RATE}))")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(sample, str) for sample in texts):
            raise ValueError("text must be a prompt string or a non-empty list of them")
        prepared = self._clips(audio, long_audio)
        placeholders = sum(sample.count(self.audio_placeholder) for sample in texts)
        if placeholders != len(prepared):
            raise ValueError(f"the text holds {placeholders} {self.audio_placeholder} placeholders but "
                             f"{len(prepared)} audio clips were given")

        features, valid = self._features(prepared) if prepared else (None, [])
        context = self.audio_context_size
        rows: list[list[int]] = []
        chunks, lens, token_len, starts, chunk_row = [], [], [], [], []
        clip = 0
        for row, sample in enumerate(texts):
            pieces = sample.split(self.audio_placeholder)
            ids: list[int] = []
            for piece in pieces[:-1]:
                ids += self.tokenizer.encode(piece, add_special_tokens=False)
                for offset in range(0, valid[clip], context):
                    chunk = features[clip, :, offset:offset + context]
                    if offset > 0 and chunk.shape[1] < context:
                        chunk = np.pad(chunk, ((0, 0), (0, context - chunk.shape[1])))
                    chunks.append(chunk)
                    lens.append(min(valid[clip] - offset, context))
                    token_len.append(self.audio_token_count(lens[-1]))
                    starts.append(len(ids))
                    chunk_row.append(row)
                    ids += [self.audio_token_replacement_id] * token_len[-1]
                clip += 1
            ids += self.tokenizer.encode(pieces[-1], add_special_tokens=False)
            rows.append(ids)

        steps = max(len(ids) for ids in rows)
        if len(rows) > 1 and not padding and any(len(ids) != steps for ids in rows):
            raise ValueError("the prompts have different lengths: pass padding=True to left-pad them into a batch")
        pad = self.tokenizer.pad_token_id
        pad = self.audio_token_replacement_id if pad is None else int(pad)
        input_ids = np.full((len(rows), steps), pad, dtype=np.int64)
        attention_mask = np.zeros((len(rows), steps), dtype=np.int64)
        for row, ids in enumerate(rows):
            input_ids[row, steps - len(ids):] = ids
            attention_mask[row, steps - len(ids):] = 1
        result: dict[str, Any] = {}
        if chunks:
            flat_starts = [row * steps + steps - len(rows[row]) + start for row, start in zip(chunk_row, starts)]
            result.update(audio_values=np.stack(chunks).astype(np.float32),
                          audio_lens=np.asarray(lens, dtype=np.int64),
                          audio_token_len=np.asarray(token_len, dtype=np.int64),
                          audio_token_start_idx=np.asarray(flat_starts, dtype=np.int64),
                          audio_batch_size=np.bincount(np.asarray(chunk_row, dtype=np.int64),
                                                       minlength=len(rows)).astype(np.int64))
        result["input_ids"] = input_ids
        result["attention_mask"] = attention_mask
        if return_tensors is None:
            return BatchFeature({key: value.tolist() for key, value in result.items()})
        return BatchFeature(result, tensor_type=return_tensors)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)


class UltravoxModelOutput(dict):
    """``logits`` (batch, steps, vocab) float32, as transformers' CausalLMOutput."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as missing:
            raise AttributeError(name) from missing


def _float_array(value: Any) -> np.ndarray:
    # Torch tensors too (a processor's return_tensors="pt", cast to bfloat16 or moved by .to()).
    return np.asarray(_torch.to_numpy(value), dtype=np.float32)


def _int_array(value: Any, name: str, ndim: int) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(_torch.to_numpy(value)), dtype=np.int64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


class UltravoxConfig(dict):
    """config.json as a dict, with attribute access; ``text_config`` gives the decoder's resolved sizes
    (``vocab_size``, ``hidden_size``, ``max_position_embeddings``) as the engine loaded them."""

    def __init__(self, document: dict, core: Any):
        super().__init__(document)
        embedded = document.get("text_config") if isinstance(document.get("text_config"), dict) else {}
        self.text_config = SimpleNamespace(**{**embedded, "vocab_size": int(core.vocab_size),
                                              "hidden_size": int(core.hidden_size),
                                              "max_position_embeddings": int(core.max_position_embeddings)})

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as missing:
            raise AttributeError(name) from missing


class UltravoxForConditionalGeneration(AudioCausalLM):
    """An Ultravox checkpoint on the CPU: ``model(**processor(...)).logits``, ``model.generate(**inputs)`` with
    transformers' generation arguments (as Qwen2-Audio's: streamers, stop strings, sampling, logprobs, ...),
    ``start_session`` and ``chat``."""

    AUDIO_INPUTS = ("audio_values", "audio_lens", "audio_token_start_idx")
    AUDIO_METADATA = ("audio_token_len", "audio_batch_size")

    def __init__(self, core: Any, folder: Path, quantization: str | None = None, group_size: int = 128):
        self._core = core
        self.name_or_path = str(folder)
        self.config = UltravoxConfig(_read_json_object(folder / "config.json"), core)
        self.generation_config = GenerationConfig._for_model(json.loads(core.generation_config_json), folder)
        self._quantization = None if quantization is None else {"bits": {"int8": 8, "int4": 4}[quantization],
                                                                "group_size": group_size}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], dtype: str = "auto",
                        num_threads: int | None = None, kv_cache_dtype: str = "auto", device: str = "cpu",
                        quantization: str | None = None, quantization_group_size: int = 128,
                        **kwargs: Any) -> "UltravoxForConditionalGeneration":
        """quantization: None, "int8" or "int4": weight-only, the decoder layers' projections (the rule Qwen2-Audio
        follows too); the encoder and projector keep their dtype."""
        for accepted in ("trust_remote_code", "local_files_only", "low_cpu_mem_usage"):
            kwargs.pop(accepted, None)
        if "torch_dtype" in kwargs:
            dtype = kwargs.pop("torch_dtype")
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        if not isinstance(dtype, str):
            dtype = str(dtype).replace("torch.", "")
        if num_threads is not None and (isinstance(num_threads, bool) or int(num_threads) < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        folder = _files.local_folder(pretrained_model_name_or_path, what="a checkpoint folder")
        if quantization is not None and not isinstance(quantization, str):
            raise ValueError(f"quantization must be None, 'int8' or 'int4', got {quantization!r}")
        if quantization not in (None, "int8", "int4"):
            raise ValueError(f"quantization must be None, 'int8' or 'int4', got {quantization!r}")
        core = _core.UltravoxModel.load(folder, dtype=dtype, num_threads=num_threads or 0,
                                        kv_cache_dtype=kv_cache_dtype, device=str(device),
                                        quantization=quantization or "none",
                                        quantization_group_size=int(quantization_group_size))
        return cls(core, folder, quantization, int(quantization_group_size))

    @property
    def quantization_config(self) -> dict | None:
        """The weight-only quantization asked for at load (decoder projections): ``bits`` and ``group_size``, as
        Qwen2-Audio's reports it; None when unquantized."""
        return None if self._quantization is None else dict(self._quantization)

    def audio_tower(self, audio_values: Any, audio_lens: Any = None) -> np.ndarray:
        """The encoder's last hidden state (chunks, ceil(frames / 2), d_model) of every frame."""
        return self._core.encode(_float_array(audio_values),
                                 None if audio_lens is None else _int_array(audio_lens, "audio_lens", 1))

    def audio_embeddings(self, audio_values: Any, audio_lens: Any = None, all_rows: bool = False) -> np.ndarray:
        """The projector's rows: each chunk's audio tokens in order (all_rows: every stacked row)."""
        return self._core.audio_embeddings(_float_array(audio_values),
                                           None if audio_lens is None else _int_array(audio_lens, "audio_lens", 1),
                                           all_rows)

    def _audio_arguments(self, audio_values: Any, audio_lens: Any, audio_token_start_idx: Any) -> dict[str, Any]:
        if audio_values is None:
            if audio_lens is not None or audio_token_start_idx is not None:
                raise ValueError("audio_lens and audio_token_start_idx need audio_values")
            return {}
        if audio_token_start_idx is None:
            raise ValueError("audio_values need audio_token_start_idx (the processor gives it)")
        return {"audio_values": _float_array(audio_values),
                "audio_lens": None if audio_lens is None else _int_array(audio_lens, "audio_lens", 1),
                "audio_token_start_idx": _int_array(audio_token_start_idx, "audio_token_start_idx", 1)}

    def get_inputs_embeds(self, input_ids: Any, audio_values: Any = None, audio_lens: Any = None,
                          audio_token_start_idx: Any = None, **ignored: Any) -> np.ndarray:
        """The merged sequence the decoder reads (batch, steps, hidden)."""
        audio = self._audio_arguments(audio_values, audio_lens, audio_token_start_idx)
        embeds = self._core.embed(_int_array(input_ids, "input_ids", 2), **audio)
        return _torch.as_tensor(embeds, input_ids.device) if _torch.is_tensor(input_ids) else embeds

    def __call__(self, input_ids: Any, attention_mask: Any = None, audio_values: Any = None, audio_lens: Any = None,
                 audio_token_start_idx: Any = None, audio_token_len: Any = None, audio_batch_size: Any = None
                 ) -> UltravoxModelOutput:
        audio = self._audio_arguments(audio_values, audio_lens, audio_token_start_idx)
        mask = None if attention_mask is None else _int_array(attention_mask, "attention_mask", 2)
        logits = self._core.forward(_int_array(input_ids, "input_ids", 2), mask, **audio)
        if _torch.is_tensor(input_ids):
            logits = _torch.as_tensor(logits, input_ids.device)
        return UltravoxModelOutput(logits=logits)

    forward = __call__

    def generate(self, input_ids: Any, attention_mask: Any = None, audio_values: Any = None, audio_lens: Any = None,
                 audio_token_start_idx: Any = None, audio_token_len: Any = None, audio_batch_size: Any = None, *,
                 streamer: Any = None, **generation: Any) -> Any:
        """Prompt plus new tokens, (batch, steps + new), with Qwen2-Audio's generate arguments and semantics
        (transformers': unset ones from generation_config.json; ``eos_token_id=[]`` never stops early;
        ``return_dict_in_generate``, ``output_logprobs``, ``stop_strings``, ``streamer``, ...)."""
        as_torch = _torch.is_tensor(input_ids)
        ids, mask = _tokens(input_ids, attention_mask)
        audio = self._session_audio(audio_values=audio_values, audio_lens=audio_lens,
                                    audio_token_start_idx=audio_token_start_idx)
        plan = self._plan(ids.shape[1], generation)
        return self._generate_from(ids, mask, audio, plan, streamer, as_torch, input_ids.device if as_torch else None)

    # --- the family rules generation and serving use (see AudioCausalLM) ---

    def _session_audio(self, audio_values: Any = None, audio_lens: Any = None, audio_token_start_idx: Any = None,
                       **other: Any) -> tuple:
        for name in self.AUDIO_METADATA:
            other.pop(name, None)
        if other:
            raise TypeError(f"Ultravox takes audio_values, audio_lens and audio_token_start_idx (its processor's "
                            f"fields), not {sorted(other)}")
        audio = self._audio_arguments(audio_values, audio_lens, audio_token_start_idx)
        return (audio.get("audio_values"), None, audio.get("audio_lens"), audio.get("audio_token_start_idx"))

    def audio_runs(self, input_ids: np.ndarray, inputs: dict) -> list:
        # The audio positions carry the EOS id, which text uses too: the processor's starts say where they are.
        if inputs.get("audio_values") is None:
            return []
        values = np.asarray(inputs["audio_values"])
        lens = np.asarray(inputs["audio_lens"], dtype=np.int64)
        starts = np.asarray(inputs["audio_token_start_idx"], dtype=np.int64)
        counts = [_core.ultravox_audio_token_count(int(length), self._core.stack_factor) for length in lens]
        return [(int(start), count, np.append(values[chunk].ravel(), np.float32(lens[chunk])))
                for chunk, (start, count) in enumerate(zip(starts, counts))]

    def clip_audio(self, inputs: dict, clips: Sequence[int], offset: int) -> dict:
        if not clips:
            return {}
        clips = list(clips)
        return {"audio_values": np.asarray(inputs["audio_values"])[clips],
                "audio_lens": np.asarray(inputs["audio_lens"], dtype=np.int64)[clips],
                "audio_token_start_idx": np.asarray(inputs["audio_token_start_idx"], dtype=np.int64)[clips] - offset}

    def __repr__(self) -> str:
        return (f"UltravoxForConditionalGeneration({self.name_or_path!r}, dtype={self.dtype}, "
                f"num_threads={self.num_threads}, device={self.device!r})")
