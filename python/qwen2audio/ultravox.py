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
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from . import _core, _files

__all__ = ["UltravoxForConditionalGeneration", "UltravoxModelOutput", "UltravoxProcessor"]

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

    def apply_chat_template(self, conversation: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **variables: Any) -> Any:
        """The Llama 3.2 chat template's text (``<|audio|>`` left in place for :meth:`__call__`)."""
        return self.tokenizer.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt,
                                                  tokenize=tokenize, **variables)

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

    def __call__(self, text: Union[str, Sequence[str]], audio: Any = None, sampling_rate: int | None = None,
                 return_tensors: str | None = "np", **kwargs: Any) -> dict[str, Any]:
        if kwargs.get("audios") is not None:
            if audio is not None:
                raise ValueError("give audio= or audios=, not both")
            audio = kwargs.pop("audios")
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        if return_tensors not in ("np", None):
            raise ValueError(f"return_tensors must be 'np' or None, got {return_tensors!r}")
        if sampling_rate is not None and sampling_rate != _SAMPLING_RATE:
            raise ValueError(f"audio must be {_SAMPLING_RATE} Hz, got sampling_rate={sampling_rate}; resample it first "
                             f"(qwen2audio.load_audio(path, sampling_rate={_SAMPLING_RATE}))")
        if not isinstance(text, str):
            texts = list(text)
            if len(texts) != 1 or not isinstance(texts[0], str):
                raise ValueError("UltravoxProcessor takes one prompt string per call")
            text = texts[0]
        clips = [] if audio is None else ([audio] if isinstance(audio, np.ndarray) else list(audio))
        prepared = []
        for index, clip in enumerate(clips):
            clip = np.asarray(clip, dtype=np.float32)
            if clip.ndim != 1 or clip.size == 0:
                raise ValueError(f"audio clip {index} must be a non-empty 1-D array of samples, got shape {clip.shape}")
            if not np.isfinite(clip).all():
                raise ValueError(f"audio clip {index} holds a NaN or infinite sample")
            if clip.size < _MIN_SAMPLES:
                clip = np.pad(clip, (0, _MIN_SAMPLES - clip.size))
            prepared.append(clip)
        pieces = text.split(self.audio_placeholder)
        if len(pieces) - 1 != len(prepared):
            raise ValueError(f"the text holds {len(pieces) - 1} {self.audio_placeholder} placeholders but "
                             f"{len(prepared)} audio clips were given")

        ids: list[int] = []
        result: dict[str, Any] = {}
        if prepared:
            features, valid = self._features(prepared)
            context = self.audio_context_size
            chunks, lens, owner = [], [], []
            for index, frames in enumerate(valid):
                for offset in range(0, frames, context):
                    chunk = features[index, :, offset:offset + context]
                    if offset > 0 and chunk.shape[1] < context:
                        chunk = np.pad(chunk, ((0, 0), (0, context - chunk.shape[1])))
                    chunks.append(chunk)
                    lens.append(min(frames - offset, context))
                    owner.append(index)
            token_len = [self.audio_token_count(length) for length in lens]
            starts = []
            for chunk, index in enumerate(owner):
                if chunk == 0 or owner[chunk - 1] != index:
                    ids += self.tokenizer.encode(pieces[index], add_special_tokens=False)
                starts.append(len(ids))
                ids += [self.audio_token_replacement_id] * token_len[chunk]
            result.update(audio_values=np.stack(chunks).astype(np.float32),
                          audio_lens=np.asarray(lens, dtype=np.int64),
                          audio_token_len=np.asarray(token_len, dtype=np.int64),
                          audio_token_start_idx=np.asarray(starts, dtype=np.int64),
                          audio_batch_size=np.asarray([len(chunks)], dtype=np.int64))
        ids += self.tokenizer.encode(pieces[-1], add_special_tokens=False)
        result["input_ids"] = np.asarray([ids], dtype=np.int64)
        result["attention_mask"] = np.ones_like(result["input_ids"])
        if return_tensors is None:
            result = {key: value.tolist() for key, value in result.items()}
        return result

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


def _int_array(value: Any, name: str, ndim: int) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(value), dtype=np.int64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


class UltravoxForConditionalGeneration:
    """An Ultravox checkpoint on the CPU: ``model(**processor(...)).logits`` and ``model.generate(**inputs)``."""

    def __init__(self, core: Any, folder: Path):
        self._core = core
        self.name_or_path = str(folder)
        self.config = _read_json_object(folder / "config.json")
        self.generation_config = json.loads(core.generation_config_json)

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
        core = _core.UltravoxModel.load(folder, dtype=dtype, num_threads=num_threads or 0,
                                        kv_cache_dtype=kv_cache_dtype, device=str(device),
                                        quantization=quantization or "none",
                                        quantization_group_size=int(quantization_group_size))
        return cls(core, folder)

    @property
    def dtype(self) -> str:
        return self._core.dtype

    @property
    def device(self) -> str:
        return self._core.device

    def audio_tower(self, audio_values: Any, audio_lens: Any = None) -> np.ndarray:
        """The encoder's last hidden state (chunks, ceil(frames / 2), d_model) of every frame."""
        return self._core.encode(np.asarray(audio_values, dtype=np.float32),
                                 None if audio_lens is None else _int_array(audio_lens, "audio_lens", 1))

    def audio_embeddings(self, audio_values: Any, audio_lens: Any = None, all_rows: bool = False) -> np.ndarray:
        """The projector's rows: each chunk's audio tokens in order (all_rows: every stacked row)."""
        return self._core.audio_embeddings(np.asarray(audio_values, dtype=np.float32),
                                           None if audio_lens is None else _int_array(audio_lens, "audio_lens", 1),
                                           all_rows)

    def _audio_arguments(self, audio_values: Any, audio_lens: Any, audio_token_start_idx: Any) -> dict[str, Any]:
        if audio_values is None:
            if audio_lens is not None or audio_token_start_idx is not None:
                raise ValueError("audio_lens and audio_token_start_idx need audio_values")
            return {}
        if audio_token_start_idx is None:
            raise ValueError("audio_values need audio_token_start_idx (the processor gives it)")
        return {"audio_values": np.asarray(audio_values, dtype=np.float32),
                "audio_lens": None if audio_lens is None else _int_array(audio_lens, "audio_lens", 1),
                "audio_token_start_idx": _int_array(audio_token_start_idx, "audio_token_start_idx", 1)}

    def get_inputs_embeds(self, input_ids: Any, audio_values: Any = None, audio_lens: Any = None,
                          audio_token_start_idx: Any = None, **ignored: Any) -> np.ndarray:
        """The merged sequence the decoder reads (batch, steps, hidden)."""
        audio = self._audio_arguments(audio_values, audio_lens, audio_token_start_idx)
        return self._core.embed(_int_array(input_ids, "input_ids", 2), **audio)

    def __call__(self, input_ids: Any, attention_mask: Any = None, audio_values: Any = None, audio_lens: Any = None,
                 audio_token_start_idx: Any = None, audio_token_len: Any = None, audio_batch_size: Any = None
                 ) -> UltravoxModelOutput:
        audio = self._audio_arguments(audio_values, audio_lens, audio_token_start_idx)
        mask = None if attention_mask is None else _int_array(attention_mask, "attention_mask", 2)
        return UltravoxModelOutput(logits=self._core.forward(_int_array(input_ids, "input_ids", 2), mask, **audio))

    forward = __call__

    def generate(self, input_ids: Any, attention_mask: Any = None, audio_values: Any = None, audio_lens: Any = None,
                 audio_token_start_idx: Any = None, audio_token_len: Any = None, audio_batch_size: Any = None,
                 max_new_tokens: int = 20, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                 eos_token_id: Any = None) -> np.ndarray:
        """Prompt plus new tokens, (batch, steps + new). eos_token_id: None takes generation_config.json's;
        ``[]`` never stops early."""
        ids = _int_array(input_ids, "input_ids", 2)
        if isinstance(max_new_tokens, bool) or int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if eos_token_id is None:
            eos_token_id = self.generation_config.get("eos_token_id") or []
        eos = [int(eos_token_id)] if isinstance(eos_token_id, (int, np.integer)) else [int(t) for t in eos_token_id]
        pad = self.generation_config.get("pad_token_id")
        pad = int(pad) if pad is not None else (eos[0] if eos else 0)
        audio = self._audio_arguments(audio_values, audio_lens, audio_token_start_idx)
        session = _core.Session(self._core, ids.shape[0])
        mask = None if attention_mask is None else _int_array(attention_mask, "attention_mask", 2)
        session.append(ids, mask, audio.get("audio_values"), None, audio.get("audio_lens"),
                       audio.get("audio_token_start_idx"))
        new = session.generate(int(max_new_tokens), do_sample=do_sample, temperature=temperature, top_k=top_k,
                               top_p=top_p, repetition_penalty=repetition_penalty, seed=seed, eos_token_ids=eos,
                               pad_token_id=pad)
        return np.concatenate([ids, np.asarray(new, dtype=np.int64)], axis=1)
