"""The model on each of its compute paths: every kernel ISA variant this CPU runs, the BF16 KV cache,
and the tiled (prefill) and direct (decode) attention against each other over several key tiles.

Each path must reproduce the golden outputs of HF transformers within the tolerances of
tests/python/test_model.py (float32: the golden file's; bfloat16: 0.025 on the encoder, 0.05 on
logits) and keep the greedy tokens identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen2audio import Qwen2AudioForConditionalGeneration, _core
from test_model import inputs_of, left_padded_batch

GOLDEN_NAMES = ["g1_short_audio", "g2_speech_system", "g3_two_audios", "g4_text_only"]
BF16_ENCODER_ATOL = 0.025  # as tests/python/test_model.py
BF16_LOGITS_ATOL = 0.05
# A float32 model whose cache holds BF16 keys and values: each is rounded once (2^-9 relative).
# Measured worst deviation from the golden logits 0.0078 (g1); bound 3x that. A float32 cache
# stays within 3e-6 of the goldens, so this bound also shows the rounding really happens.
F32_WEIGHTS_BF16_CACHE_LOGITS_ATOL = 0.025


@pytest.fixture(scope="module")
def goldens(reference_dir: Path) -> dict[str, dict]:
    found = json.loads((reference_dir / "tiny_model" / "golden.json").read_text())["goldens"]
    return {golden["name"]: golden for golden in found}


@pytest.fixture(scope="module")
def active_ids(reference_dir: Path) -> np.ndarray:
    return np.load(reference_dir / "tiny_model" / "active_ids.npy")


# ---------------------------------------------------------------- every kernel variant

def runnable_isas() -> list[str]:
    info = _core.cpu_info()
    isas = ["scalar"]
    if info["avx2"]:
        isas.append("avx2")
    if info["avx512f"] and info["isa"] in ("avx512", "avx512_bf16", "amx"):
        isas.append("avx512")
    if info["isa"] == "amx":  # the VNNI prefill beside the uncapped runs' AMX one
        isas.append("avx512_bf16")
    return isas


# Runs in a fresh interpreter: the kernel tier is read once per process (QWEN2AUDIO_MAX_ISA).
PARITY_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
from qwen2audio import Qwen2AudioForConditionalGeneration as Model

reference, f32_dir, bf16_dir = (Path(arg) for arg in sys.argv[1:4])
goldens = json.loads((reference / "tiny_model" / "golden.json").read_text())["goldens"]
active = np.load(reference / "tiny_model" / "active_ids.npy")
models = {"float32": Model.from_pretrained(f32_dir, dtype="float32"),
          "bfloat16": Model.from_pretrained(bf16_dir, dtype="bfloat16")}
report = {}
for golden in goldens:
    inputs = {"input_ids": np.array([golden["input_ids"]])}
    if golden["audio_cases"]:
        mel = reference / "mel"
        inputs["input_features"] = np.stack([np.load(mel / f"{c}.input_features.npy") for c in golden["audio_cases"]])
        inputs["feature_attention_mask"] = np.stack(
            [np.load(mel / f"{c}.feature_attention_mask.npy") for c in golden["audio_cases"]])
    for dtype, model in models.items():
        entry = {}
        if golden["audio_cases"]:
            encoded = model.audio_encoder(inputs["input_features"], inputs["feature_attention_mask"])
            expected = np.load(reference / "tiny_model" / golden["encoder_last_hidden_state"])
            entry["encoder"] = float(np.abs(encoded - expected).max())
            # what exceeds the relative part of assert_allclose's bound (atol + rtol * |expected|)
            entry["encoder_beyond_rtol"] = float((np.abs(encoded - expected) - 1e-4 * np.abs(expected)).max())
        logits = model(**inputs).logits[0][:, active]
        entry["logits"] = float(np.abs(logits - np.load(reference / "tiny_model" / golden["logits_active"])).max())
        generated = model.generate(**inputs, max_new_tokens=12, eos_token_id=[])[0, -12:].tolist()
        entry["greedy"] = generated == golden["greedy_new_tokens"]
        report[f"{golden['name']}/{dtype}"] = entry
print(json.dumps({"isa": __import__("qwen2audio")._core.cpu_info()["isa"], "report": report}))
"""


@pytest.mark.parametrize("isa", runnable_isas())
def test_every_kernel_variant_matches_the_reference(isa, reference_dir, tiny_f32, tiny_bf16):
    env = dict(os.environ, QWEN2AUDIO_MAX_ISA=isa)
    done = subprocess.run([sys.executable, "-c", PARITY_SCRIPT, str(reference_dir), str(tiny_f32), str(tiny_bf16)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["isa"] == isa
    tolerances = json.loads((reference_dir / "tiny_model" / "golden.json").read_text())["tolerances"]
    for key, entry in result["report"].items():
        name, dtype = key.split("/")
        assert entry["greedy"], key
        if dtype == "float32":
            assert entry["logits"] <= tolerances["logits"]["f32_compute_atol"], key
            if "encoder" in entry:
                encoder = tolerances["encoder_last_hidden_state"]
                assert encoder["rtol"] == 1e-4  # the script's relative part
                assert entry["encoder_beyond_rtol"] <= encoder["f32_weights_f32_compute_atol"], key
        else:
            assert entry["logits"] <= BF16_LOGITS_ATOL, key
            if "encoder" in entry:
                assert entry["encoder"] <= BF16_ENCODER_ATOL, key


NATIVE_BF16_SCRIPT = r"""
import sys
from qwen2audio import Qwen2AudioForConditionalGeneration as Model
print(Model.from_pretrained(sys.argv[1], dtype="bfloat16")._core.native_bf16)
"""


def test_bf16_products_run_on_onednn_only_where_the_cpu_multiplies_bf16(tiny_bf16):
    # oneDNN's BF16 matmul on AVX-512 without BF16 is an emulation ("gemm:jit") slower than widening
    # the weights to float32 (the portable path); where the CPU has BF16 (or AMX-BF16) it is the JIT
    # kernel. ONEDNN_MAX_CPU_ISA makes oneDNN see a CPU without it.
    def native(onednn_cap: str | None) -> bool:
        env = {key: value for key, value in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
        if onednn_cap:
            env["ONEDNN_MAX_CPU_ISA"] = onednn_cap
        done = subprocess.run([sys.executable, "-c", NATIVE_BF16_SCRIPT, str(tiny_bf16)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1] == "True"

    info = _core.cpu_info()
    assert native(None) == bool(info["avx512_bf16"] or info["amx_bf16"])
    if info["avx512f"]:
        assert not native("AVX512_CORE_VNNI")
    assert not native("AVX2")


# ---------------------------------------------------------------- BF16 KV cache

def test_kv_cache_dtype_follows_the_model_and_can_be_chosen(tiny_f32, tiny_bf16):
    assert Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16).kv_cache_dtype == "bfloat16"
    assert Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32).kv_cache_dtype == "float32"
    assert Qwen2AudioForConditionalGeneration.from_pretrained(
        tiny_bf16, kv_cache_dtype="float32").kv_cache_dtype == "float32"
    assert Qwen2AudioForConditionalGeneration.from_pretrained(
        tiny_f32, kv_cache_dtype="torch.bfloat16").kv_cache_dtype == "bfloat16"
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, kv_cache_dtype="float16")
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        _core.Model.load(str(tiny_f32), kv_cache_dtype="int8")


@pytest.fixture(scope="module")
def f32_with_bf16_cache(tiny_f32):
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32", kv_cache_dtype="bfloat16")


@pytest.fixture(scope="module")
def bf16_with_f32_cache(tiny_bf16):
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, dtype="bfloat16", kv_cache_dtype="float32")


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_bf16_cache_keeps_greedy_tokens_and_logits(name, goldens, reference_dir, active_ids, f32_with_bf16_cache):
    golden = goldens[name]
    inputs = inputs_of(golden, reference_dir)
    sequences = f32_with_bf16_cache.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert sequences[0, -12:].tolist() == golden["greedy_new_tokens"]
    logits = f32_with_bf16_cache(**inputs).logits[0][:, active_ids]
    deviation = np.abs(logits - np.load(reference_dir / "tiny_model" / golden["logits_active"])).max()
    assert 1e-4 < deviation <= F32_WEIGHTS_BF16_CACHE_LOGITS_ATOL


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_bf16_model_with_a_float32_cache_still_matches(name, goldens, reference_dir, active_ids, bf16_with_f32_cache):
    golden = goldens[name]
    inputs = inputs_of(golden, reference_dir)
    assert bf16_with_f32_cache.generate(**inputs, max_new_tokens=12,
                                        eos_token_id=[])[0, -12:].tolist() == golden["greedy_new_tokens"]
    logits = bf16_with_f32_cache(**inputs).logits[0][:, active_ids]
    assert np.abs(logits - np.load(reference_dir / "tiny_model" / golden["logits_active"])).max() <= BF16_LOGITS_ATOL


def test_bf16_cache_batched_equals_one_by_one(goldens, reference_dir, f32_with_bf16_cache):
    rows = [goldens[name] for name in GOLDEN_NAMES]
    width = max(len(row["input_ids"]) for row in rows)
    batched = f32_with_bf16_cache.generate(**left_padded_batch(goldens, reference_dir, GOLDEN_NAMES),
                                           max_new_tokens=12, eos_token_id=[])
    for index, row in enumerate(rows):
        alone = f32_with_bf16_cache.generate(**inputs_of(row, reference_dir), max_new_tokens=12, eos_token_id=[])
        assert batched[index, width:].tolist() == alone[0, -12:].tolist() == row["greedy_new_tokens"]


# ---------------------------------------------------------------- tiled and direct attention, long contexts

@pytest.fixture(scope="module")
def model_f32(tiny_f32):
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32")


def long_text_prompt(goldens: dict, length: int) -> np.ndarray:
    """Text tokens past several 128-key tiles and 64-query blocks of the tiled attention."""
    words = goldens["g4_text_only"]["input_ids"] + goldens["g2_speech_system"]["input_ids"][:20]
    ids = [token for token in words if token != 151646] * (length // len(words) + 1)
    return np.array([ids[:length]], dtype=np.int64)


def test_long_prompt_logits_are_causal(goldens, model_f32):
    # The same first 150 tokens must give the same logits whatever follows them: queries in blocks
    # and keys in tiles must see exactly their causal past, also across tile and block edges.
    prompt = long_text_prompt(goldens, 330)
    whole = model_f32(prompt).logits[0]
    head = model_f32(prompt[:, :150]).logits[0]
    np.testing.assert_allclose(whole[:150], head, atol=2e-5)
    assert np.abs(whole[150:] - whole[149]).max() > 1e-3  # later positions do differ


def test_decode_steps_match_full_recomputation_over_a_long_context(goldens, model_f32):
    # Prefill (tiled path) of 300 tokens, then decode steps (direct path over the cache), against
    # greedy by recomputing the whole sequence with the model's forward each step.
    prompt = long_text_prompt(goldens, 300)
    generated = model_f32.generate(prompt, max_new_tokens=6, eos_token_id=[])[0, 300:].tolist()
    sequence = prompt[0].tolist()
    for _ in range(6):
        sequence.append(int(np.argmax(model_f32(np.array([sequence])).logits[0, -1])))
    assert generated == sequence[300:]


def test_chunked_appends_equal_one_prefill(goldens, model_f32):
    # A chat appends its turns in chunks (queries after a cached prefix, the "causal with offset"
    # case); the answer must equal prefilling everything at once.
    prompt = long_text_prompt(goldens, 260)
    session = model_f32.start_session()
    for begin, end in ((0, 70), (70, 71), (71, 200), (200, 260)):
        session.append(prompt[:, begin:end])
    chunked = session.generate(max_new_tokens=8, eos_token_id=[])
    once = model_f32.generate(prompt, max_new_tokens=8, eos_token_id=[])[:, 260:]
    np.testing.assert_array_equal(chunked, once)
