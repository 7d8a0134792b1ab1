"""device="cuda": argument checks everywhere; on a GPU, parity with the reference and the CPU engine.

Without a CUDA device (CI) loading onto one must fail with a DeviceError that names the cause; the
parity tests then skip. With one they check the encoder, audio features, logits and greedy tokens
against the float32 goldens of HF transformers within the CPU engine's bfloat16 bounds, the logits
against the CPU engine in bfloat16, and that generate, sessions, streaming and chat behave as on
the CPU.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import qwen2audio
from qwen2audio import DeviceError, Qwen2AudioForConditionalGeneration

from test_model import BF16_LOGITS_ATOL, GOLDEN_NAMES, check_bf16_against_reference, inputs_of


@pytest.fixture(scope="module")
def goldens(reference_dir: Path) -> dict:
    import json

    records = json.loads((reference_dir / "tiny_model" / "golden.json").read_text())["goldens"]
    return {record["name"]: record for record in records}


@pytest.fixture(scope="module")
def gpu_model(tiny_bf16: Path):
    try:
        return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, device="cuda")
    except DeviceError as error:
        pytest.skip(f"no usable CUDA device: {error}")


@pytest.fixture(scope="module")
def cpu_model(tiny_bf16: Path):
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, dtype="bfloat16")


@pytest.mark.parametrize("device", ["tpu", "cuda:", "cuda:x", "cuda:-1", "gpu"])
def test_bad_device_names_are_refused(tiny_bf16, device):
    with pytest.raises(ValueError, match="device must be"):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, device=device)


@pytest.mark.parametrize("arguments", [{"quantization": "int8"}, {"dtype": "float32"}, {"kv_cache_dtype": "float32"}])
def test_cpu_only_options_are_refused_on_cuda(tiny_bf16, arguments):
    with pytest.raises(ValueError, match="CPU-only"):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, device="cuda", **arguments)


def test_missing_gpu_or_backend_raises_device_error(tiny_bf16):
    try:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, device="cuda")
    except DeviceError as error:
        assert isinstance(error, RuntimeError)
        message = str(error)
        assert "CUDA" in message or "cuda" in message
        return
    assert model.device == "cuda:0"  # a GPU is present: the parity tests below run
    pytest.skip("a CUDA device is present")


def test_cpu_models_report_their_device(cpu_model):
    assert cpu_model.device == "cpu"
    assert "device='cpu'" in repr(cpu_model)


# ---------------------------------------------------------------- on a GPU

@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_gpu_matches_reference_and_cpu(name, goldens, reference_dir, gpu_model, cpu_model):
    active = np.load(reference_dir / "tiny_model" / "active_ids.npy")
    inputs, logits = check_bf16_against_reference(gpu_model, goldens[name], reference_dir, active)
    assert np.abs(logits - cpu_model(**inputs).logits[0]).max() <= 2 * BF16_LOGITS_ATOL


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_gpu_greedy_tokens_match_reference(name, goldens, reference_dir, gpu_model):
    golden = goldens[name]
    inputs = inputs_of(golden, reference_dir)
    sequences = gpu_model.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert sequences[0, inputs["input_ids"].shape[1]:].tolist() == golden["greedy_new_tokens"]


def test_gpu_streaming_sessions_and_threads(goldens, reference_dir, gpu_model):
    inputs = inputs_of(goldens["g2_speech_system"], reference_dir)
    expected = gpu_model.generate(**inputs, max_new_tokens=8, eos_token_id=[])

    class Collect:
        def __init__(self):
            self.pieces = []

        def put(self, value):
            self.pieces.append(np.asarray(value).reshape(-1).tolist())

        def end(self):
            self.pieces.append(None)

    streamer = Collect()
    gpu_model.generate(**inputs, max_new_tokens=8, eos_token_id=[], streamer=streamer)
    streamed = [token for piece in streamer.pieces[1:-1] for token in piece]
    assert streamed == expected[0, inputs["input_ids"].shape[1]:].tolist()

    session = gpu_model.start_session()
    session.append(**inputs)
    first = session.generate(max_new_tokens=4, eos_token_id=[])
    assert first[0].tolist() == expected[0, inputs["input_ids"].shape[1]:][:4].tolist()

    results = {}

    def run(index: int) -> None:
        results[index] = gpu_model.generate(**inputs, max_new_tokens=8, eos_token_id=[])

    threads = [threading.Thread(target=run, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(3):
        np.testing.assert_array_equal(results[index], expected)


def test_gpu_error_for_tensors_it_cannot_take(gpu_model):
    assert gpu_model.device.startswith("cuda:")
    assert gpu_model.dtype == "bfloat16" and gpu_model.kv_cache_dtype == "bfloat16"
    assert isinstance(qwen2audio.DeviceError, type)


# ---------------------------------------------------------------- log-mel on the GPU

def test_feature_extractor_device_argument(reference_dir):
    extractor = qwen2audio.WhisperFeatureExtractor(feature_size=128)
    audio = np.load(reference_dir / "mel" / "speech_en.audio.npy")
    with pytest.raises(ValueError, match="device must be"):
        extractor(audio, sampling_rate=16000, device="tpu")
    try:
        on_gpu = extractor(audio, sampling_rate=16000, device="cuda")
    except DeviceError as error:
        assert "CUDA" in str(error)
        pytest.skip(f"no usable CUDA device: {error}")
    expected = np.load(reference_dir / "mel" / "speech_en.input_features.npy")
    assert np.abs(on_gpu["input_features"][0] - expected).max() <= 1e-4
    on_cpu = extractor(audio, sampling_rate=16000)
    np.testing.assert_array_equal(on_gpu["attention_mask"], on_cpu["attention_mask"])
    with pytest.raises(ValueError, match="NaN"):
        extractor(np.full(1000, np.nan, dtype=np.float32), device="cuda")


def test_gpu_chat_follows_the_cpu_engine(tiny_bf16, reference_dir, gpu_model, cpu_model):
    processor = qwen2audio.Qwen2AudioProcessor.from_pretrained(tiny_bf16)
    audio = np.load(reference_dir / "mel" / "speech_en.audio.npy")
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": audio},
                                                  {"type": "text", "text": "What is said?"}]}]
    replies = [model.chat(processor, conversation, max_new_tokens=8, eos_token_id=[]) for model in (gpu_model, cpu_model)]
    assert replies[0] == replies[1]
    conversation += [{"role": "assistant", "content": replies[0]}, {"role": "user", "content": "And then?"}]
    streamed = "".join(gpu_model.chat(processor, conversation, stream=True, max_new_tokens=8, eos_token_id=[]))
    assert streamed == cpu_model.chat(processor, conversation, max_new_tokens=8, eos_token_id=[])
