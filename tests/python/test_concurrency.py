"""One loaded model, tokenizer, feature extractor or processor shared by several Python threads at once
gives exactly what the same calls give one after another.

The engine releases the GIL around compute, so these threads really run in parallel inside C++: any
shared scratch buffer, cache or global state would show up as a wrong token, a wrong id or a crash
(and as a report under the sanitizer build). Every job runs twice in the concurrent pass, started
together behind a barrier, and each result must equal the sequential one exactly. That the calls do
release the GIL (so the threads overlap in C++ rather than taking turns) is checked without timing
by test_compute_releases_the_gil.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import qwen2audio
from qwen2audio import _core
from qwen2audio import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, Qwen2Tokenizer, WhisperFeatureExtractor
from test_model import inputs_of

THREADS = 6


def run_concurrently(jobs: list[Callable[[], Any]], repeats: int = 2) -> list[Any]:
    """Runs every job `repeats` times on THREADS threads, the first wave started together."""
    work = [job for job in jobs for _ in range(repeats)]
    assert len(work) >= THREADS, "too few jobs to keep every thread busy"
    barrier = threading.Barrier(THREADS)  # only passes once THREADS distinct threads are inside run_concurrently

    def call(index: int) -> Any:
        if index < THREADS:
            barrier.wait()
        return work[index]()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(call, range(len(work))))
    return [results[index * repeats : (index + 1) * repeats] for index in range(len(jobs))]


def assert_same(expected: Any, actual: Any) -> None:
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, (list, tuple)) and expected and isinstance(expected[0], np.ndarray):
        assert len(actual) == len(expected)
        for one, other in zip(expected, actual):
            assert_same(one, other)
    elif isinstance(expected, dict):
        assert expected.keys() == actual.keys()
        for key in expected:
            assert_same(expected[key], actual[key])
    else:
        assert actual == expected


def same(expected: Any, actual: Any) -> bool:
    try:
        assert_same(expected, actual)
    except AssertionError:
        return False
    return True


def check_concurrent_equals_sequential(jobs: list[Callable[[], Any]]) -> list[Any]:
    sequential = [job() for job in jobs]
    # Jobs that all gave the same answer could not tell one thread's result from another's.
    assert any(not same(sequential[0], other) for other in sequential[1:]), "every job gave the same result"
    for expected, runs in zip(sequential, run_concurrently(jobs)):
        for actual in runs:
            assert_same(expected, actual)
    return sequential


# ------------------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def goldens(reference_dir: Path) -> dict[str, dict]:
    document = json.loads((reference_dir / "tiny_model" / "golden.json").read_text())
    return {golden["name"]: golden for golden in document["goldens"]}


@pytest.mark.parametrize("dtype, fixture", [("float32", "tiny_f32"), ("bfloat16", "tiny_bf16")])
def test_one_model_generating_in_several_threads(dtype, fixture, request, goldens, reference_dir):
    # Two OpenMP threads per call: the threads' teams then overlap on the cores as real serving does.
    model = Qwen2AudioForConditionalGeneration.from_pretrained(request.getfixturevalue(fixture), dtype=dtype,
                                                               num_threads=2)
    jobs = []
    for name, golden in goldens.items():
        inputs = inputs_of(golden, reference_dir)
        jobs.append(lambda inputs=inputs: model.generate(**inputs, max_new_tokens=12, eos_token_id=[]))
        jobs.append(lambda inputs=inputs: model.generate(**inputs, max_new_tokens=8, eos_token_id=[], do_sample=True,
                                                         temperature=0.8, top_k=40, top_p=0.9, seed=11))
        jobs.append(lambda inputs=inputs: model(**inputs).logits[:, -3:])
    jobs.append(lambda: model.encode_audio(**{key: value for key, value in inputs_of(goldens["g3_two_audios"],
                                                                                     reference_dir).items()
                                              if key != "input_ids"}))
    sequential = check_concurrent_equals_sequential(jobs)
    # Sampling really sampled (so equal seeded results mean the seed, not a greedy fallback, decided them).
    assert any(sequential[3 * index + 1][0, -8:].tolist() != sequential[3 * index][0, -12:-4].tolist()
               for index in range(len(goldens)))
    if dtype == "float32":  # greedy tokens are the golden ones (bf16 has its own test module for parity)
        for index, golden in enumerate(goldens.values()):
            assert sequential[3 * index][0, -12:].tolist() == golden["greedy_new_tokens"]


def test_sessions_of_one_model_in_several_threads(tiny_f32, goldens, reference_dir):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32", num_threads=1)
    follow_up = np.array([[151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]])

    def conversation(name: str) -> list[np.ndarray]:
        session = model.start_session()
        streamed: list[int] = []
        first = session.generate(**inputs_of(goldens[name], reference_dir), max_new_tokens=6, eos_token_id=[],
                                 streamer=lambda tokens: streamed.append(int(tokens[0])))
        assert streamed == first[0].tolist()
        second = session.generate(follow_up, max_new_tokens=6, eos_token_id=[])
        session.truncate(len(session) - 4)
        third = session.generate(max_new_tokens=4, eos_token_id=[])
        return [first, second, third, session.tokens]

    check_concurrent_equals_sequential([lambda name=name: conversation(name) for name in goldens])


# ------------------------------------------------------------------------------------------ GIL
def lets_other_threads_run(call: Callable[[], Any]) -> bool:
    """Whether another Python thread gets to run while `call` is still in progress.

    The switch interval is raised far beyond the test's length, so the interpreter never takes the GIL
    from a running thread: the main thread, waiting for the worker, can only run again once the worker
    gives the GIL up itself (a gil_scoped_release in C++) or has finished. `finished` still False when
    the main thread runs therefore proves the call released the GIL; a call that keeps it can never
    pass. (The converse is not certain: the OS may wake the main thread only after a short call has
    taken the GIL back, hence releases_the_gil's several attempts on calls with real work.)
    """
    started = threading.Event()
    finished = False
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal finished
        started.set()
        try:
            call()
        except BaseException as error:  # noqa: BLE001 - re-raised below: a failed call proves nothing
            errors.append(error)
        finished = True

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        started.wait()
        released = not finished
        thread.join()
    finally:
        sys.setswitchinterval(previous)
    if errors:
        raise errors[0]
    return released


def releases_the_gil(call: Callable[[], Any], attempts: int = 5) -> bool:
    return any(lets_other_threads_run(call) for _ in range(attempts))


def test_compute_releases_the_gil(tiny_f32, goldens, reference_dir):
    # The probe itself: calls that keep the GIL are seen as keeping it, one that blocks as releasing it.
    assert not releases_the_gil(lambda: sum(range(500_000)))
    assert not releases_the_gil(lambda: sorted(range(200_000, 0, -1)))
    assert releases_the_gil(lambda: threading.Event().wait(0.01))

    # The extension's entry points are called directly (no Python wrapper that might block on
    # something else first), each with real work to do.
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32", num_threads=1)
    inputs = inputs_of(goldens["g3_two_audios"], reference_dir)
    features = inputs["input_features"].astype(np.float32)
    feature_mask = inputs["feature_attention_mask"].astype(np.int64)
    ids = inputs["input_ids"]

    empty = model.start_session()
    prefilled = model.start_session()  # so that only the decoding runs inside the probe
    prefilled._core.append(ids, None, features, feature_mask)
    tokenizer = Qwen2Tokenizer.from_pretrained(reference_dir / "tokenizer")
    extractor = WhisperFeatureExtractor.from_pretrained(reference_dir / "tokenizer")
    clip = qwen2audio.load_audio(reference_dir / "audio" / "long_47s.wav")
    # ~300 KB of mostly distinct words: BPE work, not word-cache hits.
    letters = list("abcdefghijklmnopqrstuvwxyzäöüéñ你好     ")
    text = "".join(np.random.default_rng(3).choice(letters, size=300_000))
    calls = {
        "Model.forward": lambda: model._core.forward(ids, None, features, feature_mask),
        "Model.encode": lambda: model._core.encode(features, feature_mask),
        "Session.append": lambda: empty._core.append(ids, None, features, feature_mask),
        "Session.generate": lambda: prefilled._core.generate(max_new_tokens=4),
        "Tokenizer.encode": lambda: tokenizer._core.encode(text),
        "Tokenizer.decode": lambda: tokenizer._core.decode(list(range(100_000))),
        "WhisperLogMel": lambda: extractor._log_mel([clip]),
        "load_audio_file": lambda: _core.load_audio_file(str(reference_dir / "audio" / "long_47s.wav"), 8000, 1 << 24),
    }
    keeps_the_gil = [name for name, call in calls.items() if not releases_the_gil(call)]
    assert keeps_the_gil == []


# ---------------------------------------------------------------------------------------- text
@pytest.fixture(scope="module")
def tokenizer_dir(reference_dir: Path) -> Path:
    return reference_dir / "tokenizer"


def test_one_tokenizer_in_several_threads(tokenizer_dir):
    tokenizer = Qwen2Tokenizer.from_pretrained(tokenizer_dir)  # a fresh, empty word cache
    examples = json.loads((tokenizer_dir / "chat_examples.json").read_text())["examples"]
    rng = np.random.default_rng(5)
    alphabet = list("abcdefghij klmnop,.!?\n") + list("äöüßéèñçøå你好世界こんにちは안녕🎉👍🏽") + ["<|im_start|>", "<|AUDIO|>"]
    texts = [example["expanded_prompt"] for example in examples]
    texts += ["".join(rng.choice(alphabet, size=int(rng.integers(200, 3000)))) for _ in range(8)]
    id_lists = [tokenizer.encode(text) for text in texts]
    random_ids = [rng.integers(0, tokenizer.vocab_size, size=300).tolist() for _ in range(4)]

    def stream(ids: list[int]) -> str:
        decoder = tokenizer.incremental_decoder(skip_special_tokens=False)
        return "".join(decoder.add(token) for token in ids) + decoder.flush()

    jobs: list[Callable[[], Any]] = []
    for text in texts:
        jobs.append(lambda text=text: tokenizer.encode(text))
        jobs.append(lambda text=text: tokenizer(text, split_special_tokens=True)["input_ids"])
    jobs.append(lambda: tokenizer(texts, padding=True, return_tensors="np"))  # encode_batch (OpenMP inside)
    for ids in id_lists + random_ids:
        jobs.append(lambda ids=ids: tokenizer.decode(ids))
        jobs.append(lambda ids=ids: tokenizer.decode(ids, skip_special_tokens=True))
        jobs.append(lambda ids=ids: stream(ids))
    jobs.append(lambda: tokenizer.batch_decode(random_ids))
    sequential = check_concurrent_equals_sequential(jobs)
    for index, text in enumerate(texts):
        assert tokenizer.decode(sequential[2 * index]) == text


# --------------------------------------------------------------------------------------- audio
def test_one_feature_extractor_in_several_threads(reference_dir):
    extractor = WhisperFeatureExtractor.from_pretrained(reference_dir / "tokenizer")
    manifest = json.loads((reference_dir / "mel" / "manifest.json").read_text())
    clips = [np.load(reference_dir / case["audio_npy"]) for case in manifest["cases"].values() if case.get("audio_npy")]
    jobs: list[Callable[[], Any]] = [lambda clip=clip: extractor(clip) for clip in clips]
    jobs.append(lambda: extractor(clips))
    jobs.append(lambda: extractor(clips, num_threads=1))
    sequential = check_concurrent_equals_sequential(jobs)
    assert_same(sequential[-1], sequential[-2])  # thread count never changes the features


def test_load_audio_in_several_threads(reference_dir, tmp_path):
    audio = reference_dir / "audio"
    paths = [audio / name for name in ("speech_en.wav", "stereo_44k1.wav", "short_0p3s.wav", "noise_1s.wav")]
    broken = []
    for index in range(3):
        path = tmp_path / f"broken_{index}.wav"
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes([index]) * 64)
        broken.append(path)

    def refused(path: Path) -> str:
        with pytest.raises(ValueError) as error:
            qwen2audio.load_audio(path)
        return path.name if path.name in str(error.value) else str(error.value)

    jobs: list[Callable[[], Any]] = [lambda path=path: qwen2audio.load_audio(path) for path in paths]
    jobs += [lambda path=path: qwen2audio.load_audio(path.read_bytes(), sampling_rate=8000) for path in paths]
    jobs += [lambda path=path: refused(path) for path in broken]
    sequential = check_concurrent_equals_sequential(jobs)
    assert sequential[-3:] == [path.name for path in broken]


def test_one_processor_in_several_threads(reference_dir):
    processor = Qwen2AudioProcessor.from_pretrained(reference_dir / "tokenizer")
    audio = reference_dir / "audio"
    conversations = [
        [{"role": "user", "content": [{"type": "audio", "audio_url": str(audio / name)},
                                      {"type": "text", "text": f"What is in clip {index}?"}]}]
        for index, name in enumerate(("speech_en.wav", "short_0p3s.wav", "chirp_5s.wav"))
    ]
    jobs = [lambda conversation=conversation: processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True) for conversation in conversations]
    check_concurrent_equals_sequential(jobs)
