"""Qwen2AudioProcessor: Whisper features + Qwen2 tokenizer + chat template, as Hugging Face's."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import _files, _torch
from . import chat_template as _chat_template
from .audio import MissingSamplingRateWarning, WhisperFeatureExtractor, load_audio, num_audio_tokens, split_audio
from .tokenizer import Qwen2Tokenizer

_NUMPY_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64, "half": np.float16,
                 "float": np.float32, "double": np.float64}


def _stacklevel_outside_package() -> int:
    """The ``warnings.warn`` stacklevel (for the calling function) of the first frame outside this package, so
    a warning points at the user's line whichever processor method it came through."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _device_name(value: Any) -> str | None:
    """A device argument's name ("cpu", "cuda:0"), or None when ``value`` is not a device."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return f"cuda:{int(value)}"  # torch's spelling of a GPU index
    if _torch.is_device(value):
        return str(value)
    if isinstance(value, str) and (value in ("cpu", "cuda", "mps", "meta") or value.startswith(("cuda:", "cpu:"))):
        return value
    return None


class BatchFeature(dict):
    """Model inputs as a dict with attribute access (``inputs.input_ids``, ``inputs.input_ids = ...``), like
    transformers' BatchFeature. Values are NumPy arrays, or torch tensors with ``return_tensors="pt"``.

    ``.to(device)`` / ``.to(dtype)`` return this object, as transformers'. Torch tensors move or cast as
    torch does, except that a move to CUDA without a usable CUDA torch leaves them on the CPU; NumPy
    values ignore device moves (the engine reads host memory on every device) and cast floating fields
    to a NumPy dtype. So ``inputs.to("cuda")`` from transformers code is harmless on a CPU-only machine.
    """

    def __init__(self, data: dict[str, Any] | None = None, tensor_type: str | None = None):
        super().__init__(data or {})
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # copy/pickle probe dunders; never a field
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def data(self) -> dict[str, Any]:
        return dict(self)

    def convert_to_tensors(self, tensor_type: str | None = None) -> "BatchFeature":
        """Turns every field into ``"np"`` arrays or ``"pt"`` torch tensors (None: leave them)."""
        if tensor_type is None:
            return self
        if tensor_type not in ("np", "pt"):
            raise ValueError(f"return_tensors must be 'np', 'pt' or None, got {tensor_type!r}")
        for key, value in self.items():
            array = np.asarray(_torch.to_numpy(value))
            self[key] = _torch.as_tensor(array) if tensor_type == "pt" else array
        return self

    def to(self, *args: Any, **kwargs: Any) -> "BatchFeature":
        """Moves to a device and/or casts floating fields to a dtype; returns this object (see the class)."""
        unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy"}
        if unknown:
            raise TypeError(f"BatchFeature.to() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        device, dtype = kwargs.get("device"), kwargs.get("dtype")
        for arg in args:
            if _device_name(arg) is not None and device is None:
                device = arg
            elif dtype is None and (_torch.is_dtype(arg) or isinstance(arg, (str, type, np.dtype))):
                dtype = arg
            else:
                raise ValueError(f"BatchFeature.to() takes a device ('cpu', 'cuda', ...) and/or a dtype, got {arg!r}")
        if device is not None and _device_name(device) is None:
            raise ValueError(f"BatchFeature.to(): device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, "
                             f"got {device!r}")
        numpy_dtype = None
        if dtype is not None and any(not _torch.is_tensor(value) for value in self.values()):
            numpy_dtype = self._numpy_float(dtype)
        torch = _torch.torch_module()
        torch_dtype = dtype
        if isinstance(dtype, str) and torch is not None:
            torch_dtype = getattr(torch, dtype.replace("torch.", ""), None)
            if not isinstance(torch_dtype, torch.dtype):
                raise ValueError(f"BatchFeature.to(): {dtype!r} is not a torch dtype")
        for key, value in list(self.items()):
            if _torch.is_tensor(value):
                # As a HostTensor, a field the caller put in as a plain tensor also survives .to("cuda")
                # on a CPU-only torch.
                value = value.as_subclass(_torch.host_tensor_class())
                if torch.is_floating_point(value):
                    moved = value.to(*([device] if device is not None else []),
                                     **({"dtype": torch_dtype} if torch_dtype is not None else {}))
                else:
                    moved = value.to(device) if device is not None else value
                self[key] = moved
            elif numpy_dtype is not None:
                array = np.asarray(value)
                if array.dtype.kind == "f":
                    self[key] = array.astype(numpy_dtype)
        return self

    @staticmethod
    def _numpy_float(dtype: Any) -> Any:
        name = str(dtype).replace("torch.", "")
        if isinstance(dtype, (type, np.dtype)):
            try:
                name = np.dtype(dtype).name
            except TypeError:
                pass
        if name not in _NUMPY_FLOATS:
            hint = " (NumPy has no bfloat16: use return_tensors='pt')" if name == "bfloat16" else ""
            raise ValueError(f"BatchFeature.to(): cannot cast NumPy fields to {dtype!r}{hint}; "
                             "give float16, float32 or float64")
        return _NUMPY_FLOATS[name]


class Qwen2AudioProcessor:
    """Turns text (with ``<|AUDIO|>`` placeholders) and audio into model inputs, exactly as transformers'
    ``Qwen2AudioProcessor`` does: each placeholder becomes as many audio tokens as the encoder will
    produce for its clip (wrapped in ``<|audio_bos|>``/``<|audio_eos|>`` when the text does not already have
    them).

    Long audio: transformers silently keeps only the first 30 s. ``long_audio="truncate"`` (the default)
    keeps that behaviour and warns; ``long_audio="chunk"`` splits a long clip into consecutive 30 s windows,
    each its own audio segment in the prompt.
    """

    audio_token = "<|AUDIO|>"
    audio_bos_token = "<|audio_bos|>"
    audio_eos_token = "<|audio_eos|>"

    def __init__(
        self,
        feature_extractor: WhisperFeatureExtractor | None = None,
        tokenizer: Qwen2Tokenizer | None = None,
        chat_template: str | None = None,
        audio_token: str | None = None,
        audio_bos_token: str | None = None,
        audio_eos_token: str | None = None,
    ):
        if tokenizer is None:
            raise ValueError("Qwen2AudioProcessor needs a tokenizer; use Qwen2AudioProcessor.from_pretrained(dir)")
        # Qwen2-Audio uses 128 mel bins; the bare class defaults to Whisper-v2's 80.
        self.feature_extractor = feature_extractor or WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
        self.tokenizer = tokenizer
        self.chat_template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
        self.audio_token = audio_token or type(self).audio_token
        self.audio_bos_token = audio_bos_token or type(self).audio_bos_token
        self.audio_eos_token = audio_eos_token or type(self).audio_eos_token

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> "Qwen2AudioProcessor":
        """Loads a local checkpoint folder's tokenizer, feature extractor and chat template. Loader options of
        transformers that mean nothing here (``trust_remote_code``, ``revision``, ...) are accepted and ignored."""
        for loader_only in ("trust_remote_code", "revision", "cache_dir", "local_files_only", "token", "use_fast"):
            kwargs.pop(loader_only, None)
        path = _files.local_folder(path, what="a checkpoint folder with the tokenizer and preprocessor files")
        tokenizer = Qwen2Tokenizer.from_pretrained(path)
        feature_extractor = WhisperFeatureExtractor.from_pretrained(path)
        chat_template = kwargs.pop("chat_template", None)
        if chat_template is None:
            chat_template = _read_chat_template(path) or tokenizer.chat_template
        return cls(feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.feature_extractor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.chat_template is not None:
            (path / "chat_template.json").write_text(json.dumps({"chat_template": self.chat_template}, indent=2) + "\n")

    # -------------------------------------------------------------------------------- processing
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio: Any = None,
        audios: Any = None,
        sampling_rate: int | None = None,
        padding: bool | str = False,
        return_tensors: str | None = "np",
        long_audio: str = "truncate",
        **kwargs: Any,
    ) -> BatchFeature:
        """Model inputs for ``text`` (a string or a list) and its audio: ``input_ids``, ``attention_mask``, and
        with audio ``input_features`` / ``feature_attention_mask``, as a :class:`BatchFeature` of NumPy arrays
        (``return_tensors="pt"``: torch tensors; None: lists for the token fields).

        ``audio`` (or ``audios``): one clip or a list, each a path, encoded bytes (decoded and resampled to the
        feature extractor's rate) or a 1-D array. Arrays must already be at that rate (16 kHz): pass
        ``sampling_rate=16000`` to say so; without it a :class:`MissingSamplingRateWarning` is given, as
        transformers warns, and another rate is a ValueError. ``padding=True`` pads a batch (on the
        tokenizer's side, left by default)."""
        if audios is not None:
            if audio is not None:
                raise ValueError("give the audio as `audio=` or as `audios=` (the older name), not both")
            audio = audios
        if text is None:
            raise ValueError("`text` is required: Qwen2-Audio prompts place each audio at a <|AUDIO|> placeholder")
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(sample, str) for sample in text):
            texts = list(text)
        else:
            raise ValueError(f"`text` must be a string or a list of strings, got {type(text).__name__}")
        if long_audio not in ("truncate", "chunk"):
            raise ValueError(f"long_audio must be 'truncate' or 'chunk', got {long_audio!r}")
        if return_tensors not in ("np", "pt", None):
            raise ValueError(f"return_tensors must be 'np', 'pt' or None, got {return_tensors!r}")

        clips = self._as_clip_list(audio, sampling_rate)
        placeholder_count = sum(sample.count(self.audio_token) for sample in texts)
        if placeholder_count != len(clips):
            raise ValueError(
                f"Found {placeholder_count} {self.audio_token} placeholder(s) in the text but received {len(clips)} "
                "audio(s): each audio needs exactly one placeholder (apply_chat_template writes them for you)"
            )

        result = BatchFeature()
        if clips:
            segments_per_clip = [self._segments(clip, long_audio) for clip in clips]
            segments = [segment for clip_segments in segments_per_clip for segment in clip_segments]
            features = self.feature_extractor(
                segments, sampling_rate=self.feature_extractor.sampling_rate, return_attention_mask=True,
                padding="max_length", return_tensors="np",
            )
            feature_mask = np.asarray(features["attention_mask"])
            token_counts = [num_audio_tokens(int(length)) for length in feature_mask.sum(-1)]
            texts = self._expand_placeholders(texts, [len(s) for s in segments_per_clip], token_counts)
            result["input_features"] = np.asarray(features["input_features"])
            result["feature_attention_mask"] = feature_mask
        encoded = self.tokenizer(texts, padding=padding, return_tensors=None if return_tensors is None else "np",
                                 **kwargs)
        result["input_ids"] = encoded["input_ids"]
        if "attention_mask" in encoded:
            result["attention_mask"] = encoded["attention_mask"]
        # HF's order: text fields first, then audio.
        ordered = BatchFeature()
        for key in ("input_ids", "attention_mask", "input_features", "feature_attention_mask"):
            if key in result:
                ordered[key] = result[key]
        return ordered.convert_to_tensors("pt") if return_tensors == "pt" else ordered

    def _as_clip_list(self, audio: Any, sampling_rate: int | None) -> list[np.ndarray]:
        if audio is None:
            return []
        audio = _torch.to_numpy(audio)
        if isinstance(audio, np.ndarray) and audio.ndim != 1 and audio.dtype != object:
            raise ValueError(
                f"audio array has shape {audio.shape}; give one 1-D mono array per clip, or a list of them "
                "(for stereo, average the channels: audio.mean(axis=...))"
            )
        items = [audio] if isinstance(audio, (np.ndarray, str, bytes, os.PathLike)) else list(audio)
        expected_rate = self.feature_extractor.sampling_rate
        if sampling_rate is not None and sampling_rate != expected_rate:
            raise ValueError(
                f"audio was given at sampling_rate={sampling_rate} but Qwen2-Audio expects {expected_rate} Hz: resample "
                f"first, e.g. qwen2audio.load_audio(path, sampling_rate={expected_rate})"
            )
        clips = []
        for item in items:
            if isinstance(item, (str, bytes, os.PathLike)):
                clips.append(load_audio(item, sampling_rate=expected_rate))  # decoded and resampled: no doubt
            else:
                clips.append(_torch.to_numpy(item))
        if sampling_rate is None and len(clips) > sum(isinstance(item, (str, bytes, os.PathLike)) for item in items):
            warnings.warn(MissingSamplingRateWarning(
                f"audio arrays were given without sampling_rate=, so they are taken to be {expected_rate} Hz "
                f"unchecked; audio at another rate would give wrong features silently. Pass "
                f"sampling_rate={expected_rate} to confirm the rate, or read files with "
                f"qwen2audio.load_audio(path, sampling_rate={expected_rate}), which resamples."),
                stacklevel=_stacklevel_outside_package())
        return clips

    def _segments(self, clip: np.ndarray, long_audio: str) -> list[np.ndarray]:
        window = self.feature_extractor.n_samples
        if long_audio == "chunk" and len(clip) > window:
            return split_audio(clip, sampling_rate=self.feature_extractor.sampling_rate,
                               chunk_seconds=window / self.feature_extractor.sampling_rate)
        return [clip]

    def _expand_placeholders(self, texts: list[str], segments_per_clip: list[int], token_counts: list[int]) -> list[str]:
        """Each placeholder becomes its clip's audio tokens; a chunked clip becomes one bos/tokens/eos group
        per 30 s window."""
        token_iter = iter(token_counts)
        segments_iter = iter(segments_per_clip)
        bos, eos, token = self.audio_bos_token, self.audio_eos_token, self.audio_token
        expanded = []
        for sample in texts:
            pieces = sample.split(token)
            out = [pieces[0]]
            for index in range(1, len(pieces)):
                before, after = out[-1], pieces[index]
                has_bos, has_eos = before.endswith(bos), after.startswith(eos)
                groups = [token * next(token_iter) for _ in range(next(segments_iter))]
                if len(groups) == 1:
                    replacement = groups[0] if (has_bos or has_eos) else bos + groups[0] + eos
                else:
                    # The surrounding bos/eos (if present) frame the first and last window.
                    replacement = (eos + bos).join(groups)
                    if not has_bos:
                        replacement = bos + replacement
                    if not has_eos:
                        replacement = replacement + eos
                out.append(replacement)
                out.append(after)
            expanded.append("".join(out))
        return expanded

    # ------------------------------------------------------------------------------ chat template
    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]] | list[list[dict[str, Any]]],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        padding: bool | str = False,
        sampling_rate: int | None = None,
        long_audio: str = "truncate",
        **template_variables: Any,
    ) -> str | list[str] | list[int] | list[list[int]] | BatchFeature:
        """Render ``conversation`` with the checkpoint's chat template, as transformers does.

        Messages follow HF's format: ``{"role": "user", "content": [{"type": "audio", "audio_url": path},
        {"type": "text", "text": "..."}]}``; an audio item may carry ``audio`` / ``audio_url`` / ``path`` /
        ``url`` holding a file path, bytes or a 16 kHz NumPy array. With ``tokenize=True`` the audio is loaded
        and the whole prompt is processed; ``return_dict=True`` returns all model inputs.
        """
        template = chat_template or self.chat_template
        if template is None:
            raise ValueError("this processor has no chat_template (none in the checkpoint); pass chat_template=")
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        special_tokens = {
            "bos_token": self.tokenizer.bos_token, "eos_token": self.tokenizer.eos_token,
            "pad_token": self.tokenizer.pad_token,
        }
        special_tokens.update(template_variables)
        prompts = [
            _chat_template.render(template, list(messages), add_generation_prompt=add_generation_prompt, **special_tokens)
            for messages in conversations
        ]
        if not tokenize:
            return prompts if batched else prompts[0]
        audio = [clip for messages in conversations for clip in audio_items(messages)]
        inputs = self(
            text=prompts, audio=audio or None, sampling_rate=sampling_rate, padding=padding,
            return_tensors=return_tensors or "np" if return_dict else return_tensors, long_audio=long_audio,
        )
        if return_dict:
            return inputs
        ids = inputs["input_ids"]
        return ids if batched else ids[0]

    # ----------------------------------------------------------------------------------- decoding
    def decode(self, token_ids: Iterable[int], skip_special_tokens: bool = False, **kwargs: Any) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def batch_decode(self, sequences: Iterable[Iterable[int]], skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features", "feature_attention_mask"]

    def __repr__(self) -> str:
        return f"Qwen2AudioProcessor(feature_extractor={self.feature_extractor!r}, tokenizer={self.tokenizer!r})"


_AUDIO_KEYS = ("audio", "audio_url", "path", "url")


def audio_items(messages: Sequence[dict[str, Any]]) -> list[Any]:
    """The audio of each audio content item, in the order the chat template numbers them."""
    found = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            continue
        for item in content:
            if not isinstance(item, dict):
                raise ValueError(f"message content items must be dicts, got {item!r}")
            # The template counts an item as audio when it has an 'audio' or 'audio_url' key.
            if "audio" in item or "audio_url" in item:
                source = next((item[key] for key in _AUDIO_KEYS if item.get(key) is not None), None)
                if source is None:
                    raise ValueError(f"audio item {item!r} gives no audio (expected one of {_AUDIO_KEYS})")
                found.append(source)
    return found


def _read_chat_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return _files.read_text(path / "chat_template.jinja")
    if (path / "chat_template.json").is_file():
        document = _files.read_json(path / "chat_template.json")
        if not isinstance(document, dict) or not isinstance(document.get("chat_template"), (str, dict)):
            raise ValueError(f"{path / 'chat_template.json'} is not a valid chat template file: "
                             "expected an object whose 'chat_template' is a string")
        return document["chat_template"]
    return None
