"""Qwen2-Audio for conditional generation, with Hugging Face's habits and NumPy in and out.

All compute runs in the C++ engine with the GIL released; this module only checks and converts
arguments and resolves generation defaults from ``generation_config.json``. Torch tensors are accepted
wherever arrays are, and outputs are torch tensors when the inputs were (torch stays an optional import).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, fields
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core, _files, _torch
from .config import GenerationConfig, Qwen2AudioConfig, generation_defaults

__all__ = ["AudioCausalLM", "Qwen2AudioForConditionalGeneration", "GenerationSession", "CausalLMOutput",
           "GenerateDecoderOnlyOutput", "InputEmbeddings"]

# model.chat's reply budget when neither the call nor generation_config.json sets one (the CLI's default):
# transformers' max_length of 20 counts the prompt, which alone is longer than that for any audio.
CHAT_MAX_NEW_TOKENS = 256

_DTYPES = {
    "auto": "auto",
    "float32": "float32", "fp32": "float32", "f32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


@dataclass
class CausalLMOutput:
    """What ``model(...)`` returns: ``logits`` as float32 ``(batch, sequence, vocab)``."""

    logits: Any

    def __getitem__(self, key: Union[str, int]) -> Any:
        if key in ("logits", 0):
            return self.logits
        raise KeyError(key)

    def keys(self) -> list[str]:
        return ["logits"]


@dataclass
class GenerateDecoderOnlyOutput:
    """What ``generate(..., return_dict_in_generate=True)`` returns, as transformers'.

    ``sequences``: ``(batch, sequence + steps)`` (a session's ``generate``: the new tokens only).
    ``scores`` (``output_scores=True``): a tuple with one ``(batch, vocab)`` float32 array per step, the
    scores the next token was chosen from (after repetition penalty, min-new-tokens, temperature, and with
    what top-k / top-p removed at -inf). ``logits`` (``output_logits=True``): the same for the raw logits.
    ``logprobs`` (``output_logprobs=True``, this package's extension): ``(batch, steps)`` float32, the log-
    probability of each chosen token under the raw logits (log-softmax computed in the engine, no vocabulary
    copied per step); 0 where a finished row is padded. Torch tensors when the inputs were.
    Fields read as attributes, by name (``out["sequences"]``) or by position among those set (``out[0]``).
    """

    sequences: Any
    scores: Optional[tuple] = None
    logits: Optional[tuple] = None
    logprobs: Any = None
    attentions: Optional[tuple] = None
    hidden_states: Optional[tuple] = None
    past_key_values: Any = None

    def keys(self) -> list[str]:
        return [field.name for field in fields(self) if getattr(self, field.name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.keys())

    def __getitem__(self, key: Union[str, int, slice]) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


GenerateOutput = GenerateDecoderOnlyOutput


class InputEmbeddings:
    """What ``model.get_input_embeddings()`` returns: the language model's token embedding table.

    Calling it with ids (any shape; NumPy, lists or torch) gives their rows, ``(*ids.shape, hidden_size)``
    float32 (torch when given torch), computed in the engine from the weights as loaded. Unlike transformers'
    ``nn.Embedding`` it is read-only and has no ``.weight`` tensor (the table is 151649 x hidden in the
    checkpoint's own dtype; a float32 copy of a 7B model's would be 2 GiB): ``num_embeddings`` and
    ``embedding_dim`` give its shape.
    """

    def __init__(self, model: "Qwen2AudioForConditionalGeneration"):
        self._model = model
        self.num_embeddings = model.config.text_config.vocab_size
        self.embedding_dim = model.config.text_config.hidden_size

    def __call__(self, input_ids: Any) -> Any:
        torch_input = _torch.is_tensor(input_ids)
        array = _array(input_ids, "input_ids")
        if array.dtype.kind not in "iu":
            raise ValueError(f"input_ids must hold integers, got dtype {array.dtype}")
        if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
            raise ValueError("input_ids holds ids beyond int64")
        rows = self._model._core.embed_tokens(np.ascontiguousarray(array, dtype=np.int64))
        return _torch.as_tensor(rows, input_ids.device) if torch_input else rows

    forward = __call__

    def __repr__(self) -> str:
        return f"InputEmbeddings({self.num_embeddings}, {self.embedding_dim})"


# --- argument checks: every bad array is a ValueError naming the argument ---

def _array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(_torch.to_numpy(value))
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
    # NaN and infinity are refused by the engine, for every family and every caller.
    return np.ascontiguousarray(array, dtype=np.float32)


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
    """Feeds HF-style streamers (``put``/``end``) or plain callables with each step's tokens (torch
    tensors when the caller's inputs were, as transformers hands them)."""

    def __init__(self, streamer: Any, as_torch: bool = False):
        if not (hasattr(streamer, "put") or callable(streamer)):
            raise TypeError(f"streamer must have put()/end() (like TextStreamer) or be callable, got "
                            f"{type(streamer).__name__}")
        self.streamer = streamer
        self.as_torch = as_torch

    def _convert(self, tokens: np.ndarray) -> Any:
        return _torch.as_tensor(tokens) if self.as_torch else tokens

    def start(self, prompt: np.ndarray) -> None:
        # transformers hands the prompt to put() first; TextStreamer(skip_prompt=True) drops it.
        if hasattr(self.streamer, "put"):
            self.streamer.put(self._convert(prompt))

    def __call__(self, tokens: np.ndarray) -> None:
        if hasattr(self.streamer, "put"):
            self.streamer.put(self._convert(tokens))
        else:
            self.streamer(self._convert(tokens))

    def end(self) -> None:
        if hasattr(self.streamer, "end"):
            self.streamer.end()


class _StopStrings:
    """transformers' stop_strings: a row finishes once a stop string is complete in its text, the token
    that completes it included (also when that token runs past the string's end). Each row decodes its new
    tokens incrementally and keeps only as much text as the longest string needs."""

    def __init__(self, strings: list[str], tokenizer: Any, prompts: np.ndarray, eos: list[int]):
        self.strings = strings
        self.keep = max(len(string) for string in strings) - 1
        self.eos = set(eos)
        self.decoders = [tokenizer.incremental_decoder(skip_special_tokens=False) for _ in range(len(prompts))]
        # A string may start in the prompt's last characters; a character is at most 4 tokens' bytes.
        tail_tokens = 4 * (self.keep + 1)
        self.tails = [tokenizer.decode(row[-tail_tokens:].tolist())[-self.keep:] if self.keep and row.size else ""
                      for row in prompts]
        self.finished = [False] * len(prompts)

    def __call__(self, tokens: np.ndarray) -> list[int]:
        finish = []
        for row, token in enumerate(tokens.tolist()):
            if self.finished[row]:
                continue
            if token in self.eos:
                self.finished[row] = True  # the engine ends it; later pads must not match
                continue
            piece = self.decoders[row].add(token)
            if not piece:
                continue  # part of a character: nothing new to match yet
            text = self.tails[row] + piece
            boundary = len(self.tails[row])
            # An occurrence starting at or after this point ends inside the new piece.
            if any(text.find(string, max(0, boundary - len(string) + 1)) >= 0 for string in self.strings):
                self.finished[row] = True
                finish.append(row)
            self.tails[row] = text[-self.keep:] if self.keep else ""
        return finish

_GENERATION_ARGUMENTS = frozenset({
    "max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k", "top_p",
    "repetition_penalty", "seed", "eos_token_id", "pad_token_id", "num_beams", "stop_strings", "tokenizer",
    "generation_config", "return_dict_in_generate", "output_scores", "output_logits", "output_logprobs",
    "use_cache",
})
_OUTPUT_FLAGS = ("output_scores", "output_logits", "output_logprobs")


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_, int, np.integer)) or value not in (0, 1):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _stop_strings(value: Any) -> Optional[list[str]]:
    if value is None:
        return None
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, (list, tuple)) or not strings or \
            not all(isinstance(string, str) and string for string in strings):
        raise ValueError(f"stop_strings must be a non-empty string or a list of them, got {value!r}")
    return list(strings)


def _stop_tokenizer(tokenizer: Any) -> Any:
    if tokenizer is None:
        raise ValueError("stop_strings needs the tokenizer to match text: pass tokenizer=processor.tokenizer to "
                         "generate (transformers requires it too)")
    if not hasattr(tokenizer, "incremental_decoder") and hasattr(tokenizer, "tokenizer"):
        tokenizer = tokenizer.tokenizer  # a processor
    if not (hasattr(tokenizer, "incremental_decoder") and hasattr(tokenizer, "decode")):
        raise TypeError(f"tokenizer must be a qwen2audio tokenizer (processor.tokenizer), got {type(tokenizer).__name__}")
    return tokenizer


@dataclass
class _Plan:
    """A generate call's arguments, resolved and checked: what the engine gets and what Python adds."""

    options: dict
    return_dict: bool
    eos: list
    stop_strings: Optional[list] = None
    tokenizer: Any = None
    prompt_rows: Optional[np.ndarray] = None

    def stop_matcher(self) -> Optional[_StopStrings]:
        if self.stop_strings is None:
            return None
        return _StopStrings(self.stop_strings, self.tokenizer, self.prompt_rows, self.eos)


@dataclass
class _Result:
    tokens: np.ndarray
    scores: Optional[np.ndarray] = None  # [steps, batch, vocab]
    logits: Optional[np.ndarray] = None  # [steps, batch, vocab]
    logprobs: Optional[np.ndarray] = None  # [batch, steps]

    def output(self, sequences: np.ndarray, plan: _Plan, device: Any) -> Any:
        """``sequences`` alone, or the dict output; torch tensors on ``device`` when the inputs were torch
        (``device`` is then their torch device)."""
        convert = (lambda array: _torch.as_tensor(array, device)) if device is not None else (lambda array: array)
        if not plan.return_dict:
            return convert(sequences)
        per_step = lambda values: None if values is None else tuple(convert(step) for step in values)  # noqa: E731
        return GenerateDecoderOnlyOutput(
            sequences=convert(sequences), scores=per_step(self.scores), logits=per_step(self.logits),
            logprobs=None if self.logprobs is None else convert(self.logprobs))


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

    def __init__(self, model: "AudioCausalLM", batch_size: int = 1):
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
               feature_attention_mask: Any = None, **audio: Any) -> None:
        """Feeds more tokens; audio placeholders among them take the given clips in order.
        ``attention_mask`` rows must be left-padded. ``audio``: the audio fields of a family whose processor
        names them otherwise (Ultravox: ``audio_values``, ``audio_lens``, ``audio_token_start_idx``)."""
        ids, mask = _tokens(input_ids, attention_mask)
        self._core.append(ids, mask, *self._audio(input_features, feature_attention_mask, audio))

    def _audio(self, input_features: Any, feature_attention_mask: Any, audio: dict) -> tuple:
        if input_features is not None:
            audio["input_features"] = input_features
        if feature_attention_mask is not None:
            audio["feature_attention_mask"] = feature_attention_mask
        return self.model._session_audio(**audio)

    def generate(self, input_ids: Any = None, attention_mask: Any = None, input_features: Any = None,
                 feature_attention_mask: Any = None, *, streamer: Any = None, **generation: Any) -> Any:
        """Appends ``input_ids`` (when given), then generates. Returns only the new tokens,
        ``(batch, steps)`` int64; ``steps < max_new_tokens`` when every row finished (EOS, stop string).
        Takes the generation arguments of :meth:`Qwen2AudioForConditionalGeneration.generate`; with
        ``return_dict_in_generate=True`` an output whose ``sequences`` are the new tokens."""
        as_torch = _torch.is_tensor(input_ids)
        prompt = np.zeros((self.batch_size, 0), dtype=np.int64)
        audio = self.model._split_audio(generation)
        if input_ids is not None:
            prompt, mask = _tokens(input_ids, attention_mask)
            audio_arguments = self._audio(input_features, feature_attention_mask, audio)
            plan = self.model._plan(len(self) + prompt.shape[1], generation, prompt_rows=None)
            self._core.append(prompt, mask, *audio_arguments)
        elif input_features is not None or attention_mask is not None or audio:
            raise ValueError("attention_mask and audio inputs go with input_ids")
        else:
            plan = self.model._plan(len(self), generation, prompt_rows=None)
        if plan.stop_strings is not None:
            plan.prompt_rows = self.tokens
        result = self._run(plan, streamer, prompt=prompt, as_torch=as_torch)
        device = input_ids.device if as_torch else None
        return result.output(result.tokens, plan, device)

    def _run(self, plan: "_Plan", streamer: Any, prompt: np.ndarray, as_torch: bool = False) -> "_Result":
        adapter = None if streamer is None else _StreamerAdapter(streamer, as_torch)
        stop = plan.stop_matcher()
        callback = None
        if adapter is not None or stop is not None:
            def callback(tokens: np.ndarray) -> Optional[list[int]]:
                if adapter is not None:
                    adapter(tokens)
                return stop(tokens) if stop is not None else None
        try:
            if adapter is not None:
                adapter.start(prompt)
            result = self._core.generate(on_tokens=callback, **plan.options)
        finally:
            if adapter is not None:
                adapter.end()
        if isinstance(result, tuple):
            return _Result(*result)
        return _Result(result)

    def truncate(self, length: int) -> None:
        self._core.truncate(_integer(length, "length"))

    def reset(self) -> None:
        self._core.reset()

    def __repr__(self) -> str:
        return f"GenerationSession(batch_size={self.batch_size}, tokens={len(self)})"


def _auto_device(dtype: str, quantization: str) -> str:
    """device_map="auto": the GPU when this build's CUDA backend loads and finds one, and the settings can run
    there. Setting up the GPU log-mel front end (an FFT plan and small buffers) is the probe: it needs the
    backend library, the CUDA runtime and a device, which is what the model needs, without loading weights."""
    if dtype == "float32" or quantization != "none":
        return "cpu"  # float32 compute and quantized weights are CPU-only
    try:
        _core.DeviceWhisperLogMel(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                  device="cuda")
    except (_core.DeviceError, ValueError, AttributeError):
        return "cpu"
    return "cuda"


def _same_device(first: str, second: str) -> Optional[bool]:
    """Whether two device names mean the same device ("cuda" is "cuda:0"); None when one is not a device name."""
    def canonical(name: str) -> Optional[str]:
        name = {"cuda": "cuda:0"}.get(name, name)
        return name if name == "cpu" or (name.startswith("cuda:") and name[5:].isdigit()) else None
    first_name, second_name = canonical(first), canonical(second)
    if first_name is None or second_name is None:
        return None
    return first_name == second_name


class AudioCausalLM:
    """What generation, sessions, chat, annotation, evaluation and serving use of a model, whatever its family:
    generation settings resolved against generation_config.json, sessions over the engine's ``Session``, and
    three family rules (how the processor's audio fields reach the engine, where each clip's audio tokens sit in
    a prompt, and which clips a continued prompt still has to feed). Subclasses hold ``_core`` (an engine model),
    ``config`` (with ``text_config``) and ``generation_config``."""

    # The processor's audio fields this family's model takes beside input_ids and attention_mask.
    AUDIO_INPUTS: tuple = ()
    # Processor fields that describe the audio but are not model inputs (accepted and ignored).
    AUDIO_METADATA: tuple = ()

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

    def _session_audio(self, **audio: Any) -> tuple:
        """The engine Session.append's (features, feature_mask, audio_lens, audio_token_start_idx)."""
        raise NotImplementedError

    def audio_runs(self, input_ids: np.ndarray, inputs: dict) -> list:
        """Where each clip (or 30 s chunk) of one prompt sits: ``[(start, length, clip_array), ...]`` in the order
        of the processor's audio axis; ``input_ids`` is the prompt's 1-D ids."""
        raise NotImplementedError

    def clip_audio(self, inputs: dict, clips: Sequence[int], offset: int) -> dict:
        """The audio fields of ``clips`` alone, for a session fed the prompt from token ``offset`` on."""
        raise NotImplementedError

    def _split_audio(self, generation: dict) -> dict:
        """Takes the audio fields out of a generate call's keyword arguments."""
        audio = {name: generation.pop(name) for name in self.AUDIO_INPUTS if name in generation}
        for name in self.AUDIO_METADATA:
            generation.pop(name, None)
        return audio

    @property
    def num_threads(self) -> int:
        return self._core.num_threads

    @num_threads.setter
    def num_threads(self, count: int) -> None:
        self._core.num_threads = int(count)

    def start_session(self, batch_size: int = 1) -> GenerationSession:
        """A session that keeps its KV cache across calls (multi-turn chat)."""
        return GenerationSession(self, batch_size)

    def _generate_from(self, ids: np.ndarray, mask: Optional[np.ndarray], audio: tuple, plan: "_Plan",
                       streamer: Any, as_torch: bool, device: Any) -> Any:
        plan.prompt_rows = ids
        session = self.start_session(ids.shape[0])
        session._core.append(ids, mask, *audio)
        result = session._run(plan, streamer, prompt=ids, as_torch=as_torch)
        return result.output(np.concatenate([ids, result.tokens], axis=1), plan, device)

    def compute_transition_scores(self, sequences: Any, scores: Sequence[Any], beam_indices: Any = None,
                                  normalize_logits: bool = False) -> Any:
        """The score of each generated token at its step, ``(batch, steps)`` float32, as transformers':
        ``scores`` is ``generate(..., return_dict_in_generate=True, output_scores=True).scores`` (or
        ``.logits``); ``normalize_logits=True`` takes a log-softmax over the vocabulary first, turning raw
        logits into log-probabilities. Torch in, torch out. (For log-probabilities alone,
        ``output_logprobs=True`` is cheaper: nothing per step leaves the engine.)"""
        if beam_indices is not None:
            raise ValueError("beam_indices: beam search is not supported, so there are none to give")
        normalize_logits = _flag(normalize_logits, "normalize_logits")
        if not isinstance(scores, (list, tuple)) or not scores:
            raise ValueError("scores must be the non-empty tuple of per-step (batch, vocab) arrays that generate "
                             "returned with output_scores=True or output_logits=True")
        as_torch = _torch.is_tensor(sequences)
        device = sequences.device if as_torch else None
        steps = np.stack([np.asarray(_torch.to_numpy(step), dtype=np.float32) for step in scores])
        if steps.ndim != 3:
            raise ValueError(f"each entry of scores must be (batch, vocab), got {steps.shape[1:]}")
        chosen = _token_ids(sequences, "sequences")
        if chosen.shape[0] != steps.shape[1] or chosen.shape[1] < steps.shape[0]:
            raise ValueError(f"sequences {chosen.shape} do not match scores of {steps.shape[0]} steps for "
                             f"{steps.shape[1]} rows")
        if normalize_logits:
            with np.errstate(invalid="ignore", over="ignore"):
                largest = steps.max(axis=-1, keepdims=True)
                shifted = steps.astype(np.float64) - largest
                steps = (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)
        tokens = chosen[:, chosen.shape[1] - steps.shape[0]:]
        if tokens.size and (tokens.min() < 0 or tokens.max() >= steps.shape[2]):
            raise ValueError("sequences hold ids outside the vocabulary of scores")
        transition = np.take_along_axis(steps.transpose(1, 0, 2), tokens[:, :, None], axis=2)[:, :, 0]
        return _torch.as_tensor(transition, device) if as_torch else transition

    def _resolve_generation_config(self, passed: Any) -> GenerationConfig:
        if passed is None:
            return self.generation_config
        if not isinstance(passed, GenerationConfig):
            raise TypeError(f"generation_config must be a qwen2audio.GenerationConfig, got {type(passed).__name__}")
        # transformers: what the given config leaves at the global defaults, the model's own config decides.
        defaults = generation_defaults().to_dict()
        merged = passed.to_dict()
        for key, value in self.generation_config.to_dict().items():
            if key in defaults and merged.get(key, defaults[key]) == defaults[key] and value != defaults[key]:
                merged[key] = value
        return GenerationConfig(merged)

    def _plan(self, length: int, generation: dict, prompt_rows: Optional[np.ndarray] = None) -> _Plan:
        """Resolves a generate call's arguments against the generation config; ValueError names a bad one."""
        unknown = sorted(set(generation) - _GENERATION_ARGUMENTS)
        if unknown:
            raise TypeError(f"generate() got unexpected keyword argument(s): {', '.join(unknown)}")
        generation = {key: value for key, value in generation.items() if value is not None}
        config = self._resolve_generation_config(generation.pop("generation_config", None))

        def setting(name: str, default: Any = None) -> Any:
            return generation[name] if name in generation else getattr(config, name, default)

        num_beams = setting("num_beams", 1)
        if num_beams is not None and not (isinstance(num_beams, (int, np.integer)) and num_beams == 1):
            raise ValueError(f"beam search is not supported (num_beams={num_beams!r}): use num_beams=1 for greedy "
                             "decoding or do_sample=True for sampling")
        _flag(setting("use_cache", True), "use_cache")
        max_new_tokens, max_length = generation.get("max_new_tokens"), generation.get("max_length")
        if max_new_tokens is None:
            if max_length is None:
                max_new_tokens = config.max_new_tokens
                max_length = config.max_length if max_new_tokens is None else None
            if max_new_tokens is None:
                if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
                    raise ValueError(f"max_length must be an integer, got {max_length!r}")
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
        min_new_tokens = _integer(setting("min_new_tokens") or 0, "min_new_tokens", 0)
        min_length = _integer(setting("min_length") or 0, "min_length", 0)
        min_new_tokens = max(min_new_tokens, min_length - length)
        eos = _eos_list(setting("eos_token_id"))
        vocab = self.config.text_config.vocab_size
        for token in eos:
            if not 0 <= token < vocab:
                raise ValueError(f"eos_token_id {token} is outside the vocabulary [0, {vocab})")
        pad_token_id = generation.get("pad_token_id")
        if pad_token_id is None:
            pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
        seed = generation.get("seed")
        if seed is not None:
            seed = _integer(seed, "seed", 0, 2**64)
        stop_strings = _stop_strings(setting("stop_strings"))
        tokenizer = _stop_tokenizer(generation.get("tokenizer")) if stop_strings is not None else None
        return_dict = _flag(setting("return_dict_in_generate", False), "return_dict_in_generate")
        outputs = {name: _flag(setting(name, False), name) for name in _OUTPUT_FLAGS}
        if not return_dict and any(outputs.values()):
            asked = ", ".join(f"{name}=True" for name, value in outputs.items() if value)
            warnings.warn(f"{asked} has no effect without return_dict_in_generate=True: only the sequences are "
                          "returned (as in transformers)", UserWarning, stacklevel=3)
        options = dict(
            max_new_tokens=int(max_new_tokens),
            min_new_tokens=int(min_new_tokens),
            do_sample=_flag(setting("do_sample", False), "do_sample"),
            temperature=_real(setting("temperature", 1.0), "temperature"),
            top_k=_integer(setting("top_k", 0), "top_k"),
            top_p=_real(setting("top_p", 1.0), "top_p"),
            repetition_penalty=_real(setting("repetition_penalty", 1.0), "repetition_penalty"),
            seed=seed,
            eos_token_ids=eos,
            pad_token_id=_integer(pad_token_id, "pad_token_id", 0, vocab),
            **{name: return_dict and value for name, value in outputs.items()},
        )
        return _Plan(options=options, return_dict=return_dict, eos=eos, stop_strings=stop_strings,
                     tokenizer=tokenizer, prompt_rows=prompt_rows)

    def _generation_options(self, length: int, **generation: Any) -> dict:
        """The engine's options for a generate call on ``length`` tokens (what :meth:`_plan` resolves)."""
        return self._plan(length, generation).options

    def chat(self, processor: Any, conversation: Sequence[dict], stream: bool = False,
             long_audio: str = "truncate", **generation: Any) -> Union[str, Iterator[str]]:
        """Answer the last turn of ``conversation`` (HF's message format, audio inline as paths or
        16 kHz arrays): the reply text, or with ``stream=True`` an iterator of text pieces.

        Takes :meth:`generate`'s generation arguments. When neither the call (``max_new_tokens``,
        ``max_length``, ``generation_config``) nor the model's generation_config.json sets a length, the
        reply gets up to ``CHAT_MAX_NEW_TOKENS`` (256) new tokens, as the CLI: transformers' default
        ``max_length`` of 20 counts the prompt, which any audio alone exceeds. ``stop_strings`` use the
        processor's tokenizer unless ``tokenizer=`` is given.

        The model keeps the KV cache of its last chat, so a follow-up call with the same conversation
        plus new turns only prefills the new tokens.
        """
        from .chat import chat

        if generation.get("max_new_tokens") is None and generation.get("max_length") is None:
            config = self._resolve_generation_config(generation.get("generation_config"))
            if config.max_new_tokens is None:
                generation["max_new_tokens"] = CHAT_MAX_NEW_TOKENS
        if generation.get("stop_strings") is not None and generation.get("tokenizer") is None:
            generation["tokenizer"] = getattr(processor, "tokenizer", processor)
        return chat(self, processor, conversation, stream=stream, long_audio=long_audio, **generation)


class Qwen2AudioForConditionalGeneration(AudioCausalLM):
    """Qwen2-Audio: Whisper-style audio encoder, projector and Qwen2 decoder, in C++.

    >>> model = Qwen2AudioForConditionalGeneration.from_pretrained("Qwen2-Audio-7B-Instruct")
    >>> inputs = processor(text=prompt, audios=[audio], sampling_rate=16000, return_tensors="np")
    >>> ids = model.generate(**inputs, max_new_tokens=64)

    transformers' habits work too: ``from_pretrained(..., torch_dtype=, device_map=)``, ``.to()``, ``.eval()``,
    ``num_parameters()``, ``get_input_embeddings()``, torch tensors in and out, streamers, and generate's
    ``min_new_tokens``, ``stop_strings``, ``generation_config`` and ``return_dict_in_generate`` outputs.
    """

    def __init__(self, core: "_core.Model", name_or_path: str):
        self._core = core
        self.name_or_path = name_or_path
        self.config = Qwen2AudioConfig._from_resolved(json.loads(core.config_json))
        folder = name_or_path if os.path.isdir(name_or_path) else os.path.dirname(name_or_path)
        self.generation_config = GenerationConfig._for_model(json.loads(core.generation_config_json), folder)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], dtype: Any = None,
                        num_threads: Optional[int] = None, quantization: Optional[str] = None,
                        quantization_group_size: Optional[int] = None, kv_cache_dtype: str = "auto",
                        device: Any = None, *, torch_dtype: Any = None, device_map: Any = None,
                        trust_remote_code: Optional[bool] = None, low_cpu_mem_usage: Optional[bool] = None,
                        attn_implementation: Optional[str] = None) -> "Qwen2AudioForConditionalGeneration":
        """Loads a checkpoint folder as published on the Hub (config.json, safetensors). A Hub id that is not
        a local folder is refused with the command that downloads it: this package never downloads.

        ``dtype``: ``"auto"`` (the default: as stored; BF16 weights compute in bfloat16, used in place from
        the memory map; F32 in float32), ``"bfloat16"`` or ``"float32"`` (converted at load).
        ``torch_dtype`` (transformers' name) is the same setting and also takes ``torch.bfloat16`` /
        ``torch.float32``; float16 is not supported (use bfloat16). ``num_threads``: OpenMP threads of this
        model (default: OMP_NUM_THREADS, else one per physical core).

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

        ``device_map`` (transformers' name): ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a GPU index or a
        torch.device, as ``device``; or ``"auto"``: ``"cuda"`` when the CUDA backend loads and finds a GPU
        and the other settings can run there (not float32, not quantized), else ``"cpu"``. The model is never
        split over devices: a dict ``device_map`` is refused. ``trust_remote_code``, ``low_cpu_mem_usage``
        and ``attn_implementation`` are accepted for transformers code and change nothing (no remote code
        runs; loading is memory-mapped; attention is the engine's own).
        """
        _files.refuse_hub_id(pretrained_model_name_or_path, _core.CheckpointError)
        key = cls._dtype_key(dtype, torch_dtype)
        if attn_implementation not in (None, "eager", "sdpa", "flash_attention_2"):
            raise ValueError(f"attn_implementation must be 'eager', 'sdpa' or 'flash_attention_2' (all run the "
                             f"engine's attention), got {attn_implementation!r}")
        kv_key = str(kv_cache_dtype).replace("torch.", "")
        if kv_key not in _DTYPES:
            raise ValueError(f"kv_cache_dtype must be 'auto', 'float32' or 'bfloat16', got {kv_cache_dtype!r}")
        if num_threads is not None and (not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        from .quantization import check_quantization_arguments

        quantization, group_size = check_quantization_arguments(quantization, quantization_group_size)
        device = cls._load_device(device, device_map, _DTYPES[key], quantization)
        path = os.fspath(pretrained_model_name_or_path)
        core = _core.Model.load(path, _DTYPES[key], int(num_threads or 0), quantization=quantization,
                                quantization_group_size=group_size, kv_cache_dtype=_DTYPES[kv_key],
                                device=device)
        return cls(core, path)

    @staticmethod
    def _dtype_key(dtype: Any, torch_dtype: Any) -> str:
        keys = {}
        for name, value in (("dtype", dtype), ("torch_dtype", torch_dtype)):
            if value is None:
                continue
            key = str(value).replace("torch.", "")
            if key not in _DTYPES:
                hint = " (float16 is not supported: use bfloat16)" if key in ("float16", "half", "fp16") else ""
                raise ValueError(f"{name} must be 'auto', 'float32' or 'bfloat16' (or torch.float32 / "
                                 f"torch.bfloat16), got {value!r}{hint}")
            keys[name] = _DTYPES[key]
        chosen = set(keys.values()) - {"auto"}  # "auto" defers to a specific dtype given beside it
        if len(chosen) > 1:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree: give one of them")
        return next(iter(chosen), "auto")

    @staticmethod
    def _load_device(device: Any, device_map: Any, dtype: str, quantization: str) -> str:
        if isinstance(device_map, dict):
            raise ValueError("device_map as a dict (layers placed on several devices) is not supported: the model "
                             "runs whole on one device; pass device_map='auto', 'cpu' or 'cuda'")
        if device_map is not None:
            if device_map == "auto":
                mapped = _auto_device(dtype, quantization)
            elif isinstance(device_map, (int, np.integer)) and not isinstance(device_map, bool):
                mapped = f"cuda:{int(device_map)}"
            elif isinstance(device_map, str) or _torch.is_device(device_map):
                mapped = str(device_map)
                if mapped in ("balanced", "balanced_low_0", "sequential"):
                    raise ValueError(f"device_map={device_map!r} spreads a model over several GPUs, which this "
                                     "engine does not do: pass device_map='auto', 'cpu' or 'cuda'")
                if _same_device(mapped, mapped) is None:
                    raise ValueError(f"device_map must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device_map!r}")
            else:
                raise ValueError(f"device_map must be 'auto', 'cpu', 'cuda', 'cuda:N', a GPU index or a "
                                 f"torch.device, got {device_map!r}")
            if device is not None and _same_device(str(device), mapped) is False:
                raise ValueError(f"device={device!r} and device_map={device_map!r} disagree: give one of them")
            return mapped
        return "cpu" if device is None else str(device)  # str(): torch.device("cuda:0") and the like

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

    # --- transformers' nn.Module habits ---

    def to(self, *args: Any, **kwargs: Any) -> "Qwen2AudioForConditionalGeneration":
        """Returns this model when asked for the device and dtype it already has (``model.to("cpu")`` on a CPU
        model, ``model.to(torch.bfloat16)`` on a bfloat16 one). A loaded model cannot move or convert: for
        another device or dtype this raises ValueError saying what to pass to :meth:`from_pretrained`
        (``device_map="cuda"``, ``torch_dtype=...``)."""
        unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy"}
        if unknown:
            raise TypeError(f"to() got unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        for value in (*args, kwargs.get("device"), kwargs.get("dtype")):
            if value is None:
                continue
            name = f"cuda:{int(value)}" if isinstance(value, (int, np.integer)) and not isinstance(value, bool) \
                else str(value)
            same = _same_device(name, self.device)
            if same is True:
                continue
            if same is False:
                raise ValueError(
                    f"model.to({name!r}): this model was loaded on {self.device!r}, and a loaded model cannot move. "
                    f"Load it there instead: from_pretrained(path, device_map={name!r}) (or device={name!r})")
            key = name.replace("torch.", "")
            if key in _DTYPES and key != "auto":
                if _DTYPES[key] == self.dtype:
                    continue
                raise ValueError(f"model.to({name}): this model computes in {self.dtype}, and a loaded model cannot "
                                 f"convert. Load it so instead: from_pretrained(path, torch_dtype={_DTYPES[key]!r})")
            raise ValueError(f"model.to() takes a device ('cpu', 'cuda', ...) or a dtype, got {value!r}")
        return self

    def cpu(self) -> "Qwen2AudioForConditionalGeneration":
        return self.to("cpu")

    def cuda(self, device: Any = None) -> "Qwen2AudioForConditionalGeneration":
        return self.to("cuda" if device is None else device)

    def eval(self) -> "Qwen2AudioForConditionalGeneration":
        """Returns this model: it is always in inference mode (no dropout, no gradients)."""
        return self

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters in the checkpoint's tensors, as transformers counts them: each tensor once (tied
        weights are stored once); ``exclude_embeddings=True`` leaves out the embedding tables (the language
        model's ``embed_tokens`` and the audio encoder's ``embed_positions``). Quantized weights count one
        parameter per weight, whatever their packing; their scales are not parameters. ``only_trainable`` is
        accepted for transformers code: every parameter counts (nothing is frozen)."""
        from .checkpoint import Checkpoint

        checkpoint = Checkpoint(self.name_or_path)
        total = 0
        for name in checkpoint.tensor_names():
            if exclude_embeddings and name.endswith(("embed_tokens.weight", "embed_positions.weight")):
                continue
            if name.endswith(".scales") and name[: -len(".scales")] + ".qweight" in checkpoint:
                continue
            count = int(np.prod(checkpoint.shape(name), dtype=np.int64))
            if name.endswith(".qweight") and checkpoint.dtype(name) == "U8":
                count *= 2  # int4: two weights per byte
            total += count
        return total

    def get_input_embeddings(self) -> InputEmbeddings:
        """The token embedding table as a callable: ``model.get_input_embeddings()(ids)`` gives ``(*ids.shape,
        hidden_size)`` float32 rows (torch when given torch). See :class:`InputEmbeddings`."""
        return InputEmbeddings(self)

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

    # --- the family rules generation and serving use (see AudioCausalLM) ---

    AUDIO_INPUTS = ("input_features", "feature_attention_mask")

    def _session_audio(self, input_features: Any = None, feature_attention_mask: Any = None, **other: Any) -> tuple:
        if other:
            raise TypeError(f"Qwen2-Audio takes input_features and feature_attention_mask, not {sorted(other)}")
        return (*_audio(input_features, feature_attention_mask), None, None)

    def audio_runs(self, input_ids: np.ndarray, inputs: dict) -> list:
        # Each clip's audio tokens are one run of <|AUDIO|> ids; consecutive clips are always separated by
        # <|audio_eos|><|audio_bos|>, so runs and clips correspond one to one.
        features = inputs.get("input_features")
        positions = np.flatnonzero(np.asarray(input_ids) == self.config.audio_token_index)
        runs = []
        if positions.size:
            breaks = np.flatnonzero(np.diff(positions) != 1) + 1
            for clip, group in enumerate(np.split(positions, breaks)):
                clip_features = features[clip] if features is not None and clip < len(features) else None
                runs.append((int(group[0]), int(group.size), clip_features))
        return runs

    def clip_audio(self, inputs: dict, clips: Sequence[int], offset: int) -> dict:
        if not clips:
            return {}
        clips = list(clips)
        return {"input_features": np.asarray(inputs["input_features"])[clips],
                "feature_attention_mask": np.asarray(inputs["feature_attention_mask"])[clips]}

    def forward(self, input_ids: Any = None, attention_mask: Any = None, input_features: Any = None,
                feature_attention_mask: Any = None) -> CausalLMOutput:
        """Logits of every position, ``(batch, sequence, vocab)`` float32, as transformers'
        forward (positions 0..sequence-1 in every row); a torch tensor when ``input_ids`` is one."""
        ids, mask = _tokens(input_ids, attention_mask)
        features, feature_mask = _audio(input_features, feature_attention_mask)
        logits = self._core.forward(ids, mask, features, feature_mask)
        if _torch.is_tensor(input_ids):
            logits = _torch.as_tensor(logits, input_ids.device)
        return CausalLMOutput(logits=logits)

    __call__ = forward

    # --- generation ---

    def generate(self, input_ids: Any = None, attention_mask: Any = None, input_features: Any = None,
                 feature_attention_mask: Any = None, *, max_new_tokens: Optional[int] = None,
                 max_length: Optional[int] = None, min_new_tokens: Optional[int] = None,
                 min_length: Optional[int] = None, do_sample: Optional[bool] = None,
                 temperature: Optional[float] = None, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                 eos_token_id: Union[None, int, Sequence[int]] = None, pad_token_id: Optional[int] = None,
                 num_beams: Optional[int] = None, stop_strings: Union[None, str, Sequence[str]] = None,
                 tokenizer: Any = None, generation_config: Optional[GenerationConfig] = None, streamer: Any = None,
                 return_dict_in_generate: Optional[bool] = None, output_scores: Optional[bool] = None,
                 output_logits: Optional[bool] = None, output_logprobs: Optional[bool] = None,
                 use_cache: Optional[bool] = None) -> Any:
        """Prompt plus new tokens, ``(batch, sequence + steps)`` int64, as transformers' generate (a torch
        tensor, on the inputs' device, when ``input_ids`` is one; NumPy otherwise).

        Unset arguments come from ``generation_config`` (the argument, else the model's; see
        :class:`GenerationConfig`). Batches are left-padded (``attention_mask`` 0 on the left). Rows that
        finished continue with ``pad_token_id`` until all have; ``eos_token_id=[]`` never stops early.
        ``seed`` makes sampling reproducible. Greedy or sampling only: ``num_beams`` must be 1.

        ``min_new_tokens`` / ``min_length``: EOS tokens are kept out until that many new tokens / that total
        length (transformers' MinNewTokensLength and MinLength processors). ``stop_strings``: a row finishes
        once its text contains one of them, completed by its latest token (transformers' semantics; needs
        ``tokenizer=processor.tokenizer``). ``streamer``: an object with ``put``/``end`` (:class:`TextStreamer`,
        :class:`TextIteratorStreamer`, transformers' own: ``put`` gets the prompt first, then each step's
        tokens) or a callable receiving each step's tokens ``(batch,)``.

        ``return_dict_in_generate=True`` returns a :class:`GenerateDecoderOnlyOutput` whose ``scores``
        (``output_scores=True``), ``logits`` (``output_logits=True``) and ``logprobs`` (``output_logprobs=True``,
        per chosen token, computed in the engine) are filled as asked; without it only the sequences come
        back. ``use_cache`` is accepted and changes nothing (the engine always keeps a KV cache).
        """
        as_torch = _torch.is_tensor(input_ids)
        ids, mask = _tokens(input_ids, attention_mask)
        audio = self._session_audio(input_features=input_features, feature_attention_mask=feature_attention_mask)
        plan = self._plan(ids.shape[1], dict(
            max_new_tokens=max_new_tokens, max_length=max_length, min_new_tokens=min_new_tokens,
            min_length=min_length, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, seed=seed, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            num_beams=num_beams, stop_strings=stop_strings, tokenizer=tokenizer, generation_config=generation_config,
            return_dict_in_generate=return_dict_in_generate, output_scores=output_scores,
            output_logits=output_logits, output_logprobs=output_logprobs, use_cache=use_cache))
        return self._generate_from(ids, mask, audio, plan, streamer, as_torch,
                                   input_ids.device if as_torch else None)

    def __repr__(self) -> str:
        return (f"Qwen2AudioForConditionalGeneration({self.name_or_path!r}, dtype={self.dtype}, "
                f"num_threads={self.num_threads}, device={self.device!r})")
