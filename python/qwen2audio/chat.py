"""Multi-turn chat that keeps the KV cache of earlier turns.

``model.chat(processor, conversation)`` takes the whole conversation each call, as transformers users
write it, yet only prefills what is new: the model keeps the session of its last chat, and a call
reuses the longest prefix of tokens (and audio clips) it shares with that session.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

@dataclass
class _AudioRun:
    start: int  # position of the clip's first audio token
    length: int
    fingerprint: bytes


@dataclass
class ChatCache:
    """The session of a model's last chat: its tokens and where each audio clip sits among them."""

    session: Any
    audio_runs: list[_AudioRun] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _StopStreaming(Exception):
    """Raised inside the generation callback to end generation when the reader stops reading."""


def _audio_runs(model: Any, ids: np.ndarray, inputs: dict[str, Any]) -> list[_AudioRun]:
    """Each clip's span among the prompt's tokens (the model's family says where its audio tokens sit) and a
    fingerprint of its features: equal tokens do not mean equal audio."""
    runs: list[_AudioRun] = []
    for start, length, clip in model.audio_runs(ids, inputs):
        fingerprint = b""
        if clip is not None:
            fingerprint = hashlib.blake2b(np.ascontiguousarray(clip).tobytes(), digest_size=16).digest()
        runs.append(_AudioRun(int(start), int(length), fingerprint))
    return runs


def _reusable_prefix(cache: ChatCache, ids: np.ndarray, runs: list[_AudioRun]) -> int:
    cached = cache.session.tokens[0]
    limit = min(len(cached), len(ids) - 1)  # at least one token must be fed to get the next logits
    mismatch = np.flatnonzero(cached[:limit] != ids[:limit])
    prefix = int(mismatch[0]) if mismatch.size else limit
    # Equal audio tokens do not mean equal audio: stop before the first clip that differs, and never
    # inside a clip's run.
    for old, new in zip(cache.audio_runs, runs):
        if old.start >= prefix:
            break
        if (old.start, old.length, old.fingerprint) != (new.start, new.length, new.fingerprint) or \
                old.start + old.length > prefix:
            prefix = min(prefix, old.start, new.start)
            break
    return prefix


def _prepare(model: Any, processor: Any, conversation: Sequence[dict[str, Any]], long_audio: str
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """The conversation's prompt ids (1-D) and the processor's audio fields, rendered by the processor's own
    chat template and placeholder rules."""
    inputs = processor.apply_chat_template(list(conversation), add_generation_prompt=True, tokenize=True,
                                           return_dict=True, return_tensors="np", long_audio=long_audio,
                                           sampling_rate=processor.feature_extractor.sampling_rate)
    ids = np.asarray(inputs["input_ids"], dtype=np.int64)
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError("chat takes one conversation (a list of messages), not a batch")
    audio = {key: np.asarray(value) for key, value in inputs.items() if key not in ("input_ids", "attention_mask")}
    return ids[0], audio


def chat(model: Any, processor: Any, conversation: Sequence[dict[str, Any]], stream: bool = False,
         long_audio: str = "truncate", stats: dict[str, Any] | None = None, **generation: Any
         ) -> str | Iterator[str]:
    """Answer the last turn of ``conversation`` (HF message format, audio inline). Returns the reply
    text, or with ``stream=True`` an iterator of text pieces as they are generated (the work starts when
    the iteration does)."""
    if stream:
        return _stream(model, processor, conversation, long_audio, generation, stats)
    cache = _begin(model, processor, conversation, long_audio, stats)
    try:
        started = time.perf_counter()
        new_tokens = cache.session.generate(**generation)[0]
        if stats is not None:
            stats.update(new_tokens=int(new_tokens.size), seconds=time.perf_counter() - started)
        return processor.decode(_strip_eos(model, new_tokens, generation), skip_special_tokens=True)
    finally:
        cache.lock.release()


def _begin(model: Any, processor: Any, conversation: Sequence[dict[str, Any]], long_audio: str,
           stats: dict[str, Any] | None) -> ChatCache:
    """Feeds the part of the conversation the model's chat session does not hold yet. Returns the
    cache with its lock held."""
    ids, audio = _prepare(model, processor, conversation, long_audio)
    runs = _audio_runs(model, ids, audio)

    cache: ChatCache | None = getattr(model, "_chat_cache", None)
    if cache is None:
        cache = ChatCache(model.start_session())
        model._chat_cache = cache
    # A chat already running on this model (another thread) keeps its session; this one gets its own.
    if not cache.lock.acquire(blocking=False):
        cache = ChatCache(model.start_session())
        cache.lock.acquire()
    try:
        prefix = _reusable_prefix(cache, ids, runs)
        cache.session.truncate(prefix)
        new_clips = [index for index, run in enumerate(runs) if run.start >= prefix]
        cache.audio_runs = []  # until the append succeeds, nothing of this call is trusted
        cache.session.append(ids[None, prefix:], None, **model.clip_audio(audio, new_clips, prefix))
        cache.audio_runs = runs
        if stats is not None:
            stats.update(prompt_tokens=int(len(ids)), reused_tokens=prefix, prefill_tokens=int(len(ids) - prefix))
    except BaseException:
        cache.session.reset()
        cache.lock.release()
        raise
    return cache


def _eos_ids(model: Any, generation: dict[str, Any]) -> list[int]:
    eos = generation.get("eos_token_id")
    if eos is None:
        eos = model.generation_config.eos_token_id or []
    return [eos] if isinstance(eos, (int, np.integer)) else list(eos)


def _strip_eos(model: Any, tokens: np.ndarray, generation: dict[str, Any]) -> np.ndarray:
    eos = _eos_ids(model, generation)
    for index, token in enumerate(tokens.tolist()):
        if token in eos:
            return tokens[:index]
    return tokens


def _stream(model: Any, processor: Any, conversation: Sequence[dict[str, Any]], long_audio: str,
            generation: dict[str, Any], stats: dict[str, Any] | None) -> Iterator[str]:
    cache = _begin(model, processor, conversation, long_audio, stats)
    tokens: "queue.Queue[object]" = queue.Queue()
    stop = threading.Event()
    finished = object()
    failure: list[BaseException] = []

    def on_tokens(step: np.ndarray) -> None:
        if stop.is_set():
            raise _StopStreaming()
        tokens.put(int(step[0]))

    def worker() -> None:
        try:
            cache.session.generate(streamer=on_tokens, **generation)
        except _StopStreaming:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the reader
            failure.append(error)
        finally:
            tokens.put(finished)

    eos = set(_eos_ids(model, generation))
    started = time.perf_counter()
    thread = threading.Thread(target=worker, name="qwen2audio-chat", daemon=True)
    count = 0
    try:
        decoder = processor.tokenizer.incremental_decoder(skip_special_tokens=True)
        thread.start()
        ended = False
        while True:
            try:
                item = tokens.get(timeout=0.1)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if item is finished:
                break
            count += 1
            if ended or item in eos:
                ended = True
                continue
            piece = decoder.add(item)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail
        if failure:
            raise failure[0]
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        if stats is not None:
            stats.update(new_tokens=count, seconds=time.perf_counter() - started)
        cache.lock.release()


class ChatSession:
    """A conversation held for you: ``send``/``stream`` one user turn (text and/or audio files or
    arrays) at a time; earlier turns stay in the KV cache. Used by the CLI and the demo."""

    def __init__(self, model: Any, processor: Any, system_prompt: str | None = None,
                 generation_kwargs: dict[str, Any] | None = None, long_audio: str = "truncate"):
        self.model = model
        self.processor = processor
        self.system_prompt = system_prompt
        self.generation_kwargs = dict(generation_kwargs or {})
        self.long_audio = long_audio
        self.messages: list[dict[str, Any]] = []
        self.last_stats: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []

    def _user_message(self, text: str | None, audio: Sequence[Any]) -> dict[str, Any]:
        if not text and not audio:
            raise ValueError("a turn needs text, audio, or both")
        content: list[dict[str, Any]] = [{"type": "audio", "audio": clip} for clip in audio]
        if text:
            content.append({"type": "text", "text": text})
        return {"role": "user", "content": content}

    def stream(self, text: str | None = None, audio: Sequence[Any] = (), **generation: Any) -> Iterator[str]:
        message = self._user_message(text, list(audio))
        self.last_stats = {}
        pieces: list[str] = []
        options = {**self.generation_kwargs, **generation}
        iterator = chat(self.model, self.processor, self.messages + [message], stream=True,
                        long_audio=self.long_audio, stats=self.last_stats, **options)
        for piece in iterator:
            pieces.append(piece)
            yield piece
        self.messages += [message, {"role": "assistant", "content": "".join(pieces)}]

    def send(self, text: str | None = None, audio: Sequence[Any] = (), **generation: Any) -> str:
        return "".join(self.stream(text, audio, **generation))
