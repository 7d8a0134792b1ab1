"""Ultravox v0.5 (second model family) against the goldens of fixie-ai's own code on the tiny checkpoint
in ../shared/reference/ultravox_tiny: processor (log-mel, chunking, audio_lens, placeholder expansion,
Llama 3.2 chat template and tokenizer), encoder, projector, merged embeddings, logits and 12 greedy
tokens, in float32 and bfloat16; then the Auto classes and bad input."""

from __future__ import annotations

import gzip
import json
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

import qwen2audio
from qwen2audio import UltravoxForConditionalGeneration, UltravoxProcessor, _core
from qwen2audio.checkpoint import Checkpoint
from qwen2audio.safetensors_writer import save_file
from test_quantization import ACTIVATION_ERROR, dequantize, prefill_paths

NAMES = ["u1_voice_default", "u2_system_text_audio", "u3_two_audios_equal_len", "u4_two_audios_batch_padded",
         "u5_long_chunked", "u6_short_audio", "u7_text_only"]
AUDIO_NAMES = [name for name in NAMES if name != "u7_text_only"]
# bfloat16, as test_model.py does for Qwen2-Audio: weights in BF16, each GEMM's inputs rounded to BF16,
# float32 accumulation. The encoder keeps test_model.py's absolute bound (measured worst here 0.011 on values
# up to 3.7). The tiny Ultravox scales o_proj/down_proj by 5, so its logits reach 12 (Qwen2-Audio's tiny: 3.1)
# and their BF16 error grows with them: measured worst 0.20 on logits up to 11.2 (1.8 %), 0.032 on audio
# embeddings up to 4.7 (0.7 %). Those are bounded by golden.json's own statement for bf16 compute, about
# 5e-2 relative to the largest value.
BF16_ENCODER_ATOL = 0.025
BF16_RTOL_OF_MAX = 5e-2  # golden.json tolerances["note"]
# A greedy token can only differ from the reference where the reference's top two are closer than the two
# logits' combined BF16 error (2 x 0.20 measured): u1, u2 and u6 have margins of 0.020-0.033.
BF16_FLIP_MARGIN = 0.5


def _materialize(reference: Path, dtype: str, destination: Path) -> Path:
    """A complete checkpoint folder as the README says: weights and tokenizer.json gunzipped, plus the
    tokenizer files."""
    source = reference / "ultravox_tiny"
    destination.mkdir(parents=True)
    with gzip.open(source / dtype / "model.safetensors.gz", "rb") as compressed, \
            open(destination / "model.safetensors", "wb") as out:
        shutil.copyfileobj(compressed, out)
    for name in ("config.json", "generation_config.json"):
        shutil.copy(source / dtype / name, destination / name)
    for item in (source / "tokenizer").iterdir():
        if item.name == "tokenizer.json.gz":
            with gzip.open(item, "rb") as compressed, open(destination / "tokenizer.json", "wb") as out:
                shutil.copyfileobj(compressed, out)
        else:
            shutil.copy(item, destination / item.name)
    return destination


@pytest.fixture(scope="session")
def ultravox_f32(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _materialize(reference_dir, "f32", tmp_path_factory.mktemp("ultravox") / "f32")


@pytest.fixture(scope="session")
def ultravox_bf16(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _materialize(reference_dir, "bf16", tmp_path_factory.mktemp("ultravox") / "bf16")


@pytest.fixture(scope="module")
def golden_file(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "ultravox_tiny" / "golden.json").read_text())


@pytest.fixture(scope="module")
def goldens(golden_file) -> dict[str, dict]:
    found = {golden["name"]: golden for golden in golden_file["goldens"]}
    assert sorted(found) == sorted(NAMES)
    return found


@pytest.fixture(scope="module")
def tolerances(golden_file) -> dict:
    return golden_file["tolerances"]


@pytest.fixture(scope="module")
def active_ids(reference_dir: Path) -> np.ndarray:
    return np.load(reference_dir / "ultravox_tiny" / "active_ids.npy")


@pytest.fixture(scope="module")
def model_f32(ultravox_f32) -> UltravoxForConditionalGeneration:
    return UltravoxForConditionalGeneration.from_pretrained(ultravox_f32, dtype="float32")


@pytest.fixture(scope="module")
def model_bf16(ultravox_bf16) -> UltravoxForConditionalGeneration:
    return UltravoxForConditionalGeneration.from_pretrained(ultravox_bf16, dtype="bfloat16")


@pytest.fixture(scope="module")
def processor(ultravox_f32) -> UltravoxProcessor:
    return UltravoxProcessor.from_pretrained(ultravox_f32)


def array(reference: Path, golden: dict, key: str) -> np.ndarray:
    return np.load(reference / "ultravox_tiny" / f"{golden['name']}.{key}.npy")


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as clip:
        assert clip.getsampwidth() == 2 and clip.getnchannels() == 1 and clip.getframerate() == 16000
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def golden_inputs(golden: dict, reference: Path) -> dict:
    """The reference processor's outputs, straight from the goldens (model parity independent of ours)."""
    inputs = {"input_ids": np.asarray([golden["input_ids"]], dtype=np.int64)}
    if golden["audio_cases"]:
        inputs["audio_values"] = array(reference, golden, "audio_values")
        inputs["audio_lens"] = np.asarray(golden["audio_lens"], dtype=np.int64)
        inputs["audio_token_start_idx"] = np.asarray(golden["audio_token_start_idx"], dtype=np.int64)
    return inputs


def processed(processor: UltravoxProcessor, golden: dict, reference: Path, golden_file: dict) -> dict:
    prompt = processor.apply_chat_template(golden["messages"], add_generation_prompt=golden["add_generation_prompt"],
                                           date_string=golden_file["chat_template_kwargs"]["date_string"])
    clips = [read_wav(reference / "audio" / f"{case}.wav") for case in golden["audio_cases"]]
    return processor(text=prompt, audio=clips or None)


# ---------------------------------------------------------------- processor and tokenizer


@pytest.mark.parametrize("name", NAMES)
def test_processor_matches_reference(name, goldens, reference_dir, processor, golden_file, tolerances):
    golden = goldens[name]
    prompt = processor.apply_chat_template(golden["messages"], add_generation_prompt=golden["add_generation_prompt"],
                                           date_string=golden_file["chat_template_kwargs"]["date_string"])
    assert prompt == golden["prompt"]
    inputs = processed(processor, golden, reference_dir, golden_file)
    assert inputs["input_ids"][0].tolist() == golden["input_ids"]
    assert inputs["input_ids"].shape[1] == golden["seq_len"]
    if not golden["audio_cases"]:
        assert "audio_values" not in inputs
        return
    assert inputs["audio_values"].shape == tuple(golden["audio_values_shape"])
    np.testing.assert_allclose(inputs["audio_values"], array(reference_dir, golden, "audio_values"),
                               rtol=0, atol=tolerances["audio_values"]["atol"])
    assert inputs["audio_lens"].tolist() == golden["audio_lens"]
    assert inputs["audio_token_len"].tolist() == golden["audio_token_len"]
    assert inputs["audio_token_start_idx"].tolist() == golden["audio_token_start_idx"]
    assert inputs["audio_batch_size"].tolist() == golden["audio_batch_size"]


def test_llama3_tokenizer_special_tokens(processor, golden_file):
    tokenizer = processor.tokenizer
    probes = golden_file["tokenizer"]["special_token_probe_ids"]
    text = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    assert tokenizer.encode(text, add_special_tokens=False) == probes[0]
    assert tokenizer.encode("<|python_tag|><|eom_id|><|finetune_right_pad_id|><|reserved_special_token_247|>",
                            add_special_tokens=False) == probes[1]
    assert tokenizer.eos_token_id == 128009 and tokenizer.bos_token_id == 128000


def test_audio_token_formula_is_the_cores(processor):
    for frames in (1, 15, 16, 17, 30, 309, 1700, 3000):
        assert processor.audio_token_count(frames) == -(-frames // 16)
        assert _core.ultravox_audio_token_count(frames, 8) == -(-frames // 16)


# ---------------------------------------------------------------- float32 model parity


@pytest.mark.parametrize("name", AUDIO_NAMES)
def test_encoder_and_projector_match_reference(name, goldens, reference_dir, model_f32, tolerances):
    golden = goldens[name]
    inputs = golden_inputs(golden, reference_dir)
    encoded = model_f32.audio_tower(inputs["audio_values"], inputs["audio_lens"])
    np.testing.assert_allclose(encoded, array(reference_dir, golden, "encoder_last_hidden_state"), rtol=0,
                               atol=tolerances["encoder_last_hidden_state"]["atol"])
    atol = tolerances["projector_output/audio_embeds"]["atol"]
    projected = model_f32.audio_embeddings(inputs["audio_values"], inputs["audio_lens"], all_rows=True)
    reference = array(reference_dir, golden, "projector_output")
    np.testing.assert_allclose(projected, reference.reshape(-1, reference.shape[-1]), rtol=0, atol=atol)
    embeds = model_f32.audio_embeddings(inputs["audio_values"], inputs["audio_lens"])
    np.testing.assert_allclose(embeds, array(reference_dir, golden, "audio_embeds"), rtol=0, atol=atol)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_embeds_and_logits_match_reference(name, goldens, reference_dir, model_f32, tolerances, active_ids):
    golden = goldens[name]
    inputs = golden_inputs(golden, reference_dir)
    embeds = model_f32.get_inputs_embeds(**inputs)[0]
    np.testing.assert_allclose(embeds, array(reference_dir, golden, "inputs_embeds"), rtol=0,
                               atol=tolerances["inputs_embeds"]["atol"])
    logits = model_f32(**inputs).logits[0]
    np.testing.assert_allclose(logits[:, active_ids], array(reference_dir, golden, "logits_active"), rtol=0,
                               atol=tolerances["logits"]["f32_compute_atol"])
    # Every other row of the tied head is zero in the tiny checkpoint, so those logits are exactly 0.
    inactive = np.ones(logits.shape[1], dtype=bool)
    inactive[active_ids] = False
    assert not logits[:, inactive].any()
    top5 = np.argsort(-logits[-1])[:5].tolist()
    assert top5 == [token for token, _ in golden["last_position_top5"]]


@pytest.mark.parametrize("name", NAMES)
def test_greedy_tokens_match_reference(name, goldens, reference_dir, model_f32):
    golden = goldens[name]
    inputs = golden_inputs(golden, reference_dir)
    sequences = model_f32.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert sequences[0, inputs["input_ids"].shape[1]:].tolist() == golden["greedy_new_tokens"]


@pytest.mark.parametrize("name", ["u2_system_text_audio", "u5_long_chunked", "u7_text_only"])
def test_processor_to_greedy_tokens_end_to_end(name, goldens, reference_dir, processor, model_f32, golden_file):
    golden = goldens[name]
    inputs = processed(processor, golden, reference_dir, golden_file)
    sequences = model_f32.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert sequences[0, inputs["input_ids"].shape[1]:].tolist() == golden["greedy_new_tokens"]


def test_return_tensors_pt_through_forward_and_generate(goldens, reference_dir, processor, model_f32, golden_file):
    """HF habits carry over: processor(..., return_tensors="pt") gives a BatchFeature of torch tensors, which the
    model takes as they are (cast to bfloat16 too) and answers in torch, equal to the NumPy path."""
    torch = pytest.importorskip("torch")
    from qwen2audio.processor import BatchFeature

    golden = goldens["u2_system_text_audio"]
    prompt = processor.apply_chat_template(golden["messages"], add_generation_prompt=golden["add_generation_prompt"],
                                           date_string=golden_file["chat_template_kwargs"]["date_string"])
    clips = [read_wav(reference_dir / "audio" / f"{case}.wav") for case in golden["audio_cases"]]
    as_numpy = processor(text=prompt, audio=clips)
    as_torch = processor(text=prompt, audio=clips, return_tensors="pt")
    assert isinstance(as_numpy, BatchFeature) and isinstance(as_torch, BatchFeature)
    assert list(as_torch) == list(as_numpy)
    for key, value in as_torch.items():
        assert isinstance(value, torch.Tensor), key
        np.testing.assert_array_equal(value.numpy(), as_numpy[key])
    logits = model_f32(**as_torch).logits
    assert isinstance(logits, torch.Tensor)
    np.testing.assert_array_equal(logits.numpy(), model_f32(**as_numpy).logits)
    sequences = model_f32.generate(**as_torch, max_new_tokens=12, eos_token_id=[])
    assert isinstance(sequences, torch.Tensor)
    assert sequences[0, as_torch.input_ids.shape[1]:].tolist() == golden["greedy_new_tokens"]
    assert as_torch.to(torch.bfloat16).audio_values.dtype == torch.bfloat16
    widened = model_f32(**as_torch).logits.numpy()  # bf16 features widened to float32 on the way in
    reference = model_f32(**{**as_numpy, "audio_values": as_torch.audio_values.float().numpy()}).logits
    np.testing.assert_array_equal(widened, reference)
    embeds = model_f32.get_inputs_embeds(**as_torch)
    assert isinstance(embeds, torch.Tensor) and embeds.shape[:2] == as_torch.input_ids.shape
    with pytest.raises(ValueError, match="return_tensors"):
        processor(text=prompt, audio=clips, return_tensors="tf")


# ---------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("name", NAMES)
def test_bf16_matches_reference_within_bf16_tolerance(name, goldens, reference_dir, model_bf16, active_ids):
    assert model_bf16.dtype == "bfloat16"
    golden = goldens[name]
    inputs = golden_inputs(golden, reference_dir)
    if golden["audio_cases"]:
        encoded = model_bf16.audio_tower(inputs["audio_values"], inputs["audio_lens"])
        assert np.abs(encoded - array(reference_dir, golden, "encoder_last_hidden_state")).max() <= BF16_ENCODER_ATOL
        embeds = model_bf16.audio_embeddings(inputs["audio_values"], inputs["audio_lens"])
        reference = array(reference_dir, golden, "audio_embeds")
        assert np.abs(embeds - reference).max() <= BF16_RTOL_OF_MAX * np.abs(reference).max()
    logits = model_bf16(**inputs).logits[0]
    reference = array(reference_dir, golden, "logits_active")
    deviation = np.abs(logits[:, active_ids] - reference).max()
    assert deviation <= BF16_RTOL_OF_MAX * np.abs(reference).max()
    assert deviation > 0  # it really computed in bfloat16


@pytest.mark.parametrize("name", NAMES)
def test_bf16_greedy_tokens_match_reference_up_to_near_ties(name, goldens, reference_dir, model_bf16, model_f32):
    """Identical to the reference's 12 tokens, except that a reference step whose top two logits are closer
    than BF16_FLIP_MARGIN may go the other way (then the rest follows another text): the f32 model, equal to
    the reference within 1e-3, shows the margin at the first differing step."""
    golden = goldens[name]
    inputs = golden_inputs(golden, reference_dir)
    prompt = inputs["input_ids"].shape[1]
    tokens = model_bf16.generate(**inputs, max_new_tokens=12, eos_token_id=[])[0, prompt:].tolist()
    expected = golden["greedy_new_tokens"]
    if tokens == expected:
        return
    step = next(index for index, (got, want) in enumerate(zip(tokens, expected)) if got != want)
    assert golden["greedy_min_top1_margin"] < BF16_FLIP_MARGIN
    prefix = np.asarray([golden["input_ids"] + expected[:step]], dtype=np.int64)
    last = model_f32(**{**inputs, "input_ids": prefix}).logits[0, -1]
    assert last[expected[step]] - last[tokens[step]] < BF16_FLIP_MARGIN


@pytest.mark.parametrize("name", [name for name in NAMES if name not in ("u1_voice_default", "u2_system_text_audio",
                                                                         "u6_short_audio")])
def test_bf16_greedy_tokens_match_reference(name, goldens, reference_dir, model_bf16):
    # The examples without a near-tie (min top-1 margin 0.037-1.24) keep every token.
    golden = goldens[name]
    inputs = golden_inputs(golden, reference_dir)
    sequences = model_bf16.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert sequences[0, inputs["input_ids"].shape[1]:].tolist() == golden["greedy_new_tokens"]


# ---------------------------------------------------------------- API and bad input


def test_auto_classes_pick_ultravox_from_config(ultravox_f32):
    assert isinstance(qwen2audio.AutoModel.from_pretrained(ultravox_f32), UltravoxForConditionalGeneration)
    assert isinstance(qwen2audio.AutoModelForCausalLM.from_pretrained(ultravox_f32), UltravoxForConditionalGeneration)
    assert isinstance(qwen2audio.AutoProcessor.from_pretrained(ultravox_f32), UltravoxProcessor)
    assert qwen2audio.AutoTokenizer.from_pretrained(ultravox_f32).eos_token == "<|eot_id|>"
    for kind in (qwen2audio.AutoConfig, qwen2audio.AutoFeatureExtractor):  # kinds Ultravox has no class of
        with pytest.raises(ValueError, match="Ultravox checkpoints have no separate"):
            kind.from_pretrained(ultravox_f32)


def test_a_processor_only_folder_names_its_family(ultravox_f32, tiny_f32, tmp_path):
    """Without config.json, the processor_class of processor_config.json picks the family."""
    for source, expected in ((ultravox_f32, UltravoxProcessor), (tiny_f32, qwen2audio.Qwen2AudioProcessor)):
        folder = tmp_path / expected.__name__
        shutil.copytree(source, folder)
        (folder / "config.json").unlink()
        (folder / "processor_config.json").write_text(json.dumps({"processor_class": expected.__name__}))
        assert isinstance(qwen2audio.AutoProcessor.from_pretrained(folder), expected)


def test_each_family_refuses_the_others_folder(ultravox_f32, tiny_f32):
    with pytest.raises(qwen2audio.ConfigError, match="ultravox"):
        qwen2audio.Qwen2AudioForConditionalGeneration.from_pretrained(ultravox_f32)
    with pytest.raises(qwen2audio.ConfigError, match="not 'ultravox'"):
        UltravoxForConditionalGeneration.from_pretrained(tiny_f32)


def test_cuda_is_refused_clearly(ultravox_f32):
    with pytest.raises(ValueError, match="CPU only"):
        UltravoxForConditionalGeneration.from_pretrained(ultravox_f32, device="cuda")


def test_bad_input_is_a_clear_error(model_f32, processor, goldens, reference_dir):
    golden = goldens["u1_voice_default"]
    inputs = golden_inputs(golden, reference_dir)
    with pytest.raises(ValueError, match="audio_token_start_idx"):
        model_f32(inputs["input_ids"], audio_values=inputs["audio_values"], audio_lens=inputs["audio_lens"])
    with pytest.raises(ValueError, match="do not fit"):
        model_f32(**{**inputs, "audio_token_start_idx": np.asarray([50])})
    with pytest.raises(ValueError, match="audio_lens"):
        model_f32(**{**inputs, "audio_lens": np.asarray([400])})
    with pytest.raises(ValueError, match="non-finite"):
        bad = inputs["audio_values"].copy()
        bad[0, 0, 0] = np.nan
        model_f32(**{**inputs, "audio_values": bad})
    with pytest.raises(ValueError, match="vocabulary"):
        model_f32(np.asarray([[128256]]))
    with pytest.raises(ValueError, match="placeholders"):
        processor(text="<|audio|> and <|audio|>", audio=[np.zeros(1600, dtype=np.float32)])
    with pytest.raises(ValueError, match="16000 Hz"):
        processor(text="<|audio|>", audio=[np.zeros(1600, dtype=np.float32)], sampling_rate=8000)


def test_session_continues_a_chat(model_f32, goldens, reference_dir):
    golden = goldens["u7_text_only"]
    ids = np.asarray([golden["input_ids"]], dtype=np.int64)
    session = _core.Session(model_f32._core, 1)
    session.append(ids[:, :10])
    session.append(ids[:, 10:])
    assert session.generate(12)[0].tolist() == golden["greedy_new_tokens"]


# ---------------------------------------------------------------- weight-only quantization

DECODER_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("prefill", prefill_paths())
def test_quantized_ultravox_computes_the_model_of_its_dequantized_weights(fmt, prefill, ultravox_f32, tmp_path,
                                                                          goldens, reference_dir):
    # The rule Qwen2-Audio follows: the decoder layers' projections (the tied head stays the embedding);
    # the encoder and projector are not touched. With float32 activations the quantized engine computes
    # exactly the float32 model of its decoded weights (within the float32 tolerance of the goldens);
    # with the integer prefill, within its activation rounding (as test_quantization.py bounds it).
    model = UltravoxForConditionalGeneration.from_pretrained(ultravox_f32, dtype="float32", quantization=fmt,
                                                             quantization_group_size=32)
    if prefill == "float":
        model._core = _core.UltravoxModel.load(ultravox_f32, dtype="float32", quantization=fmt,
                                               quantization_group_size=32, integer_kernels=False)
    layers = model._core.quantized_layers
    assert {prefix for prefix, *_ in layers} == {f"language_model.model.layers.{index}.{projection}"
                                                 for index in range(2) for projection in DECODER_PROJECTIONS}
    checkpoint = Checkpoint(ultravox_f32)
    tensors = {name: np.array(checkpoint[name]) for name in checkpoint.tensor_names()}
    for prefix, kind, codes, scales in layers:
        tensors[prefix + ".weight"] = dequantize(np.asarray(codes).view(np.uint8), np.asarray(scales), kind, 32)
    folder = tmp_path / "dequantized"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors")
    for item in ultravox_f32.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, folder / item.name)
    plain = UltravoxForConditionalGeneration.from_pretrained(folder, dtype="float32")
    quantized, reference = [], []
    for name in NAMES:
        inputs = golden_inputs(goldens[name], reference_dir)
        quantized.append(model(**inputs).logits)
        reference.append(plain(**inputs).logits)
        if prefill == "float":
            np.testing.assert_allclose(quantized[-1], reference[-1], atol=1e-3, rtol=0)
    if prefill == "integer":
        error = sum(float(((q - r) ** 2).sum()) for q, r in zip(quantized, reference))
        assert 0 < np.sqrt(error / sum(float((r ** 2).sum()) for r in reference)) <= ACTIVATION_ERROR["int8 levels"]


def test_decode_batch_serves_ultravox_requests_together(model_f32, goldens, reference_dir):
    # The continuous-batching engine runs over the model interface: three golden prompts (two with audio)
    # decoded in one batch give each one's reference tokens.
    names = ["u3_two_audios_equal_len", "u7_text_only", "u4_two_audios_batch_padded"]
    batch = _core.DecodeBatch(model_f32._core, 3, 256)
    slots = {}
    for name in names:
        inputs = golden_inputs(goldens[name], reference_dir)
        session = _core.Session(model_f32._core, 1)
        session.append(inputs["input_ids"], None, inputs.get("audio_values"), None, inputs.get("audio_lens"),
                       inputs.get("audio_token_start_idx"))
        slot = batch.admit(session, 12)
        slots[slot] = [batch.tokens(slot)[-1]]
    while batch.stepping:
        for slot, token, _ in batch.step():
            slots[slot].append(token)
    for slot, name in enumerate(names):
        assert slots[slot] == goldens[name]["greedy_new_tokens"], name
