"""Weight-only int8/int4 quantization: the kernels against bounds that follow from each format's
step size, the quantized model against the model whose weights are the dequantized values, the
error against bfloat16, save/load without re-quantizing, and bad arguments."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen2audio import CheckpointError, Qwen2AudioForConditionalGeneration, _core
from qwen2audio.checkpoint import Checkpoint
from qwen2audio.safetensors_writer import save_file
from test_model import inputs_of, left_padded_batch

FORMATS = ["int8", "int4"]
GOLDEN_NAMES = ["g1_short_audio", "g2_speech_system", "g3_two_audios", "g4_text_only"]
DECODER_PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


# ------------------------------------------------------------------------------ format decoding

def dequantize(codes: np.ndarray, scales: np.ndarray, fmt: str, group_size: int) -> np.ndarray:
    """The documented formats, decoded in NumPy (independently of the C++ dequantizer)."""
    rows = codes.shape[0]
    if fmt == "int8":
        levels = codes.view(np.int8).astype(np.float32)
    else:
        blocks = codes.reshape(rows, -1, 16)  # 16 bytes per 32-element block
        low, high = (blocks & 15).astype(np.int32), (blocks >> 4).astype(np.int32)
        levels = (np.concatenate([low, high], axis=2) - 8).reshape(rows, -1).astype(np.float32)
    cols = levels.shape[1]
    expanded = np.repeat(scales, group_size, axis=1)[:, :cols]
    return (expanded * levels).astype(np.float32)


def quantized_activations(x: np.ndarray, group_size: int, fmt: str) -> np.ndarray:
    """What the quantized kernels multiply with (kernels/cpu/gemv.h): x quantized per weight group to
    int8 levels for int4 weights, int16 levels for int8 weights, in float32 steps as the engine takes
    them (level = rint(x * (top / max|x|)), value = level * (max|x| / top), top 127 or 32767)."""
    top = np.float32(127 if fmt == "int4" else 32767)
    groups = x.astype(np.float32).reshape(x.shape[0], -1, group_size)
    largest = np.abs(groups).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        inverse = np.where(largest > 0, top / largest, np.float32(0)).astype(np.float32)
    levels = np.rint(groups * inverse)
    return (levels * (largest / top)).reshape(x.shape).astype(np.float32)


@pytest.fixture(scope="module")
def reference_goldens(reference_dir: Path) -> dict[str, dict]:
    goldens = json.loads((reference_dir / "tiny_model" / "golden.json").read_text())["goldens"]
    return {golden["name"]: golden for golden in goldens}


# ------------------------------------------------------------------------------ kernel bounds

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("group_size", [32, 128])
def test_quantized_gemv_error_is_within_half_a_step_per_weight(fmt, group_size):
    # Rounding to the nearest level moves each weight by at most half a step (its group's scale);
    # int4 may clamp the largest value of the sign opposite to the group's extreme, a full step.
    # So |y_q - y| <= sum_p |x_p| * step_p * (1/2 or 1), plus float32 rounding of the sums.
    rng = np.random.default_rng(0)
    n, k = 96, 512
    weight = (rng.standard_normal((n, k)) * 0.02).astype(np.float32)
    x = rng.standard_normal((3, k)).astype(np.float32)
    codes, scales = _core.quantize_weight(weight, fmt, group_size)
    y = _core.gemv(x, codes, fmt, scales=scales, group_size=group_size)
    x = quantized_activations(x, group_size, fmt)  # what the kernels multiply
    exact = x.astype(np.float64) @ weight.T.astype(np.float64)
    step = np.abs(np.repeat(scales, group_size, axis=1)[:, :k]).astype(np.float64)
    fraction = 0.5 if fmt == "int8" else 1.0
    bound = np.abs(x).astype(np.float64) @ (step * fraction).T + 1e-5
    assert np.all(np.abs(y - exact) <= bound)
    # The bound is reached in order of magnitude, not vacuous: the error is a real fraction of it.
    assert np.abs(y - exact).max() > 0.01 * bound.max()
    # The stored codes decode (by the documented layout) to weights within the same steps.
    decoded = dequantize(codes, scales, fmt, group_size)
    assert np.all(np.abs(decoded - weight) <= step * fraction * (1 + 1e-6) + 1e-12)


def test_every_kernel_tier_on_this_cpu_gives_the_same_quantized_products():
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((40, 256)).astype(np.float32)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    # each capped at what this CPU has
    tiers = ["scalar", "avx2", "avx2_vnni", "avx512", "avx512_vnni", "avx512_bf16", "amx"]
    for fmt in FORMATS:
        codes, scales = _core.quantize_weight(weight, fmt, 64)
        inputs = quantized_activations(x, 64, fmt)
        expected = inputs.astype(np.float64) @ dequantize(codes, scales, fmt, 64).T.astype(np.float64)
        for isa in tiers:
            y = _core.gemv(x, codes, fmt, scales=scales, group_size=64, isa=isa)
            np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4, err_msg=f"{fmt} on {isa}")


# ------------------------------------------------------------------------------ the model

@pytest.fixture(scope="module")
def bf16_model(tiny_bf16: Path) -> Qwen2AudioForConditionalGeneration:
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, dtype="bfloat16")


@pytest.fixture(scope="module")
def quantized_models(tiny_bf16: Path) -> dict[str, Qwen2AudioForConditionalGeneration]:
    return {fmt: Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, dtype="bfloat16", quantization=fmt)
            for fmt in FORMATS}


def test_which_layers_are_quantized(quantized_models, tiny_bf16):
    checkpoint = Checkpoint(tiny_bf16)
    layers = checkpoint.config.text_config.num_hidden_layers
    for fmt, model in quantized_models.items():
        found = {prefix: kind for prefix, kind, _, _ in model._core.quantized_layers}
        expected = {f"language_model.model.layers.{index}.{projection}": fmt
                    for index in range(layers) for projection in DECODER_PROJECTIONS}
        expected["language_model.lm_head"] = "int8"  # the output head is int8 in both modes
        assert found == expected
        config = model.quantization_config
        assert config["bits"] == int(fmt[3:]) and config["lm_head_bits"] == 8 and config["group_size"] == 128
    # The encoder, projector and embeddings stay as stored (memory-mapped BF16).
    assert quantized_models["int4"]._core.mapped_weight_bytes > 15_000_000


def load_quantized(path: Path, fmt: str, integer: bool) -> Qwen2AudioForConditionalGeneration:
    """A float32 model quantized at load, its prefill on the integer units (activations quantized to
    int8; VNNI or AVX2 kernels) or widening the weights to float32."""
    core = _core.Model.load(str(path), "float32", 0, quantization=fmt, integer_kernels=integer)
    return Qwen2AudioForConditionalGeneration(core, str(path))


def prefill_paths() -> list:
    """Both kernel sets where the kernels' tier (QWEN2AUDIO_MAX_ISA honoured) has the integer one, else
    the rows alone (named)."""
    from qwen2audio import _core as core

    info = core.cpu_info()
    # Every vector tier: AMX kernels for prefill on the amx tier, VNNI ones on avx512_bf16,
    # avx512_vnni and avx2_vnni, vpmaddubsw ones on avx2 and avx512.
    integer = info["isa"] != "scalar"
    return ["float"] + (["integer"] if integer else [])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("prefill", prefill_paths())
def test_quantized_model_computes_the_model_of_its_dequantized_weights(fmt, prefill, tiny_f32, tmp_path,
                                                                       reference_goldens, reference_dir):
    # Replace each quantized layer's weight by its decoded codes in a float32 checkpoint: the plain
    # float32 engine on that checkpoint is what the quantized engine must compute. With float32
    # activations (the widening prefill) within the float32 tolerance of the goldens (1e-3); with the
    # integer prefill within its activation rounding (int8 levels, ACTIVATION_ERROR below).
    model = load_quantized(tiny_f32, fmt, prefill == "integer")
    assert model._core.integer_kernels == (prefill == "integer")
    checkpoint = Checkpoint(tiny_f32)
    tensors = {name: np.array(checkpoint[name]) for name in checkpoint.tensor_names()}
    for prefix, kind, codes, scales in model._core.quantized_layers:
        tensors[prefix + ".weight"] = dequantize(np.asarray(codes).view(np.uint8), np.asarray(scales), kind, 128)
    folder = tmp_path / "dequantized"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    for item in tiny_f32.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, folder / item.name)
    plain = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype="float32")
    quantized, reference = [], []
    for name in GOLDEN_NAMES:
        inputs = inputs_of(reference_goldens[name], reference_dir)
        quantized.append(model(**inputs).logits)
        reference.append(plain(**inputs).logits)
        if prefill == "float":
            np.testing.assert_allclose(quantized[-1], reference[-1], atol=1e-3, rtol=0)
    if prefill == "integer":
        assert 0 < _relative_rms(quantized, reference) <= ACTIVATION_ERROR["int8 levels"]


def _relative_rms(values: list[np.ndarray], references: list[np.ndarray]) -> float:
    error = sum(float(((value - reference) ** 2).sum()) for value, reference in zip(values, references))
    return float(np.sqrt(error / sum(float((reference ** 2).sum()) for reference in references)))


# Runs in a fresh interpreter: the kernel tier is read once per process (QWEN2AUDIO_MAX_ISA).
TIER_LOGITS_SCRIPT = r"""
import sys
import numpy as np
from qwen2audio import Qwen2AudioForConditionalGeneration as Model, _core
path, out = sys.argv[1:3]
rng = np.random.default_rng(5)
prompts = rng.integers(0, 1000, size=(3, 45))  # 135 prefill rows: whole and partial 32-row blocks
saved = {"isa": np.array(_core.cpu_info()["isa"])}
for fmt in ("int8", "int4"):
    model = Model.from_pretrained(path, dtype="bfloat16", quantization=fmt)
    saved[fmt] = model(input_ids=prompts).logits
    # decode steps of two rows (the panels' decode tiles), greedy
    saved[f"{fmt}_generated"] = model.generate(input_ids=prompts[:2], max_new_tokens=6, eos_token_id=[])
np.savez(out, **saved)
"""


def _tier_pairs() -> list:
    """Tiers whose integer kernels must agree to the bit, each with the one it replaces, where this CPU
    (and the tier the tests run at) has the first: on an AMX CPU every other kernel runs the same
    Avx512Bf16 variant under both caps, Avx512Vnni every other kernel's Avx512 one and Avx2Vnni every
    other kernel's AVX2 one."""
    info = _core.cpu_info()
    pairs = []
    if info["isa"] == "amx":
        pairs.append(("amx", "avx512_bf16"))
    if info["avx512_vnni"] and info["isa"] in ("avx512_vnni", "avx512_bf16", "amx"):
        pairs.append(("avx512_vnni", "avx512"))
    if info["avx_vnni"] and info["isa"] in ("avx2_vnni", "avx512", "avx512_vnni", "avx512_bf16", "amx"):
        pairs.append(("avx2_vnni", "avx2"))
    return pairs or [pytest.param(None, None, marks=pytest.mark.skip(reason="needs a CPU with AMX-INT8 or AVX-VNNI"))]


@pytest.mark.parametrize("tier, replaced", _tier_pairs())
def test_integer_tiers_give_the_same_logits_bit_for_bit(tier, replaced, tiny_bf16, tmp_path):
    # AMX's tile products, AVX512-VNNI's and AVX-VNNI's vpdpbusd and vpmaddubsw compute the same exact
    # int32 group sums and scale them alike.
    logits = {}
    for cap in (tier, replaced):
        out = tmp_path / f"{cap}.npz"
        done = subprocess.run([sys.executable, "-c", TIER_LOGITS_SCRIPT, str(tiny_bf16), str(out)],
                              env=dict(os.environ, QWEN2AUDIO_MAX_ISA=cap), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        logits[cap] = np.load(out)
        assert str(logits[cap]["isa"]) == cap
    for fmt in FORMATS:
        for part in (fmt, f"{fmt}_generated"):
            assert np.isfinite(logits[tier][part]).all()
            np.testing.assert_array_equal(logits[tier][part], logits[replaced][part], err_msg=part)


@pytest.mark.parametrize("fmt", FORMATS)
def test_logits_error_against_bf16_follows_the_weight_error(fmt, quantized_models, bf16_model, tiny_bf16,
                                                            reference_goldens, reference_dir):
    # Weight error: the relative RMS change of the quantized weights. Independent errors in the
    # matrices a value passes through add in quadrature, and a decoder token passes through at most
    # 4 quantized matrices per layer (q/k/v, o, gate/up, down) plus the head: 9 in this 2-layer
    # model, so the logits' relative RMS error stays below sqrt(9) = 3 times the worst layer's weight
    # error (RMSNorm keeps each layer's input scale fixed).
    model = quantized_models[fmt]
    checkpoint = Checkpoint(tiny_bf16)
    weight_errors = []
    for prefix, kind, codes, scales in model._core.quantized_layers:
        original = checkpoint.to_float32(prefix + ".weight")
        decoded = dequantize(np.asarray(codes).view(np.uint8), np.asarray(scales), kind, 128)
        weight_errors.append(np.sqrt(((decoded - original) ** 2).mean() / (original ** 2).mean()))
    # lm_head rows outside the active ids are zero and quantize exactly; the others set the scale.
    worst = max(error for error in weight_errors if np.isfinite(error))
    quantized, reference = [], []
    for name in GOLDEN_NAMES:
        inputs = inputs_of(reference_goldens[name], reference_dir)
        quantized.append(model(**inputs).logits)
        reference.append(bf16_model(**inputs).logits)
    error = _relative_rms(quantized, reference)
    assert error <= 3 * worst
    assert error > 0.1 * worst  # the quantized weights were really used


# The decode kernels quantize activations per weight group (kernels/cpu/gemv.h), to int8 levels for
# int4 weights and int16 levels for int8 weights, and so does the integer prefill (int8 levels for
# both, kernels/cpu/quantized_gemm.h): each moves by at most half a level, max/(2 top); as a uniform
# rounding that is max / (top sqrt 12) RMS, and the largest of 128 roughly Gaussian values is about
# 3.5 RMS, so 0.8 % (top 127) or 0.003 % (top 32767) of the activations' RMS. Through the 9
# quantized matrices a value passes in this model, added in quadrature: 3 times that.
ACTIVATION_ERROR = {name: 3 * 3.5 / (top * np.sqrt(12)) for name, top in (("int8 levels", 127), ("int16 levels", 32767))}
DECODE_LEVELS = {"int4": "int8 levels", "int8": "int16 levels"}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("prefill", prefill_paths())
def test_decode_kernels_and_prefill_agree(fmt, prefill, tiny_f32, reference_goldens):
    # Up to 8 rows run the gemv kernels on the packed codes; a longer prompt runs the prefill path
    # (float32 activations into the GEMM of expanded codes) and must agree within the decode kernels'
    # activation rounding. The integer kernels (panels) serve both with one product.
    model = load_quantized(tiny_f32, fmt, prefill == "integer")
    prompt = np.array([reference_goldens["g4_text_only"]["input_ids"]])
    assert prompt.shape[1] > 8
    prefill_logits = model(prompt).logits[0]
    few_rows = model(prompt[:, :8]).logits[0]
    error = _relative_rms([few_rows], [prefill_logits[:8]])
    if prefill == "integer":
        assert error == 0  # one kernel for every row count, the same levels and sums
    else:
        assert 0 < error <= ACTIVATION_ERROR[DECODE_LEVELS[fmt]]
    if fmt == "int8" and prefill == "float":
        # Decode steps over the KV cache pick what a full recomputation (prefill path) picks.
        generated = model.generate(prompt, max_new_tokens=4, eos_token_id=[])[0]
        for step in range(4):
            context = generated[None, : prompt.shape[1] + step]
            assert int(generated[prompt.shape[1] + step]) == int(np.argmax(model(context).logits[0, -1]))


def test_batched_decode_matches_single_rows(quantized_models, reference_goldens, reference_dir):
    model = quantized_models["int4"]
    names = ["g4_text_only", "g2_speech_system", "g1_short_audio"]
    width = max(len(reference_goldens[name]["input_ids"]) for name in names)
    batch = model.generate(**left_padded_batch(reference_goldens, reference_dir, names), max_new_tokens=8,
                           eos_token_id=[])
    for index, name in enumerate(names):
        alone = model.generate(**inputs_of(reference_goldens[name], reference_dir), max_new_tokens=8, eos_token_id=[])
        assert batch[index, width:].tolist() == alone[0, -8:].tolist()


# ------------------------------------------------------------------------------ save and load

@pytest.mark.parametrize("fmt", FORMATS)
def test_save_and_load_back_without_requantizing(fmt, quantized_models, tiny_bf16, tmp_path, reference_goldens,
                                                 reference_dir):
    model = quantized_models[fmt]
    folder = tmp_path / f"saved_{fmt}"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"] == model.quantization_config
    for name in ("generation_config.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                 "preprocessor_config.json"):
        assert (folder / name).read_bytes() == (tiny_bf16 / name).read_bytes()
    saved = Checkpoint(folder)
    names = set(saved.tensor_names())
    prefix = "language_model.model.layers.0.mlp.up_proj"
    assert prefix + ".qweight" in names and prefix + ".scales" in names and prefix + ".weight" not in names
    assert saved.dtype(prefix + ".qweight") == ("I8" if fmt == "int8" else "U8")
    assert saved.check_weights() == {"missing": [], "unexpected": [], "wrong_shape": [], "unsupported_dtype": []}

    loaded = Qwen2AudioForConditionalGeneration.from_pretrained(folder)
    assert loaded.quantization_config == model.quantization_config
    assert loaded.dtype == "bfloat16"
    packed_bytes = sum(np.asarray(codes).nbytes + np.asarray(scales).nbytes
                       for _, _, codes, scales in model._core.quantized_layers)
    if loaded._core.integer_kernels:
        # Repacked once into the integer kernels' panels (the file's pages are released).
        assert packed_bytes <= loaded._core.copied_weight_bytes < 1.2 * packed_bytes + 1_000_000
    else:
        # The packed tensors are used in place from the memory map: only small float vectors are copied.
        assert loaded._core.copied_weight_bytes < 1_000_000 < packed_bytes <= loaded._core.mapped_weight_bytes
    assert model._core.copied_weight_bytes >= packed_bytes  # quantized at load: codes were made in memory
    for name in GOLDEN_NAMES:
        inputs = inputs_of(reference_goldens[name], reference_dir)
        np.testing.assert_array_equal(loaded(**inputs).logits, model(**inputs).logits)
    # Asking again for the same format is fine; another format or group size is refused.
    Qwen2AudioForConditionalGeneration.from_pretrained(folder, quantization=fmt)
    other = "int4" if fmt == "int8" else "int8"
    with pytest.raises(ValueError, match=f"already quantized to {fmt}"):
        Qwen2AudioForConditionalGeneration.from_pretrained(folder, quantization=other)
    with pytest.raises(ValueError, match="group size 128"):
        Qwen2AudioForConditionalGeneration.from_pretrained(folder, quantization=fmt, quantization_group_size=64)


def test_loading_reads_the_stored_codes(quantized_models, tmp_path, reference_goldens):
    # Change one stored code in the saved file: the loaded model must see the change (a loader that
    # re-quantized from some other source, or ignored the file, would not).
    model = quantized_models["int8"]
    folder = tmp_path / "edited"
    model.save_pretrained(folder)
    saved = Checkpoint(folder)
    name = "language_model.lm_head.qweight"
    tensors = {key: np.array(saved[key]) for key in saved.tensor_names()}
    bf16 = {key for key in saved.tensor_names() if saved.dtype(key) == "BF16"}
    prompt = np.array([reference_goldens["g4_text_only"]["input_ids"]])
    before = Qwen2AudioForConditionalGeneration.from_pretrained(folder)(prompt).logits[0, -1]
    token = int(np.argmax(before))
    tensors[name][token] = np.int8(-127)  # that row of the head now pushes its logit far down
    del saved
    # A new file renamed over the old one: the old mapping stays valid until it is dropped.
    save_file(tensors, folder / "edited.tmp", bf16=bf16)
    (folder / "edited.tmp").replace(folder / "model.safetensors")
    after = Qwen2AudioForConditionalGeneration.from_pretrained(folder)(prompt).logits[0, -1]
    assert after[token] != before[token]
    others = np.arange(len(before)) != token
    np.testing.assert_array_equal(after[others], before[others])


def test_group_size_is_configurable(tiny_bf16):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, quantization="int4",
                                                               quantization_group_size=32)
    assert model.quantization_config["group_size"] == 32
    for _, kind, codes, scales in model._core.quantized_layers:
        in_features = np.asarray(codes).shape[1] * (2 if kind == "int4" else 1)
        assert np.asarray(scales).shape[1] == in_features // 32


def test_unquantized_models_save_as_they_are(bf16_model, tiny_bf16, tmp_path, reference_goldens):
    folder = tmp_path / "plain"
    bf16_model.save_pretrained(folder)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    prompt = np.array([reference_goldens["g4_text_only"]["input_ids"]])
    loaded = Qwen2AudioForConditionalGeneration.from_pretrained(folder)
    assert loaded.quantization_config is None
    np.testing.assert_array_equal(loaded(prompt).logits, bf16_model(prompt).logits)


# ------------------------------------------------------------------------------ bad arguments

@pytest.mark.parametrize("arguments, message", [
    ({"quantization": "int3"}, "quantization must be None, 'int8' or 'int4'"),
    ({"quantization": 8}, "quantization must be"),
    ({"quantization": "INT8"}, "quantization must be"),
    ({"quantization": "int8", "quantization_group_size": 48}, "multiple of 32"),
    ({"quantization": "int8", "quantization_group_size": 0}, "multiple of 32"),
    ({"quantization": "int4", "quantization_group_size": -32}, "multiple of 32"),
    ({"quantization": "int4", "quantization_group_size": True}, "multiple of 32"),
    ({"quantization": "int4", "quantization_group_size": 64.0}, "multiple of 32"),
    ({"quantization_group_size": 64}, "without quantization"),
])
def test_bad_quantization_arguments(arguments, message, tiny_bf16):
    with pytest.raises(ValueError, match=message):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, **arguments)


def test_foreign_or_broken_quantization_configs_are_refused(quantized_models, tmp_path):
    folder = tmp_path / "saved"
    quantized_models["int4"].save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for change, message in [({"quant_method": "gptq"}, "quant_method 'gptq' is not supported"),
                            ({"bits": 3}, "bits must be 4, 8 or 16"),
                            ({"group_size": 100}, "group_size must be a positive multiple of 32"),
                            ({"format_version": 9}, "format_version 9 is not supported")]:
        broken = dict(config, quantization_config={**config["quantization_config"], **change})
        (folder / "config.json").write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=message):
            Qwen2AudioForConditionalGeneration.from_pretrained(folder)
    # Packed tensors that do not match the config's layout are named.
    (folder / "config.json").write_text(json.dumps(dict(config, quantization_config={
        **config["quantization_config"], "bits": 8})))
    with pytest.raises(CheckpointError, match=r"layers\.0\.mlp\.up_proj\.qweight"):
        Qwen2AudioForConditionalGeneration.from_pretrained(folder)


def test_save_refuses_to_overwrite_its_own_source(quantized_models, tiny_bf16):
    with pytest.raises(ValueError, match="overwrite"):
        quantized_models["int8"].save_pretrained(tiny_bf16)
