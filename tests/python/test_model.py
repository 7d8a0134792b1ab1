"""The model against the golden outputs of HF transformers on the tiny checkpoint (float32 compute).

Parity: encoder last hidden state, projected audio features, logits and 12 greedy tokens of four
prompts (one short clip, speech with a system prompt, two clips, text only), in float32 and in
bfloat16; then generation behaviour (batching, sampling, sessions, streaming) and bad input.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from qwen2audio import CheckpointError, Qwen2AudioForConditionalGeneration

AUDIO_TOKEN = 151646
PAD = 151643


def _load_goldens(reference: Path) -> list[dict]:
    return json.loads((reference / "tiny_model" / "golden.json").read_text())["goldens"]


GOLDEN_NAMES = ["g1_short_audio", "g2_speech_system", "g3_two_audios", "g4_text_only"]


@pytest.fixture(scope="module")
def goldens(reference_dir: Path) -> dict[str, dict]:
    found = {golden["name"]: golden for golden in _load_goldens(reference_dir)}
    assert sorted(found) == sorted(GOLDEN_NAMES)
    return found


@pytest.fixture(scope="module")
def tolerances(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "tiny_model" / "golden.json").read_text())["tolerances"]


@pytest.fixture(scope="module")
def active_ids(reference_dir: Path) -> np.ndarray:
    return np.load(reference_dir / "tiny_model" / "active_ids.npy")


@pytest.fixture(scope="module")
def model_f32(tiny_f32: Path) -> Qwen2AudioForConditionalGeneration:
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32")


@pytest.fixture(scope="module")
def model_bf16(tiny_bf16: Path) -> Qwen2AudioForConditionalGeneration:
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, dtype="bfloat16")


def inputs_of(golden: dict, reference: Path) -> dict:
    inputs = {"input_ids": np.array([golden["input_ids"]], dtype=np.int64)}
    if golden["audio_cases"]:
        mel = reference / "mel"
        inputs["input_features"] = np.stack([np.load(mel / f"{case}.input_features.npy") for case in golden["audio_cases"]])
        inputs["feature_attention_mask"] = np.stack(
            [np.load(mel / f"{case}.feature_attention_mask.npy") for case in golden["audio_cases"]])
    return inputs


def golden_array(reference: Path, golden: dict, key: str) -> np.ndarray:
    return np.load(reference / "tiny_model" / golden[key])


# ---------------------------------------------------------------- float32 parity

@pytest.mark.parametrize("name", GOLDEN_NAMES[:3])
def test_f32_encoder_and_audio_features_match_reference(name, goldens, reference_dir, model_f32, tolerances):
    golden = goldens[name]
    inputs = inputs_of(golden, reference_dir)
    encoded = model_f32.audio_encoder(inputs["input_features"], inputs["feature_attention_mask"])
    expected = golden_array(reference_dir, golden, "encoder_last_hidden_state")
    assert encoded.shape == tuple(golden["encoder_shape"]) and encoded.dtype == np.float32
    np.testing.assert_allclose(encoded, expected, atol=tolerances["encoder_last_hidden_state"]["f32_weights_f32_compute_atol"],
                               rtol=tolerances["encoder_last_hidden_state"]["rtol"])

    features = model_f32.encode_audio(inputs["input_features"], inputs["feature_attention_mask"])
    expected = golden_array(reference_dir, golden, "audio_features")
    assert features.shape == tuple(golden["audio_features_shape"])
    assert np.abs(features - expected).max() <= tolerances["audio_features"]["atol"]
    assert model_f32.audio_token_counts(inputs["feature_attention_mask"]).tolist() == golden["num_audio_tokens"]


# Samples of clips whose valid mel frames are 1, 2, 3 (the smallest), odd and even, 5 s, 30 s and
# beyond (truncated to the window).
TRIMMED_CASE_SAMPLES = [1, 160, 480, 4321, 16000 * 5, 16000 * 5 + 160, 480000, 16000 * 31]


def _encoder_cases(model) -> tuple[np.ndarray, np.ndarray]:
    from qwen2audio import WhisperFeatureExtractor

    rng = np.random.default_rng(7)
    clips = [(0.1 * rng.standard_normal(samples)).astype(np.float32) for samples in TRIMMED_CASE_SAMPLES]
    extractor = WhisperFeatureExtractor(feature_size=128)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 31 s clip is truncated on purpose
        batch = extractor(clips, sampling_rate=16000, padding="max_length", return_attention_mask=True)
    return np.asarray(batch["input_features"]), np.asarray(batch["attention_mask"])


@pytest.mark.parametrize("which", ["model_f32", "model_bf16"])
def test_encoder_over_attended_positions_equals_the_full_window(which, request):
    """The encoder stops at each clip's attended positions and packs the clips of a batch into one
    sequence; the reference computes the whole 30 s window of every clip. Their audio tokens agree."""
    model = request.getfixturevalue(which)
    features, mask = _encoder_cases(model)
    frames = mask.sum(axis=1)
    assert frames.min() <= 1 and frames.max() == 3000 and (frames % 2 == 1).any()
    counts = model.audio_token_counts(mask)
    full = model._core.audio_embeddings(features, mask, full_window=True)
    packed = model._core.audio_embeddings(features, mask)
    assert packed.shape == full.shape == (counts.sum(), model.config.text_config.hidden_size)
    scale = np.abs(full).max()
    # The same arithmetic per position; only the GEMMs' blocking may differ with the row count.
    tolerance = 2e-6 if which == "model_f32" else 1e-2
    np.testing.assert_allclose(packed, full, rtol=0, atol=tolerance * scale)
    one_by_one = np.concatenate([model._core.audio_embeddings(features[i:i + 1], mask[i:i + 1])
                                 for i in range(len(features))])
    np.testing.assert_allclose(packed, one_by_one, rtol=0, atol=tolerance * scale)
    # What the public API returns is the packed pass.
    np.testing.assert_array_equal(model.encode_audio(features, mask), packed)


def test_encoder_passes_and_forward_reuse_one_workspace(tiny_f32, goldens, reference_dir):
    """Calls one after another borrow the model's one scratch workspace (slots grown by a large call
    stay for the next), and what a call leaves in it never reaches the next call's result."""
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32", num_threads=2)
    fresh = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32", num_threads=2)
    features, mask = _encoder_cases(model)
    inputs = inputs_of(goldens["g3_two_audios"], reference_dir)
    assert model._core.workspaces_created == 0
    model._core.audio_embeddings(features, mask, full_window=True)  # the largest call first
    short = model.encode_audio(features[:1], mask[:1])
    logits = model(**inputs).logits
    generated = model.generate(**inputs, max_new_tokens=4, eos_token_id=[])
    assert model._core.workspaces_created == 1
    np.testing.assert_array_equal(short, fresh.encode_audio(features[:1], mask[:1]))
    np.testing.assert_array_equal(logits, fresh(**inputs).logits)
    np.testing.assert_array_equal(generated, fresh.generate(**inputs, max_new_tokens=4, eos_token_id=[]))


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_f32_logits_match_reference(name, goldens, reference_dir, model_f32, tolerances, active_ids):
    golden = goldens[name]
    output = model_f32(**inputs_of(golden, reference_dir))
    logits = output.logits
    assert logits.shape == (1, *golden["logits_full_shape"]) and logits.dtype == np.float32
    assert output["logits"] is logits
    expected = golden_array(reference_dir, golden, "logits_active")
    assert np.abs(logits[0][:, active_ids] - expected).max() <= tolerances["logits"]["f32_compute_atol"]
    # Every other row of lm_head is zero in this checkpoint, so are those logits.
    inactive = np.ones(logits.shape[-1], dtype=bool)
    inactive[active_ids] = False
    assert np.abs(logits[0][:, inactive]).max() <= 1e-6
    top5 = np.argsort(-logits[0, -1])[:5]
    assert top5.tolist() == [token for token, _ in golden["last_position_top5"]]


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_f32_greedy_tokens_match_reference(name, goldens, reference_dir, model_f32):
    golden = goldens[name]
    inputs = inputs_of(golden, reference_dir)
    sequences = model_f32.generate(**inputs, max_new_tokens=12, do_sample=False, eos_token_id=[])
    prompt = inputs["input_ids"]
    assert sequences.dtype == np.int64 and sequences.shape == (1, prompt.shape[1] + 12)
    np.testing.assert_array_equal(sequences[:, : prompt.shape[1]], prompt)
    assert sequences[0, prompt.shape[1]:].tolist() == golden["greedy_new_tokens"]


def test_float32_from_a_bf16_checkpoint_is_exact(tiny_bf16, goldens, reference_dir, tolerances, active_ids):
    # The tiny weights are all BF16-representable, so converting them at load loses nothing.
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, dtype="float32")
    assert model.dtype == "float32"
    golden = goldens["g3_two_audios"]
    logits = model(**inputs_of(golden, reference_dir)).logits
    expected = golden_array(reference_dir, golden, "logits_active")
    assert np.abs(logits[0][:, active_ids] - expected).max() <= tolerances["logits"]["f32_compute_atol"]


# ---------------------------------------------------------------- bfloat16

# The bfloat16 path keeps weights in BF16 and rounds each GEMM's input activations to BF16 (what
# BF16 matrix hardware does), accumulating, normalising and adding residuals in float32. BF16
# keeps 8 significant bits: each rounding moves a value by up to 2^-9 relative (0.2 %). Through
# the conv stem, 2 encoder and 2 decoder layers and the projector, the measured worst deviations
# are 0.0097 on the encoder output (values up to 5.6), 0.0096 on the audio features and 0.020 on
# logits (values up to 3.1): about 0.6 % of the largest value. The bounds below are 2.5x those,
# still far below a real error (a wrong mask or position moves logits by 0.1-1).
BF16_ENCODER_ATOL = 0.025
BF16_LOGITS_ATOL = 0.05


def test_bf16_checkpoint_computes_in_bf16_in_place(tiny_bf16, tiny_f32, model_bf16):
    assert model_bf16.dtype == "bfloat16"
    assert Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16).dtype == "bfloat16"  # auto
    assert Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32).dtype == "float32"  # auto
    # Matrices are read from the mapped file; only small float32 vectors are copied.
    assert model_bf16._core.mapped_weight_bytes > 30_000_000
    assert model_bf16._core.copied_weight_bytes < 1_000_000


def check_bf16_against_reference(model, golden: dict, reference_dir: Path, active_ids: np.ndarray):
    """Encoder, audio features and logits of a bfloat16 model (CPU or GPU) against a HF float32 golden,
    within bfloat16's tolerances; returns the inputs and the first row's logits for further checks."""
    inputs = inputs_of(golden, reference_dir)
    if golden["audio_cases"]:
        encoded = model.audio_encoder(inputs["input_features"], inputs["feature_attention_mask"])
        assert np.abs(encoded - golden_array(reference_dir, golden, "encoder_last_hidden_state")).max() <= BF16_ENCODER_ATOL
        features = model.encode_audio(inputs["input_features"], inputs["feature_attention_mask"])
        assert np.abs(features - golden_array(reference_dir, golden, "audio_features")).max() <= BF16_ENCODER_ATOL
    logits = model(**inputs).logits[0]
    deviation = np.abs(logits[:, active_ids] - golden_array(reference_dir, golden, "logits_active")).max()
    assert deviation <= BF16_LOGITS_ATOL
    assert deviation > 0  # it really computed in bfloat16, not float32
    return inputs, logits


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_bf16_matches_reference_within_bf16_tolerance(name, goldens, reference_dir, model_bf16, active_ids):
    check_bf16_against_reference(model_bf16, goldens[name], reference_dir, active_ids)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_bf16_greedy_tokens_match_reference(name, goldens, reference_dir, model_bf16):
    golden = goldens[name]
    inputs = inputs_of(golden, reference_dir)
    sequences = model_bf16.generate(**inputs, max_new_tokens=12, eos_token_id=[])
    assert sequences[0, inputs["input_ids"].shape[1]:].tolist() == golden["greedy_new_tokens"]


def test_bf16_from_an_f32_checkpoint_equals_the_bf16_checkpoint(tiny_f32, goldens, reference_dir, model_bf16):
    converted = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="bfloat16")
    inputs = inputs_of(goldens["g1_short_audio"], reference_dir)
    np.testing.assert_array_equal(converted(**inputs).logits, model_bf16(**inputs).logits)


def test_tied_word_embeddings_follow_the_config(tiny_bf16, tmp_path, goldens, model_bf16):
    # A tied model has no lm_head of its own: logits come from embed_tokens. Two checkpoints, one
    # tied without a head and one untied whose head is a copy of the embedding, must agree.
    from qwen2audio import Checkpoint
    from qwen2audio.safetensors_writer import save_file

    checkpoint = Checkpoint(tiny_bf16)
    tensors = {name: np.array(checkpoint[name]) for name in checkpoint.tensor_names()}
    config = json.loads((tiny_bf16 / "config.json").read_text())
    embedding = tensors["language_model.model.embed_tokens.weight"]
    folders = {}
    for tied in (True, False):
        folder = tmp_path / ("tied" if tied else "copied_head")
        folder.mkdir()
        variant = dict(tensors)
        if tied:
            del variant["language_model.lm_head.weight"]
        else:
            variant["language_model.lm_head.weight"] = embedding.copy()
        save_file(variant, folder / "model.safetensors", bf16=set(variant))
        config["text_config"]["tie_word_embeddings"] = tied
        (folder / "config.json").write_text(json.dumps(config))
        folders[tied] = folder
    prompt = np.array([goldens["g4_text_only"]["input_ids"]])
    tied_logits = Qwen2AudioForConditionalGeneration.from_pretrained(folders[True])(prompt).logits
    copied_logits = Qwen2AudioForConditionalGeneration.from_pretrained(folders[False])(prompt).logits
    np.testing.assert_array_equal(tied_logits, copied_logits)
    assert np.abs(tied_logits - model_bf16(prompt).logits).max() > 0.1  # the real head differs


# ---------------------------------------------------------------- batching and generation

def left_padded_batch(goldens: dict, reference: Path, names: list[str]) -> dict:
    rows = [goldens[name] for name in names]
    width = max(len(row["input_ids"]) for row in rows)
    ids = np.full((len(rows), width), PAD, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    features, feature_masks = [], []
    for index, row in enumerate(rows):
        ids[index, width - len(row["input_ids"]):] = row["input_ids"]
        mask[index, width - len(row["input_ids"]):] = 1
        audio = inputs_of(row, reference)
        if "input_features" in audio:
            features.extend(audio["input_features"])
            feature_masks.extend(audio["feature_attention_mask"])
    return {"input_ids": ids, "attention_mask": mask, "input_features": np.stack(features),
            "feature_attention_mask": np.stack(feature_masks)}


@pytest.mark.parametrize("which", ["model_f32", "model_bf16"])
def test_left_padded_batch_generates_as_one_by_one(which, request, goldens, reference_dir):
    model = request.getfixturevalue(which)
    names = GOLDEN_NAMES
    batch = left_padded_batch(goldens, reference_dir, names)
    sequences = model.generate(**batch, max_new_tokens=12, eos_token_id=[])
    width = batch["input_ids"].shape[1]
    for index, name in enumerate(names):
        alone = model.generate(**inputs_of(goldens[name], reference_dir), max_new_tokens=12, eos_token_id=[])
        assert sequences[index, width:].tolist() == alone[0, -12:].tolist() == goldens[name]["greedy_new_tokens"]


@pytest.mark.parametrize("quantization,read_order", [(None, "rows"), (None, "tiles"), ("int8", None), ("int4", None)])
def test_prompt_alone_and_in_a_batch_get_the_same_logits_bit_for_bit(quantization, read_order, tiny_bf16,
                                                                       monkeypatch):
    # A one-row BF16 decode step reads its weights in the order measured at load (either, from run to
    # run, where the two are close), a batch reads tiles: neither may change the logits' bits, or a
    # rerun or another batch size could flip a near tie of the greedy choice; the quantized formats'
    # panels serve one row and four alike. Prompts of one length, so the batch has no padding. (On CPUs
    # without AVX512-BF16 BF16 has one order; the batch still holds.)
    if read_order is not None:
        monkeypatch.setenv("QWEN2AUDIO_READ_ORDER", read_order)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_bf16, quantization=quantization)
    prompts = np.random.default_rng(7).integers(10, 1000, size=(4, 20))

    def logits(ids: np.ndarray) -> np.ndarray:
        out = model.generate(input_ids=ids, max_new_tokens=6, eos_token_id=[], return_dict_in_generate=True,
                             output_logits=True)
        return np.stack([np.asarray(step) for step in out.logits], axis=1)

    together = logits(prompts)
    for index in range(len(prompts)):
        alone = logits(prompts[index:index + 1])[0]
        assert alone.tobytes() == together[index].tobytes(), f"row {index}"


def test_left_padded_forward_matches_single_rows(goldens, reference_dir, model_f32):
    names = ["g4_text_only", "g1_short_audio"]
    batch = left_padded_batch(goldens, reference_dir, names)
    logits = model_f32(**batch).logits
    for index, name in enumerate(names):
        alone = model_f32(**inputs_of(goldens[name], reference_dir)).logits[0]
        np.testing.assert_allclose(logits[index, -alone.shape[0]:], alone, atol=1e-4)


def test_eos_stops_rows_and_pads_finished_ones(goldens, reference_dir, model_f32):
    batch = left_padded_batch(goldens, reference_dir, ["g2_speech_system", "g3_two_audios"])
    # 66066 comes 7th for g2 and 5th for g3 (see the greedy goldens): g3 stops first, then pads.
    sequences = model_f32.generate(**batch, max_new_tokens=12, eos_token_id=66066, pad_token_id=7)
    new = sequences[:, batch["input_ids"].shape[1]:]
    assert new.shape == (2, 7)  # generation ends once every row has finished
    assert new[0].tolist() == goldens["g2_speech_system"]["greedy_new_tokens"][:7]
    assert new[1].tolist() == goldens["g3_two_audios"]["greedy_new_tokens"][:5] + [7, 7]


def test_eos_defaults_come_from_generation_config(model_f32, goldens):
    assert model_f32.generation_config.eos_token_id == [151645, 151643]
    options = model_f32._generation_options(10, max_new_tokens=None, max_length=None, do_sample=None,
                                            temperature=None, top_k=None, top_p=None, repetition_penalty=None,
                                            seed=None, eos_token_id=None, pad_token_id=None)
    assert options["eos_token_ids"] == [151645, 151643] and options["pad_token_id"] == PAD
    assert options["max_new_tokens"] == 10  # transformers' max_length of 20 counts the prompt
    assert options["do_sample"] is False


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(goldens, model_f32):
    prompt = goldens["g4_text_only"]["input_ids"]
    first = model_f32.generate(prompt, max_new_tokens=20, do_sample=True, top_k=50, seed=1234, eos_token_id=[])
    again = model_f32.generate(prompt, max_new_tokens=20, do_sample=True, top_k=50, seed=1234, eos_token_id=[])
    other = model_f32.generate(prompt, max_new_tokens=20, do_sample=True, top_k=50, seed=4321, eos_token_id=[])
    np.testing.assert_array_equal(first, again)
    assert first.tolist() != other.tolist()
    greedy_by_sampling = model_f32.generate(prompt, max_new_tokens=12, do_sample=True, top_k=1, seed=5, eos_token_id=[])
    assert greedy_by_sampling[0, -12:].tolist() == goldens["g4_text_only"]["greedy_new_tokens"]


def test_sampled_tokens_stay_inside_top_k_and_top_p(goldens, model_f32):
    prompt = np.array([goldens["g4_text_only"]["input_ids"]])
    logits = model_f32(prompt).logits[0, -1]
    top3 = set(np.argsort(-logits)[:3].tolist())
    for seed in range(20):
        token = model_f32.generate(prompt, max_new_tokens=1, do_sample=True, top_k=3, seed=seed)[0, -1]
        assert token in top3
    # A tiny top_p keeps only the most likely token.
    for seed in range(5):
        token = model_f32.generate(prompt, max_new_tokens=1, do_sample=True, top_k=0, top_p=1e-6, seed=seed)[0, -1]
        assert token == int(np.argmax(logits))


def _penalized_greedy_by_full_forward(model, inputs: dict, steps: int, penalty: float) -> list[int]:
    """Independent check of the KV cache and of the repetition penalty: recompute the whole
    sequence's logits every step and apply transformers' penalty in NumPy."""
    prompt = inputs["input_ids"][0].tolist()
    sequence = list(prompt)
    for _ in range(steps):
        scores = model(np.array([sequence]), input_features=inputs["input_features"],
                       feature_attention_mask=inputs["feature_attention_mask"]).logits[0, -1].astype(np.float64)
        seen = np.unique(sequence)
        scores[seen] = np.where(scores[seen] < 0, scores[seen] * penalty, scores[seen] / penalty)
        sequence.append(int(np.argmax(scores)))
    return sequence[len(prompt):]


def test_repetition_penalty_and_kv_cache_match_full_recomputation(goldens, reference_dir, model_f32):
    golden = goldens["g1_short_audio"]  # its greedy reply repeats itself after 5 tokens
    inputs = inputs_of(golden, reference_dir)
    expected = _penalized_greedy_by_full_forward(model_f32, inputs, 10, 1.5)
    generated = model_f32.generate(**inputs, max_new_tokens=10, repetition_penalty=1.5, eos_token_id=[])
    assert generated[0, -10:].tolist() == expected
    assert expected != golden["greedy_new_tokens"][:10]  # the penalty changed something


def test_streamer_receives_prompt_then_each_step(goldens, reference_dir, model_f32):
    class Recorder:
        def __init__(self):
            self.puts, self.ended = [], False

        def put(self, value):
            self.puts.append(np.array(value))

        def end(self):
            self.ended = True

    golden = goldens["g1_short_audio"]
    inputs = inputs_of(golden, reference_dir)
    recorder = Recorder()
    sequences = model_f32.generate(**inputs, max_new_tokens=12, eos_token_id=[], streamer=recorder)
    assert recorder.ended
    np.testing.assert_array_equal(recorder.puts[0], inputs["input_ids"])
    assert [int(step[0]) for step in recorder.puts[1:]] == golden["greedy_new_tokens"] == sequences[0, -12:].tolist()
    seen = []
    model_f32.generate(**inputs, max_new_tokens=3, eos_token_id=[], streamer=lambda tokens: seen.append(tokens.tolist()))
    assert seen == [[token] for token in golden["greedy_new_tokens"][:3]]


# ---------------------------------------------------------------- sessions (KV cache across turns)

def test_session_continues_a_conversation_without_recomputing(goldens, reference_dir, model_f32):
    first, second = goldens["g1_short_audio"], goldens["g4_text_only"]
    first_inputs = inputs_of(first, reference_dir)
    session = model_f32.start_session()
    reply = session.generate(**first_inputs, max_new_tokens=5, eos_token_id=[])
    assert reply.tolist() == [first["greedy_new_tokens"][:5]]
    assert len(session) == len(first["input_ids"]) + 5
    # The next turn is appended to the cache; the answer equals generating from the whole text.
    turn = second["input_ids"]
    answer = session.generate(turn, max_new_tokens=6, eos_token_id=[])
    whole = np.concatenate([first_inputs["input_ids"][0], reply[0], turn])[None]
    expected = model_f32.generate(whole, input_features=first_inputs["input_features"],
                                  feature_attention_mask=first_inputs["feature_attention_mask"],
                                  max_new_tokens=6, eos_token_id=[])
    assert answer[0].tolist() == expected[0, -6:].tolist()
    np.testing.assert_array_equal(session.tokens[0], np.concatenate([whole[0], answer[0]]))

    # Rewinding to the first prompt reproduces the first reply, directly or after re-appending.
    session.truncate(len(first["input_ids"]))
    assert len(session) == len(first["input_ids"])
    assert session.generate(max_new_tokens=5, eos_token_id=[]).tolist() == reply.tolist()
    session.truncate(len(first["input_ids"]) - 2)
    again = session.generate(first_inputs["input_ids"][:, -2:], max_new_tokens=5, eos_token_id=[])
    assert again.tolist() == reply.tolist()
    np.testing.assert_array_equal(session.tokens[0], np.concatenate([first_inputs["input_ids"][0], reply[0]]))
    session.reset()
    assert len(session) == 0
    with pytest.raises(ValueError, match="cannot truncate"):
        session.truncate(3)


def test_session_generate_continues_from_its_pending_token(goldens, model_f32):
    golden = goldens["g4_text_only"]
    session = model_f32.start_session()
    part = session.generate(golden["input_ids"], max_new_tokens=4, eos_token_id=[])
    rest = session.generate(max_new_tokens=8, eos_token_id=[])
    assert part[0].tolist() + rest[0].tolist() == golden["greedy_new_tokens"]


# ---------------------------------------------------------------- concurrency and interruption

def test_two_models_and_two_threads_do_not_interfere(goldens, reference_dir, model_f32, model_bf16):
    jobs = [(model_f32, name) for name in GOLDEN_NAMES] + [(model_bf16, name) for name in GOLDEN_NAMES]
    results: dict[int, list[int]] = {}

    def run(index: int, model, name: str) -> None:
        inputs = inputs_of(goldens[name], reference_dir)
        results[index] = model.generate(**inputs, max_new_tokens=12, eos_token_id=[])[0, -12:].tolist()

    threads = [threading.Thread(target=run, args=(index, model, name)) for index, (model, name) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, (_, name) in enumerate(jobs):
        assert results[index] == goldens[name]["greedy_new_tokens"]


def test_thread_count_does_not_change_results(tiny_f32, goldens, reference_dir):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32", num_threads=1)
    assert model.num_threads == 1
    golden = goldens["g2_speech_system"]
    assert model.generate(**inputs_of(golden, reference_dir), max_new_tokens=12,
                          eos_token_id=[])[0, -12:].tolist() == golden["greedy_new_tokens"]
    model.num_threads = 2
    assert model.num_threads == 2


_THREADS_AFTER_TORCH = """
import sys, torch
torch.set_num_threads(1)  # what importing torch does by itself on some machines: this thread's OpenMP setting is 1
from qwen2audio import Qwen2AudioForConditionalGeneration, _core
model = Qwen2AudioForConditionalGeneration.from_pretrained(sys.argv[1], dtype="float32")
print(model.num_threads, _core.cpu_info()["physical_cores"])
"""


@pytest.mark.parametrize("omp_num_threads", [None, "3", "5,2"])
def test_default_thread_count_ignores_what_torch_set(tiny_f32, omp_num_threads, monkeypatch):
    """The engine's default comes from the physical cores (or OMP_NUM_THREADS), not from the OpenMP
    setting another library in the process left on the calling thread."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    if omp_num_threads is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp_num_threads)
    output = subprocess.run([sys.executable, "-c", _THREADS_AFTER_TORCH, str(tiny_f32)], check=True,
                            capture_output=True, text=True).stdout.split()
    threads, cores = int(output[0]), int(output[1])
    expected = cores if omp_num_threads is None else int(omp_num_threads.split(",")[0])
    if expected == 1:
        pytest.skip("one physical core: the default cannot differ from torch's setting")
    assert threads == expected


def test_exception_from_a_streamer_stops_generation_and_keeps_the_session(goldens, model_f32):
    golden = goldens["g4_text_only"]
    session = model_f32.start_session()

    def stop_after_three(tokens, seen=[]):
        seen.append(int(tokens[0]))
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.generate(golden["input_ids"], max_new_tokens=12, eos_token_id=[], streamer=stop_after_three)
    assert session.tokens[0, -3:].tolist() == golden["greedy_new_tokens"][:3]
    assert session.generate(max_new_tokens=9, eos_token_id=[])[0].tolist() == golden["greedy_new_tokens"][3:]


def test_ctrl_c_interrupts_a_long_generation(goldens, model_f32):
    # A real SIGINT, as Ctrl-C sends it, from another process while the main thread is inside C++
    # with the GIL released; the engine must notice between tokens and raise. (A timer thread calling
    # _thread.interrupt_main() needs the GIL to fire, and under a loaded CI it missed the whole
    # generation more than once.) Python's own handler is put in place for the test, whatever an
    # earlier test's library left installed.
    session = model_f32.start_session()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = subprocess.Popen(["sh", "-c", f"sleep 0.3; kill -INT {os.getpid()}"])
    try:
        with pytest.raises(KeyboardInterrupt):
            session.generate(goldens["g4_text_only"]["input_ids"], max_new_tokens=8000, eos_token_id=[])
    finally:
        sender.wait()
        signal.signal(signal.SIGINT, previous)
    assert len(session) < 25 + 8000


# ---------------------------------------------------------------- bad input

def test_checkpoint_not_matching_config_lists_missing_tensors(tiny_f32, tmp_path):
    folder = tmp_path / "mismatch"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(tiny_f32 / "model.safetensors")
    config = json.loads((tiny_f32 / "config.json").read_text())
    config["audio_config"]["encoder_layers"] = 3
    config["text_config"]["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        Qwen2AudioForConditionalGeneration.from_pretrained(folder)
    message = str(error.value)
    assert "audio_tower.layers.2.fc1.weight" in message
    assert "language_model.model.layers.2.mlp.up_proj.weight" in message
    assert isinstance(error.value, ValueError)


def test_bad_load_arguments(tiny_f32):
    with pytest.raises(ValueError, match="dtype"):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float16")
    with pytest.raises(ValueError, match="num_threads"):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, num_threads=0)
    with pytest.raises(ValueError):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32.parent / "no_such_folder")


@pytest.mark.parametrize("bad_id", [-1, 151649, 10**12])
def test_token_ids_outside_the_vocabulary(bad_id, goldens, model_f32):
    ids = list(goldens["g4_text_only"]["input_ids"])
    ids[3] = bad_id
    with pytest.raises(ValueError, match=r"input_ids\[0, 3\].*outside the vocabulary"):
        model_f32(np.array([ids]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model_f32.generate(np.array([ids]), max_new_tokens=2)


def test_audio_placeholder_count_must_match_features(goldens, reference_dir, model_f32):
    inputs = inputs_of(goldens["g1_short_audio"], reference_dir)
    ids = inputs["input_ids"]
    one_short = np.delete(ids, np.flatnonzero(ids[0] == AUDIO_TOKEN)[0], axis=1)
    with pytest.raises(ValueError, match="6 audio placeholder tokens.*make 7 audio tokens"):
        model_f32(one_short, input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"])
    with pytest.raises(ValueError, match="placeholder"):
        model_f32.generate(one_short, input_features=inputs["input_features"],
                           feature_attention_mask=inputs["feature_attention_mask"], max_new_tokens=2)
    text_only = np.array([goldens["g4_text_only"]["input_ids"]])
    with pytest.raises(ValueError, match="0 audio placeholder tokens"):
        model_f32(text_only, input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"])
    with pytest.raises(ValueError, match="no input_features"):
        model_f32(ids)
    with pytest.raises(ValueError, match="no input_features"):
        model_f32.generate(ids, max_new_tokens=2)


def test_generation_length_limits(goldens, model_f32):
    prompt = goldens["g4_text_only"]["input_ids"]
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        model_f32.generate(prompt, max_new_tokens=-1)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model_f32.generate(prompt, max_new_tokens=8192)
    with pytest.raises(ValueError, match="max_length"):
        model_f32.generate(prompt)  # generation_config's max_length (20) is shorter than the prompt
    assert model_f32.generate(prompt, max_new_tokens=0).shape == (1, len(prompt))
    session = model_f32.start_session()
    session.append(prompt)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        session.append(np.ones((1, 8192 - len(prompt) + 1), dtype=np.int64))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model_f32(np.ones((1, 8193), dtype=np.int64))


def test_wrong_shapes_and_dtypes(goldens, reference_dir, model_f32):
    inputs = inputs_of(goldens["g1_short_audio"], reference_dir)
    ids, features, mask = inputs["input_ids"], inputs["input_features"], inputs["feature_attention_mask"]
    with pytest.raises(ValueError, match="input_features must have shape"):
        model_f32.audio_encoder(features[:, :80], mask)
    with pytest.raises(ValueError, match="input_features must have shape"):
        model_f32.encode_audio(features[:, :, :1000], mask[:, :1000])
    with pytest.raises(ValueError, match="feature_attention_mask must have shape"):
        model_f32(ids, input_features=features, feature_attention_mask=mask[:, :100])
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model_f32(ids, attention_mask=np.ones((1, 3), dtype=np.int64), input_features=features, feature_attention_mask=mask)
    with pytest.raises(ValueError, match="input_ids must hold integers"):
        model_f32(ids.astype(np.float32), input_features=features, feature_attention_mask=mask)
    with pytest.raises(ValueError, match="input_ids must have shape"):
        model_f32(ids[None], input_features=features, feature_attention_mask=mask)
    with pytest.raises(ValueError, match="floating point"):
        model_f32.audio_encoder(features.astype(np.int32), mask)
    with pytest.raises(ValueError, match="0 or 1"):
        model_f32.audio_encoder(features, mask * 2)
    with pytest.raises(ValueError, match="no valid frame"):
        model_f32.audio_encoder(features, np.zeros_like(mask))
    with pytest.raises(ValueError, match="0 or 1"):
        model_f32(ids, attention_mask=np.full(ids.shape, 3), input_features=features, feature_attention_mask=mask)
    with pytest.raises(ValueError, match="0 or 1"):
        model_f32(ids, attention_mask=np.full(ids.shape, 0.5), input_features=features, feature_attention_mask=mask)
    with pytest.raises(ValueError, match="masks every token"):
        model_f32(ids, attention_mask=np.zeros(ids.shape), input_features=features, feature_attention_mask=mask)
    with pytest.raises(ValueError, match="without input_features"):
        model_f32(ids, feature_attention_mask=mask)


def test_nan_in_features(goldens, reference_dir, model_f32):
    inputs = inputs_of(goldens["g3_two_audios"], reference_dir)
    features = inputs["input_features"].copy()
    features[1, 5, 7] = np.nan
    with pytest.raises(ValueError, match="clip 1.*NaN"):
        model_f32.generate(**{**inputs, "input_features": features}, max_new_tokens=2)
    with pytest.raises(ValueError, match="clip 1"):
        model_f32._core.encode(features, inputs["feature_attention_mask"])  # the engine is the layer that checks


def test_generation_needs_left_padding_and_valid_sampling_settings(goldens, model_f32):
    prompt = np.array([goldens["g4_text_only"]["input_ids"]])
    right_padded = np.ones_like(prompt)
    right_padded[0, -2:] = 0
    with pytest.raises(ValueError, match="left-padded"):
        model_f32.generate(prompt, attention_mask=right_padded, max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        model_f32.generate(prompt, max_new_tokens=2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        model_f32.generate(prompt, max_new_tokens=2, do_sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        model_f32.generate(prompt, max_new_tokens=2, do_sample=True, top_k=-2)
    with pytest.raises(ValueError, match="repetition_penalty"):
        model_f32.generate(prompt, max_new_tokens=2, repetition_penalty=0.0)
    with pytest.raises(ValueError, match="eos_token_id"):
        model_f32.generate(prompt, max_new_tokens=2, eos_token_id=[-5])
    with pytest.raises(ValueError, match="no tokens"):
        model_f32.start_session().generate(max_new_tokens=2)
