"""The batching engine without HTTP: `_core.DecodeBatch` against `model.generate` on each prompt alone, and
the scheduler's Engine (requests joining a running batch, stop strings, cancellation, KV reuse)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from qwen2audio import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, _core
from qwen2audio.serving import Engine, Prompt, Request, SamplingParams


@pytest.fixture(scope="module", params=["f32", "bf16", "bf16-int8", "bf16-int4"])
def loaded(request: pytest.FixtureRequest) -> tuple:
    dtype, _, quantization = request.param.partition("-")
    folder = request.getfixturevalue(f"tiny_{dtype}")
    options = {"quantization": quantization} if quantization else {}
    model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, num_threads=2, **options)
    return model, Qwen2AudioProcessor.from_pretrained(folder)


def _prompts(processor: Qwen2AudioProcessor) -> list[np.ndarray]:
    texts = ["Hello there, how are you?", "One", "A somewhat longer prompt that has quite a few more tokens in it.",
             "Numbers: 1 2 3 4 5", "Why?"]
    return [np.asarray(processor.tokenizer(text)["input_ids"], dtype=np.int64) for text in texts]


def test_decode_batch_equals_generate_alone(loaded: tuple) -> None:
    model, processor = loaded
    prompts = _prompts(processor)
    budgets = [9, 14, 5, 11, 7]
    batch = _core.DecodeBatch(model._core, 3, 128)
    results: dict[int, list[int]] = {}
    slot_of: dict[int, int] = {}
    waiting = list(range(len(prompts)))
    steps = 0
    while waiting or slot_of:
        # One request joins per step, so they enter a batch already decoding.
        if waiting and batch.free_slot >= 0:
            index = waiting.pop(0)
            session = model.start_session()
            session.append(prompts[index][None])
            slot = batch.admit(session._core, budgets[index])
            slot_of[slot] = index
            results[index] = [batch.tokens(slot)[-1]]
        for slot, token, finished in batch.step():
            results[slot_of[slot]].append(token)
        for slot in [s for s, i in slot_of.items() if batch.generated(s) == budgets[i]]:
            batch.release(slot)
            del slot_of[slot]
        steps += 1
        assert steps < 100
    for index, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], max_new_tokens=budgets[index], do_sample=False, eos_token_id=[])
        assert results[index] == alone[0, prompt.size:].tolist(), f"request {index}"


def test_decode_batch_refuses_bad_calls(loaded: tuple) -> None:
    model, _ = loaded
    with pytest.raises(ValueError):
        _core.DecodeBatch(model._core, 0, 16)
    batch = _core.DecodeBatch(model._core, 1, 16)
    with pytest.raises(ValueError, match="append"):
        batch.admit(model.start_session()._core, 4)
    with pytest.raises(ValueError, match="not in use"):
        batch.release(0)
    assert batch.step() == []


def _run(engine: Engine, prompt: np.ndarray, **params: object) -> tuple[str, str, Request]:
    done = threading.Event()
    pieces: list[str] = []
    outcome: list[object] = []

    def on_event(event: tuple) -> None:
        if event[0] == "text":
            pieces.append(event[1])
        else:
            outcome.append(event)
            done.set()

    request = Request(Prompt(prompt), SamplingParams(**{"max_tokens": 8, "temperature": 0.0, **params}), on_event)
    engine.submit(request)
    assert done.wait(60)
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return "".join(pieces), value, request


def test_engine_stop_strings_cancel_and_reuse(loaded: tuple) -> None:
    model, processor = loaded
    engine = Engine(model, processor, max_batch=2, context_length=256, max_queue=4, kv_cache_entries=2)
    try:
        prompt = _prompts(processor)[0]
        text, reason, request = _run(engine, prompt, max_tokens=16)
        alone = model.generate(prompt[None], max_new_tokens=16)[0, prompt.size:]
        assert text == processor.decode(alone, skip_special_tokens=True)
        assert reason == ("length" if request.completion_tokens == 16 else "stop")
        if len(text) >= 3:
            cut, reason, _ = _run(engine, prompt, max_tokens=16, stop=[text[1:3]])
            assert cut == text[:text.index(text[1:3])] and reason == "stop"
        # A second turn extending the first reuses its cache.
        follow = np.concatenate([prompt, np.asarray(engine._sessions[next(reversed(engine._sessions))]
                                                    .session.tokens[0][prompt.size:], dtype=np.int64),
                                 _prompts(processor)[1]])
        _, _, second = _run(engine, follow, max_tokens=2)
        assert second.reused_tokens >= prompt.size
        # Cancelled before admission: never decoded.
        cancelled = Request(Prompt(prompt), SamplingParams(max_tokens=4), lambda event: None)
        cancelled.cancel()
        engine.submit(cancelled)
        _run(engine, prompt, max_tokens=1)
        assert engine.snapshot()["cancelled"] >= 1
    finally:
        engine.shutdown()
