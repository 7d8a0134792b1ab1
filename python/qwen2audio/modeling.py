"""Qwen2-Audio for conditional generation, with Hugging Face's habits and NumPy in and out.

All compute runs in the C++ engine with the GIL released; this module only checks and converts
arguments and resolves generation defaults from ``generation_config.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core
from .config import GenerationConfig, Qwen2AudioConfig

__all__ = ["Qwen2AudioForConditionalGeneration", "GenerationSession", "CausalLMOutput"]

_DTYPES = {
    "auto": "auto",
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


@dataclass
class CausalLMOutput:
    """What ``model(...)`` returns: ``logits`` as float32 ``(batch, sequence, vocab)``."""

    logits: np.ndarray

    def __getitem__(self, key: Union[str, int]) -> np.ndarray:
        if key in ("logits", 0):
            return self.logits
        raise KeyError(key)

    def keys(self) -> list[str]:
        return ["logits"]


# --- argument checks: every bad array is a ValueError naming the argument ---

def _array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as error:  # e.g. ragged lists
        raise ValueError(f"{name} is not a rectangular array: {error}") from None
    if array.dtype == object:
        raise ValueError(f"{name} is not a rectangular numeric array")
    return array


def _token_ids(value: Any, name: str = "input_ids") -> np.ndarray:
    array = _array(value, name)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, sequence), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds ids beyond int64")
    return np.ascontiguousarray(array, dtype=np.int64)


def _mask(value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = _array(value, name)
    if array.dtype.kind == "f" and np.isin(array, (0.0, 1.0)).all():
        array = array.astype(np.int64)  # float masks (0.0/1.0) are common in torch code
    if array.dtype.kind not in "biu":
        raise ValueError(f"{name} must hold 0 or 1 (integers or booleans), got dtype {array.dtype}")
    if array.ndim == 1 and len(shape) == 2 and shape[0] == 1:
        array = array[None, :]
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _features(value: Any) -> np.ndarray:
    array = _array(value, "input_features")
    if array.dtype.kind != "f":
        raise ValueError(f"input_features must be floating point (float32 log-mel), got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"input_features must have shape (clips, mel_bins, frames), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("input_features holds no clip")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        clip = int(np.argwhere(~np.isfinite(array))[0][0])
        raise ValueError(f"input_features of clip {clip} hold NaN or infinite values")
    return array


def _audio(input_features: Any, feature_attention_mask: Any) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    if input_features is None:
        if feature_attention_mask is not None:
            raise ValueError("feature_attention_mask was given without input_features")
        return None, None
    features = _features(input_features)
    if feature_attention_mask is None:
        return features, None
    mask = _array(feature_attention_mask, "feature_attention_mask")
    if mask.ndim == 1 and features.shape[0] == 1:
        mask = mask[None]
    return features, _mask(mask, "feature_attention_mask", (features.shape[0], features.shape[2]))


def _tokens(input_ids: Any, attention_mask: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
    if input_ids is None:
        raise ValueError("input_ids are required")
    ids = _token_ids(input_ids)
    mask = None if attention_mask is None else _mask(attention_mask, "attention_mask", ids.shape)
    return ids, mask


def _eos_list(value: Union[None, int, Iterable[int]]) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (int, np.integer)):
        return [int(value)]
    try:
        tokens = list(value)
    except TypeError:
        raise ValueError(f"eos_token_id must be an integer or a list of integers, got {value!r}") from None
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
            raise ValueError(f"eos_token_id must be an integer or a list of integers, got {value!r}")
    return [int(token) for token in tokens]


# Generation settings cross into C++ as int64 / uint64 / double: out-of-range or wrongly typed values
# are refused here with the argument's name rather than failing pybind11's conversion with a TypeError.
_INT64 = 2**63


def _integer(value: Any, name: str, low: int = -_INT64, high: int = _INT64) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value < high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}), got {value!r}")
    return int(value)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


class _StreamerAdapter:
    """Feeds HF-style streamers (``put``/``end``) or plain callables with each step's tokens."""

    def __init__(self, streamer: Any):
        self.streamer = streamer

    def start(self, prompt: np.ndarray) -> None:
        # transformers hands the prompt to put() first; TextStreamer(skip_prompt=True) drops it.
        if hasattr(self.streamer, "put"):
            self.streamer.put(prompt)

    def __call__(self, tokens: np.ndarray) -> None:
        if hasattr(self.streamer, "put"):
            self.streamer.put(tokens)
        else:
            self.streamer(tokens)

    def end(self) -> None:
        if hasattr(self.streamer, "end"):
            self.streamer.end()


class GenerationSession:
    """A conversation on one model that keeps its KV cache between calls.

    ``append`` feeds tokens (a prompt, the next user turn, with their audio) and ``generate``
    continues from everything fed so far, so earlier turns are never recomputed. The last token
    ``generate`` returns is computed by the next call. ``tokens`` holds every token so far (prompt
    padding, generated and pending); ``truncate(n)`` rewinds to the first ``n`` of them, e.g. to the
    prefix a re-rendered conversation shares with the session. Calls on one session are serialized;
    use one session per concurrent conversation.
    """

    # Each row keeps its own token history and cache slots: a typo such as 10**9 must not allocate them.
    _MAX_BATCH_SIZE = 1 << 16

    def __init__(self, model: "Qwen2AudioForConditionalGeneration", batch_size: int = 1):
        batch_size = _integer(batch_size, "batch_size", 1, self._MAX_BATCH_SIZE + 1)
        self.model = model
        self._core = _core.Session(model._core, batch_size)

    @property
    def batch_size(self) -> int:
        return self._core.batch_size

    def __len__(self) -> int:
        return self._core.length

    @property
    def tokens(self) -> np.ndarray:
        """Every token of each row so far, ``(batch, len(self))`` int64."""
        rows = self._core.tokens()
        return np.asarray(rows, dtype=np.int64).reshape(self.batch_size, -1)

    def append(self, input_ids: Any, attention_mask: Any = None, input_features: Any = None,
               feature_attention_mask: Any = None) -> None:
        """Feeds more tokens; audio placeholders among them take the given clips in order.
        ``attention_mask`` rows must be left-padded."""
        ids, mask = _tokens(input_ids, attention_mask)
        features, feature_mask = _audio(input_features, feature_attention_mask)
        self._core.append(ids, mask, features, feature_mask)

    def generate(self, input_ids: Any = None, attention_mask: Any = None, input_features: Any = None,
                 feature_attention_mask: Any = None, *, max_new_tokens: Optional[int] = None,
                 max_length: Optional[int] = None, do_sample: Optional[bool] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                 eos_token_id: Union[None, int, Sequence[int]] = None, pad_token_id: Optional[int] = None,
                 streamer: Any = None) -> np.ndarray:
        """Appends ``input_ids`` (when given), then generates. Returns only the new tokens,
        ``(batch, steps)`` int64; ``steps < max_new_tokens`` when every row reached EOS."""
        prompt = np.zeros((self.batch_size, 0), dtype=np.int64)
        if input_ids is not None:
            prompt, mask = _tokens(input_ids, attention_mask)
            features, feature_mask = _audio(input_features, feature_attention_mask)
            self._core.append(prompt, mask, features, feature_mask)
        elif input_features is not None or attention_mask is not None:
            raise ValueError("attention_mask and input_features go with input_ids")
        options = self.model._generation_options(
            len(self), max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
            seed=seed, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        return self._run(options, streamer, prompt=prompt)

    def _run(self, options: dict, streamer: Any, prompt: np.ndarray) -> np.ndarray:
        adapter = None if streamer is None else _StreamerAdapter(streamer)
        try:
            if adapter is not None:
                adapter.start(prompt)
            return self._core.generate(on_tokens=adapter, **options)
        finally:
            if adapter is not None:
                adapter.end()

    def truncate(self, length: int) -> None:
        self._core.truncate(_integer(length, "length"))

    def reset(self) -> None:
        self._core.reset()

    def __repr__(self) -> str:
        return f"GenerationSession(batch_size={self.batch_size}, tokens={len(self)})"


class Qwen2AudioForConditionalGeneration:
    """Qwen2-Audio: Whisper-style audio encoder, projector and Qwen2 decoder, in C++.

    >>> model = Qwen2AudioForConditionalGeneration.from_pretrained("Qwen2-Audio-7B-Instruct")
    >>> inputs = processor(text=prompt, audios=[audio], return_tensors="np")
    >>> ids = model.generate(**inputs, max_new_tokens=64)
    """

    def __init__(self, core: "_core.Model", name_or_path: str):
        self._core = core
        self.name_or_path = name_or_path
        self.config = Qwen2AudioConfig._from_resolved(json.loads(core.config_json))
        self.generation_config = GenerationConfig(json.loads(core.generation_config_json))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], dtype: str = "auto",
                        num_threads: Optional[int] = None, quantization: Optional[str] = None,
                        quantization_group_size: Optional[int] = None,
                        kv_cache_dtype: str = "auto", device: str = "cpu") -> "Qwen2AudioForConditionalGeneration":
        """Loads a checkpoint folder as published on the Hub (config.json, safetensors).

        ``dtype``: ``"auto"`` (as stored: BF16 weights compute in bfloat16, used in place from the
        memory map; F32 in float32), ``"bfloat16"`` or ``"float32"`` (converted at load). ``num_threads``:
        OpenMP threads of this model (default: OMP_NUM_THREADS, else one per physical core).

        ``quantization``: ``"int8"`` or ``"int4"`` quantizes the language model's linear layers at load
        (weight-only, symmetric, a float32 scale per ``quantization_group_size`` weights, default 128;
        the output head in int8, the audio encoder and embeddings as stored). A folder written by
        :meth:`save_pretrained` from a quantized model loads its packed weights as they are.

        ``kv_cache_dtype``: what generation keeps keys and values in: ``"auto"`` (bfloat16 for a
        bfloat16 model, halving the cache; float32 otherwise), ``"bfloat16"`` or ``"float32"``.

        ``device``: ``"cpu"`` (default) or ``"cuda"`` / ``"cuda:N"``: the encoder, projector and decoder run
        on that GPU with bfloat16 weights (converted at load when the file holds float32) and a bfloat16
        KV cache; the same generate, streaming and chat API applies. Needs a build with the CUDA backend
        (made when nvcc is found) and an Ampere or newer GPU; raises :class:`qwen2audio.DeviceError`
        otherwise. Quantization and float32 compute are CPU-only.
        """
        if not isinstance(device, str):
            device = str(device)  # torch.device("cuda:0") and the like
        key = str(dtype).replace("torch.", "")
        if key not in _DTYPES:
            raise ValueError(f"dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
        kv_key = str(kv_cache_dtype).replace("torch.", "")
        if kv_key not in _DTYPES:
            raise ValueError(f"kv_cache_dtype must be 'auto', 'float32' or 'bfloat16', got {kv_cache_dtype!r}")
        if num_threads is not None and (not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        from .quantization import check_quantization_arguments

        quantization, group_size = check_quantization_arguments(quantization, quantization_group_size)
        path = os.fspath(pretrained_model_name_or_path)
        core = _core.Model.load(path, _DTYPES[key], int(num_threads or 0), quantization=quantization,
                                quantization_group_size=group_size, kv_cache_dtype=_DTYPES[kv_key],
                                device=device)
        return cls(core, path)

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> None:
        """Writes a checkpoint folder that :meth:`from_pretrained` loads back: the weights as this model
        holds them (quantized layers packed, with ``quantization_config`` in config.json; the others as
        stored in the source folder), and the source's other files (generation config, tokenizer,
        preprocessor)."""
        from .quantization import save_pretrained

        save_pretrained(self, save_directory)

    @property
    def quantization_config(self) -> Optional[dict]:
        """The weight-only quantization this model runs with (config.json's form), or None."""
        text = self._core.quantization_config_json
        return None if text is None else json.loads(text)

    # --- properties ---

    @property
    def dtype(self) -> str:
        """``"float32"`` or ``"bfloat16"``: the dtype the weights compute in."""
        return self._core.dtype

    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda:N"``: where the model computes."""
        return self._core.device

    @property
    def kv_cache_dtype(self) -> str:
        """``"float32"`` or ``"bfloat16"``: what generation sessions keep keys and values in."""
        return self._core.kv_cache_dtype

    @property
    def num_threads(self) -> int:
        return self._core.num_threads

    @num_threads.setter
    def num_threads(self, count: int) -> None:
        self._core.num_threads = int(count)

    # --- layer by layer ---

    def audio_encoder(self, input_features: Any, feature_attention_mask: Any = None) -> np.ndarray:
        """The audio encoder's last hidden state, ``(clips, 750, d_model)`` float32. Without a mask
        every frame counts as valid."""
        features, mask = _audio(input_features, feature_attention_mask)
        if features is None:
            raise ValueError("input_features are required")
        return self._core.encode(features, mask)

    def encode_audio(self, input_features: Any, feature_attention_mask: Any = None) -> np.ndarray:
        """Projected audio embeddings of every clip's audio tokens, clip after clip:
        ``(sum of audio_token_counts, hidden_size)`` float32 — what replaces the placeholders."""
        features, mask = _audio(input_features, feature_attention_mask)
        if features is None:
            raise ValueError("input_features are required")
        return self._core.audio_embeddings(features, mask)

    def audio_token_counts(self, feature_attention_mask: Any) -> np.ndarray:
        """Audio tokens each clip yields (the ``<|AUDIO|>`` expansion), from its feature mask."""
        mask = _array(feature_attention_mask, "feature_attention_mask")
        if mask.ndim == 1:
            mask = mask[None]
        lengths = _mask(mask, "feature_attention_mask", mask.shape).sum(axis=-1)
        return np.array([_core.audio_token_count(int(length)) for length in lengths], dtype=np.int64)

    # --- forward ---

    def forward(self, input_ids: Any = None, attention_mask: Any = None, input_features: Any = None,
                feature_attention_mask: Any = None) -> CausalLMOutput:
        """Logits of every position, ``(batch, sequence, vocab)`` float32, as transformers'
        forward (positions 0..sequence-1 in every row)."""
        ids, mask = _tokens(input_ids, attention_mask)
        features, feature_mask = _audio(input_features, feature_attention_mask)
        return CausalLMOutput(logits=self._core.forward(ids, mask, features, feature_mask))

    __call__ = forward

    # --- generation ---

    def start_session(self, batch_size: int = 1) -> GenerationSession:
        """A session that keeps its KV cache across calls (multi-turn chat)."""
        return GenerationSession(self, batch_size)

    def generate(self, input_ids: Any = None, attention_mask: Any = None, input_features: Any = None,
                 feature_attention_mask: Any = None, *, max_new_tokens: Optional[int] = None,
                 max_length: Optional[int] = None, do_sample: Optional[bool] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                 eos_token_id: Union[None, int, Sequence[int]] = None, pad_token_id: Optional[int] = None,
                 streamer: Any = None) -> np.ndarray:
        """Prompt plus new tokens, ``(batch, sequence + steps)`` int64, as transformers' generate.

        Unset arguments come from ``generation_config``. Batches are left-padded (``attention_mask``
        0 on the left). Rows that reached an EOS token continue with ``pad_token_id`` until all
        have; ``eos_token_id=[]`` never stops early. ``seed`` makes sampling reproducible.
        ``streamer``: an object with ``put``/``end`` (transformers' streamers: ``put`` gets the
        prompt first, then each step's tokens) or a callable receiving each step's tokens
        ``(batch,)``.
        """
        ids, mask = _tokens(input_ids, attention_mask)
        features, feature_mask = _audio(input_features, feature_attention_mask)
        options = self._generation_options(
            ids.shape[1], max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample,
            temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        session = self.start_session(ids.shape[0])
        session._core.append(ids, mask, features, feature_mask)
        new_tokens = session._run(options, streamer, prompt=ids)
        return np.concatenate([ids, new_tokens], axis=1)

    def _generation_options(self, length: int, *, max_new_tokens, max_length, do_sample, temperature, top_k, top_p,
                            repetition_penalty, seed, eos_token_id, pad_token_id) -> dict:
        config = self.generation_config
        if max_new_tokens is None:
            if max_length is None:
                max_new_tokens = config.max_new_tokens
                max_length = config.max_length if max_new_tokens is None else None
            if max_new_tokens is None:
                if max_length <= length:
                    raise ValueError(
                        f"the input is {length} tokens but max_length is {max_length}; "
                        "pass max_new_tokens (or a larger max_length)")
                max_new_tokens = max_length - length
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
            raise ValueError(f"max_new_tokens must be an integer, got {max_new_tokens!r}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        limit = self.config.text_config.max_position_embeddings
        if length + max_new_tokens > limit:
            raise ValueError(
                f"the context would reach {length + max_new_tokens} tokens ({length} of input + max_new_tokens "
                f"{max_new_tokens}), beyond max_position_embeddings ({limit})")
        eos = _eos_list(config.eos_token_id if eos_token_id is None else eos_token_id)
        vocab = self.config.text_config.vocab_size
        for token in eos:
            if not 0 <= token < vocab:
                raise ValueError(f"eos_token_id {token} is outside the vocabulary [0, {vocab})")
        if pad_token_id is None:
            pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
        if seed is not None:
            seed = _integer(seed, "seed", 0, 2**64)
        return dict(
            max_new_tokens=int(max_new_tokens),
            do_sample=bool(config.do_sample if do_sample is None else do_sample),
            temperature=_real(config.temperature if temperature is None else temperature, "temperature"),
            top_k=_integer(config.top_k if top_k is None else top_k, "top_k"),
            top_p=_real(config.top_p if top_p is None else top_p, "top_p"),
            repetition_penalty=_real(config.repetition_penalty if repetition_penalty is None else repetition_penalty,
                                     "repetition_penalty"),
            seed=seed,
            eos_token_ids=eos,
            pad_token_id=_integer(pad_token_id, "pad_token_id", 0, vocab),
        )

    def chat(self, processor: Any, conversation: Sequence[dict], stream: bool = False,
             long_audio: str = "truncate", **generation: Any) -> Union[str, Iterator[str]]:
        """Answer the last turn of ``conversation`` (HF's message format, audio inline as paths or
        16 kHz arrays): the reply text, or with ``stream=True`` an iterator of text pieces.

        The model keeps the KV cache of its last chat, so a follow-up call with the same conversation
        plus new turns only prefills the new tokens.
        """
        from .chat import chat

        return chat(self, processor, conversation, stream=stream, long_audio=long_audio, **generation)

    def __repr__(self) -> str:
        return (f"Qwen2AudioForConditionalGeneration({self.name_or_path!r}, dtype={self.dtype}, "
                f"num_threads={self.num_threads}, device={self.device!r})")
