"""The serving engine behind ``qwen2audio serve``: one scheduler thread owns the model and decodes every
running request together (continuous batching on ``_core.DecodeBatch``).

A request is prefilled alone (reusing the KV cache of an earlier conversation it extends), then joins
the running batch at the next step boundary; finished requests leave at once and their slot takes the
next waiting request. Text is detokenized and matched against stop strings here, so what reaches the
web layer is ready to send.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from .chat import ChatCache, _audio_runs, _reusable_prefix
from .modeling import GenerationSession

logger = logging.getLogger("qwen2audio.serve")


class EngineBusy(Exception):
    """Every slot is taken and the waiting queue is full."""


class EngineStopped(Exception):
    """The engine was shut down before the request finished."""


@dataclass
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # an extension (as vLLM's): benchmarks decode a fixed number of tokens


@dataclass
class Prompt:
    ids: np.ndarray  # 1-D int64
    # The processor's audio fields for these ids (per family: Qwen2-Audio's input_features and
    # feature_attention_mask, Ultravox's audio_values, audio_lens, audio_token_start_idx, ...).
    audio: dict = field(default_factory=dict)


class Request:
    """One generation. ``on_event`` receives, from the scheduler thread: ``("text", piece)`` any number
    of times, then exactly one of ``("done", finish_reason)`` or ``("error", exception)``."""

    def __init__(self, prompt: Prompt, params: SamplingParams, on_event: Callable[[tuple], None]):
        self.prompt = prompt
        self.params = params
        self.on_event = on_event
        self.cancelled = threading.Event()
        self.prompt_tokens = int(prompt.ids.size)
        self.completion_tokens = 0
        self.reused_tokens = 0
        self.joined_running_batch = False
        # Scheduler-side state.
        self._slot = -1
        self._decoder: Any = None
        self._text = ""
        self._sent = 0
        self._session: Optional[ChatCache] = None

    def cancel(self) -> None:
        """The client went away: the scheduler frees the slot at the next step boundary."""
        self.cancelled.set()


class Engine:
    """Owns the model on a scheduler thread. ``submit`` is thread-safe."""

    def __init__(self, model: Any, processor: Any, max_batch: int = 8, context_length: int = 4096,
                 max_queue: int = 32, kv_cache_entries: int = 8):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.processor = processor
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.context_length = context_length
        self.kv_cache_entries = kv_cache_entries
        self._batch = _core.DecodeBatch(model._core, max_batch, context_length)
        eos = model.generation_config.eos_token_id
        self._eos = [] if eos is None else ([int(eos)] if isinstance(eos, (int, np.integer)) else [int(e) for e in eos])
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: dict[int, Request] = {}
        self._sessions: collections.OrderedDict[int, ChatCache] = collections.OrderedDict()
        self._session_keys = 0
        self._wake = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self.stats = {"requests": 0, "finished": 0, "cancelled": 0, "failed": 0, "rejected": 0, "steps": 0,
                      "joined_running_batch": 0, "max_running": 0, "prompt_tokens": 0, "reused_tokens": 0,
                      "generated_tokens": 0}
        self._thread = threading.Thread(target=self._run, name="qwen2audio-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ public
    def submit(self, request: Request) -> None:
        with self._wake:
            if self._stopping:
                raise EngineStopped("the server is shutting down")
            # Counted from submission to the last event, so a request being prefilled (neither waiting
            # nor running) still holds its place.
            if self._in_flight >= self.max_batch + self.max_queue:
                self.stats["rejected"] += 1
                raise EngineBusy(f"{self.max_batch} requests are running and {len(self._waiting)} waiting")
            self.stats["requests"] += 1
            self._in_flight += 1
            self._waiting.append(request)
            self._wake.notify()

    def snapshot(self) -> dict[str, Any]:
        with self._wake:
            return {**self.stats, "running": len(self._running), "waiting": len(self._waiting),
                    "in_flight": self._in_flight,
                    "slots": self.max_batch, "cached_conversations": len(self._sessions)}

    def shutdown(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------------------ scheduler
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self._running:
                    self._wake.wait()
                if self._stopping:
                    break
                admit: list[Request] = []
                free = self.max_batch - len(self._running)
                while self._waiting and len(admit) < free:
                    admit.append(self._waiting.popleft())
            for request in admit:
                try:
                    self._admit(request)
                except Exception as error:  # noqa: BLE001 - ends this request, never the scheduler
                    logger.exception("admitting a request")
                    if request._slot in self._running:
                        self._end(request._slot, error=error)
            self._drop_cancelled()
            if self._batch.stepping:
                try:
                    tokens = self._batch.step()
                except Exception as error:  # noqa: BLE001 - every running request learns why
                    logger.exception("decode step failed")
                    for slot in list(self._running):
                        self._end(slot, error=error)
                    continue
                with self._wake:
                    self.stats["steps"] += 1
                for slot, token, finished in tokens:
                    request = self._running.get(slot)
                    if request is None:
                        continue
                    try:
                        self._on_token(request, token, finished)
                    except Exception as error:  # noqa: BLE001 - ends this request, never the scheduler
                        logger.exception("handling a token of slot %d", slot)
                        if slot in self._running:
                            self._end(slot, error=error)
        error = EngineStopped("the server is shutting down")
        for slot in list(self._running):
            self._end(slot, error=error)
        with self._wake:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for request in waiting:
            self._close(request, ("error", error))

    def _admit(self, request: Request) -> None:
        if request.cancelled.is_set():
            with self._wake:
                self.stats["cancelled"] += 1
            self._close(request, ("done", "cancelled"))
            return
        try:
            cache = self._prefill(request)
            params = request.params
            sampling = params.temperature > 0
            seed = params.seed if params.seed is not None else int(np.random.default_rng().integers(0, 2**63))
            slot = self._batch.admit(cache.session._core, params.max_tokens, do_sample=sampling,
                                     temperature=params.temperature if sampling else 1.0,
                                     top_p=params.top_p if sampling else 1.0,
                                     repetition_penalty=params.repetition_penalty, seed=seed,
                                     eos_token_ids=[] if params.ignore_eos else self._eos)
        except Exception as error:  # noqa: BLE001 - reported to this request only
            with self._wake:
                self.stats["failed"] += 1
            self._close(request, ("error", error))
            return
        request._slot = slot
        request._session = cache
        request._decoder = self.processor.tokenizer.incremental_decoder(skip_special_tokens=True)
        request.joined_running_batch = bool(self._running)
        self._running[slot] = request
        with self._wake:
            self.stats["prompt_tokens"] += request.prompt_tokens
            self.stats["reused_tokens"] += request.reused_tokens
            if request.joined_running_batch:
                self.stats["joined_running_batch"] += 1
            self.stats["max_running"] = max(self.stats["max_running"], len(self._running))
        first = self._batch.tokens(slot)[-1]
        self._on_token(request, first, finished=not self._stepping(slot))

    def _stepping(self, slot: int) -> bool:
        # A slot stops stepping on EOS or its token budget; the count says which.
        params = self._running[slot].params
        eos = not params.ignore_eos and self._batch.tokens(slot)[-1] in self._eos
        return not eos and self._batch.generated(slot) < params.max_tokens

    def _prefill(self, request: Request) -> ChatCache:
        """Takes the cached conversation sharing the longest prefix with this prompt (or a fresh session)
        and feeds it the rest of the prompt."""
        prompt = request.prompt
        runs = _audio_runs(self.model, prompt.ids, prompt.audio)
        best_key, best_prefix = None, 0
        for key, cached in self._sessions.items():
            prefix = _reusable_prefix(cached, prompt.ids, runs)
            if prefix > best_prefix:
                best_key, best_prefix = key, prefix
        if best_key is not None:
            cache = self._sessions.pop(best_key)
        else:
            cache = ChatCache(GenerationSession(self.model))
        try:
            cache.session.truncate(best_prefix)
            new_clips = [index for index, run in enumerate(runs) if run.start >= best_prefix]
            cache.audio_runs = []
            cache.session.append(prompt.ids[None, best_prefix:], None,
                                 **self.model.clip_audio(prompt.audio, new_clips, best_prefix))
            cache.audio_runs = runs
        except BaseException:
            cache.session.reset()
            raise
        request.reused_tokens = best_prefix
        return cache

    def _on_token(self, request: Request, token: int, finished: bool) -> None:
        request.completion_tokens += 1
        with self._wake:
            self.stats["generated_tokens"] += 1
        reason = None
        if token in self._eos and not request.params.ignore_eos:
            reason = "stop"
        else:
            try:
                request._text += request._decoder.add(int(token))
            except ValueError:
                # A checkpoint's vocabulary may be larger than its tokenizer's (Qwen2-Audio-7B: 156032 rows,
                # ~151.6k tokens); such an id has no text.
                pass
            if finished:
                request._text += request._decoder.flush()
            stop_at = _find_stop(request._text, request.params.stop, request._sent)
            if stop_at is not None:
                request._text = request._text[:stop_at]
                reason = "stop"
            elif finished:
                reason = "length"
        if reason is None:
            # Hold back what could still become a stop string.
            hold = max((len(s) - 1 for s in request.params.stop), default=0)
            end = max(request._sent, len(request._text) - hold)
        else:
            end = len(request._text)
        if end > request._sent:
            request.on_event(("text", request._text[request._sent:end]))
            request._sent = end
        if reason is not None:
            self._end(request._slot, reason=reason)

    def _drop_cancelled(self) -> None:
        for slot, request in list(self._running.items()):
            if request.cancelled.is_set():
                self._end(slot, reason="cancelled")

    def _end(self, slot: int, reason: str = "stop", error: Optional[BaseException] = None) -> None:
        request = self._running.pop(slot)
        cache = request._session
        try:
            self._batch.release(slot, cache.session._core if error is None else None)
        except Exception:  # noqa: BLE001 - the slot is free either way; the conversation is not kept
            logger.exception("releasing slot %d", slot)
            error = error or RuntimeError("internal error releasing the request")
        if error is None:
            self._keep(cache)
        with self._wake:
            key = "failed" if error is not None else "cancelled" if reason == "cancelled" else "finished"
            self.stats[key] += 1
        self._close(request, ("error", error) if error is not None else ("done", reason))

    def _close(self, request: Request, event: tuple) -> None:
        with self._wake:
            self._in_flight -= 1
        request.on_event(event)

    def _keep(self, cache: ChatCache) -> None:
        # The audio of the generated turn is unchanged, so the prompt's runs still describe the session.
        self._session_keys += 1
        self._sessions[self._session_keys] = cache
        while len(self._sessions) > self.kv_cache_entries:
            self._sessions.popitem(last=False)


def _find_stop(text: str, stops: list[str], sent: int) -> Optional[int]:
    """Where the earliest stop string starts in ``text`` (searching only what could contain a new one)."""
    best = None
    for stop in stops:
        index = text.find(stop, max(0, sent - len(stop) + 1))
        if index >= 0 and (best is None or index < best):
            best = index
    return best
