"""Code written for transformers' Qwen2-Audio runs with import changes only (issue 13), plus defects 3 and 6.

Covers the Auto classes, text streamers, from_pretrained's transformers arguments and nn.Module habits,
BatchFeature and torch tensors in and out, generate's transformers options (min_new_tokens, stop_strings,
generation_config, num_beams, return_dict_in_generate with scores / logits, our logprobs), the tokenizer's
apply_chat_template, GenerationConfig.from_pretrained, load_audio(sr=), model.chat's default length and the
sampling-rate warning. The model card's own snippets run in test_model_card_*.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import qwen2audio
from qwen2audio import (AutoModel, AutoModelForCausalLM, AutoProcessor, BatchFeature, ConfigError, GenerationConfig,
                        MissingSamplingRateWarning, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                        TextIteratorStreamer, TextStreamer, load_audio)
from test_model import PAD, _load_goldens, inputs_of, left_padded_batch

HUB_ID = "Qwen/Qwen2-Audio-7B-Instruct"
HUB_FIX = f"huggingface-cli download {HUB_ID} --local-dir DIR"


@pytest.fixture(scope="module")
def goldens(reference_dir: Path) -> dict[str, dict]:
    return {golden["name"]: golden for golden in _load_goldens(reference_dir)}


@pytest.fixture(scope="module")
def model(tiny_f32: Path) -> Qwen2AudioForConditionalGeneration:
    return Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32")


@pytest.fixture(scope="module")
def processor(tiny_f32: Path) -> Qwen2AudioProcessor:
    return Qwen2AudioProcessor.from_pretrained(tiny_f32)


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------------------------------ Auto classes

def test_auto_classes_resolve_from_config_json(tiny_f32):
    model = AutoModelForCausalLM.from_pretrained(tiny_f32, torch_dtype="float32")
    assert type(model) is Qwen2AudioForConditionalGeneration and model.dtype == "float32"
    assert type(AutoModel.from_pretrained(tiny_f32)) is Qwen2AudioForConditionalGeneration
    processor = AutoProcessor.from_pretrained(str(tiny_f32))
    assert type(processor) is Qwen2AudioProcessor
    assert type(qwen2audio.AutoTokenizer.from_pretrained(tiny_f32)) is qwen2audio.Qwen2Tokenizer
    assert qwen2audio.AutoConfig.from_pretrained(tiny_f32).model_type == "qwen2_audio"
    assert {"AutoProcessor", "AutoModelForCausalLM", "AutoModel", "TextStreamer", "TextIteratorStreamer"} <= \
        set(qwen2audio.__all__)


def test_auto_classes_refuse_other_model_types(tiny_f32, tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    config = json.loads((tiny_f32 / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    for auto in (AutoModelForCausalLM, AutoModel, AutoProcessor):
        with pytest.raises(ValueError, match="model_type 'llama'"):
            auto.from_pretrained(folder)
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoProcessor()


@pytest.mark.parametrize("load", [
    lambda: Qwen2AudioForConditionalGeneration.from_pretrained(HUB_ID, device_map="auto"),
    lambda: Qwen2AudioProcessor.from_pretrained(HUB_ID),
    lambda: AutoProcessor.from_pretrained(HUB_ID),
    lambda: AutoModelForCausalLM.from_pretrained(HUB_ID),
    lambda: GenerationConfig.from_pretrained(HUB_ID),
])
def test_hub_ids_that_are_not_folders_say_how_to_download(load):
    with pytest.raises(ValueError) as error:
        load()
    assert HUB_FIX in str(error.value) and "pass the folder" in str(error.value)


# ------------------------------------------------------------------------------------------- streamers

class _Pieces(TextStreamer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pieces, self.ends = [], 0

    def on_finalized_text(self, text, stream_end=False):
        self.pieces.append(text)
        self.ends += stream_end


def test_text_streamer_prints_the_reply(goldens, reference_dir, model, processor, capsys):
    inputs = inputs_of(goldens["g4_text_only"], reference_dir)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sequences = model.generate(**inputs, max_new_tokens=12, eos_token_id=[], streamer=streamer)
    new_tokens = sequences[0, inputs["input_ids"].shape[1]:]
    assert capsys.readouterr().out == processor.decode(new_tokens, skip_special_tokens=True) + "\n"

    # Without skip_prompt the prompt comes first, special tokens and all.
    streamer = TextStreamer(processor, skip_prompt=False)
    model.generate(**inputs, max_new_tokens=3, eos_token_id=[], streamer=streamer)
    assert capsys.readouterr().out == processor.decode(sequences[0, :inputs["input_ids"].shape[1] + 3]) + "\n"


def test_text_streamer_never_splits_a_character(processor):
    text = "🦜🦜 x 你好 ok\nend"
    ids = processor.tokenizer.encode(text)
    # The parrot spans two tokens: decoding a prefix that ends inside it gives U+FFFD.
    assert any("\ufffd" in processor.decode(ids[:count]) for count in range(1, len(ids)))
    streamer = _Pieces(processor.tokenizer)
    for token in ids:
        streamer.put(np.array([token]))
    streamer.end()
    assert all("\ufffd" not in piece for piece in streamer.pieces)
    assert "".join(streamer.pieces) == text and streamer.ends == 1
    # Released at transformers' places: after spaces, newlines and CJK characters, not mid-word.
    assert "🦜🦜 " in streamer.pieces and "ok\n" in streamer.pieces and streamer.pieces[-1] == "end"


def test_text_iterator_streamer_with_generate_in_a_thread(goldens, reference_dir, model, processor):
    inputs = inputs_of(goldens["g1_short_audio"], reference_dir)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, timeout=60, skip_special_tokens=True)
    result = {}
    thread = threading.Thread(target=lambda: result.update(ids=model.generate(
        **inputs, streamer=streamer, max_new_tokens=12, eos_token_id=[])))
    thread.start()
    pieces = [piece for piece in streamer]
    thread.join()
    new_tokens = result["ids"][0, inputs["input_ids"].shape[1]:]
    assert new_tokens.tolist() == goldens["g1_short_audio"]["greedy_new_tokens"]
    assert "".join(pieces) == processor.decode(new_tokens, skip_special_tokens=True)


def test_text_iterator_streamer_times_out_and_checks_arguments(processor):
    streamer = TextIteratorStreamer(processor.tokenizer, timeout=0.05)
    with pytest.raises(queue.Empty):
        next(streamer)
    with pytest.raises(ValueError, match="batch size 1"):
        streamer.put(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="skip_special_token"):
        TextStreamer(processor.tokenizer, skip_special_token=True)
    with pytest.raises(ValueError, match="timeout"):
        TextIteratorStreamer(processor.tokenizer, timeout=-1)
    with pytest.raises(TypeError, match="tokenizer"):
        TextStreamer(object())


# ---------------------------------------------------------------------- from_pretrained and nn.Module habits

@pytest.mark.parametrize("torch_dtype, expected", [
    (torch.bfloat16, "bfloat16"), ("bfloat16", "bfloat16"), (torch.float32, "float32"), ("auto", "float32"),
])
def test_torch_dtype_maps_to_the_engine_dtype(tiny_f32, torch_dtype, expected):
    loaded = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, torch_dtype=torch_dtype, device_map="cpu")
    assert loaded.dtype == expected and loaded.device == "cpu"


def test_bad_load_arguments_name_themselves(tiny_f32):
    load = Qwen2AudioForConditionalGeneration.from_pretrained
    with pytest.raises(ValueError, match="torch_dtype.*float16 is not supported"):
        load(tiny_f32, torch_dtype=torch.float16)
    with pytest.raises(ValueError, match="disagree"):
        load(tiny_f32, dtype="float32", torch_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="device_map as a dict"):
        load(tiny_f32, device_map={"": 0})
    with pytest.raises(ValueError, match="device_map='balanced'"):
        load(tiny_f32, device_map="balanced")
    with pytest.raises(ValueError, match="device_map must be"):
        load(tiny_f32, device_map="gpu")
    with pytest.raises(ValueError, match="disagree"):
        load(tiny_f32, device="cpu", device_map="cuda")
    with pytest.raises(ValueError, match="attn_implementation"):
        load(tiny_f32, attn_implementation="magic")


def test_device_map_auto_chooses_the_cpu_without_a_usable_gpu(tiny_f32):
    # float32 compute and quantized weights are CPU-only, whatever the machine has.
    assert Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, device_map="auto",
                                                             torch_dtype=torch.float32).device == "cpu"
    try:
        qwen2audio._core.DeviceWhisperLogMel(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                             n_fft=400, device="cuda")
    except qwen2audio.DeviceError:
        loaded = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, device_map="auto",
                                                                   trust_remote_code=True, low_cpu_mem_usage=True)
        assert loaded.device == "cpu"
    else:
        pytest.skip("a usable GPU is present: device_map='auto' loads there (tests/python/test_cuda.py)")


def test_to_eval_and_friends(model):
    assert model.eval() is model and model.to("cpu") is model and model.cpu() is model
    assert model.to(torch.float32) is model and model.to(torch.device("cpu"), dtype="float32") is model
    with pytest.raises(ValueError, match=r"device_map='cuda'"):
        model.to("cuda")
    with pytest.raises(ValueError, match=r"device_map='cuda:1'"):
        model.to(torch.device("cuda", 1))
    with pytest.raises(ValueError, match=r"torch_dtype='bfloat16'"):
        model.to(torch.bfloat16)
    with pytest.raises(ValueError, match="device"):
        model.to("tpu")


def _safetensors_counts(path: Path) -> dict[str, int]:
    # Read independently of the engine: an 8-byte header length, then the JSON header.
    with open(path, "rb") as stream:
        length = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(length))
    return {name: int(np.prod(entry["shape"])) for name, entry in header.items() if name != "__metadata__"}


def test_num_parameters_counts_the_checkpoint(tiny_f32, model, tmp_path):
    counts = _safetensors_counts(tiny_f32 / "model.safetensors")
    assert model.num_parameters() == sum(counts.values())
    embeddings = {name for name in counts if name.endswith(("embed_tokens.weight", "embed_positions.weight"))}
    assert embeddings == {"language_model.model.embed_tokens.weight", "audio_tower.embed_positions.weight"}
    assert model.num_parameters(exclude_embeddings=True) == sum(counts.values()) - sum(counts[n] for n in embeddings)
    assert model.num_parameters(only_trainable=True) == model.num_parameters()
    # Packed quantized weights count one parameter per weight; their scales are not parameters.
    for quantization in ("int8", "int4"):
        Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, quantization=quantization).save_pretrained(
            tmp_path / quantization)
        packed = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path / quantization)
        assert any(name.endswith(".qweight") for name in _safetensors_counts(tmp_path / quantization /
                                                                             "model.safetensors"))
        assert packed.num_parameters() == model.num_parameters(), quantization


def test_get_input_embeddings_gives_the_table_rows(model):
    table = qwen2audio.Checkpoint(model.name_or_path).to_float32("language_model.model.embed_tokens.weight")
    embeddings = model.get_input_embeddings()
    assert (embeddings.num_embeddings, embeddings.embedding_dim) == table.shape
    ids = np.array([[151644, 872, 198], [9707, 0, 151648]])
    rows = embeddings(ids)
    assert rows.shape == (2, 3, table.shape[1]) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, table[ids])
    as_torch = embeddings(torch.from_numpy(ids))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), rows)
    with pytest.raises(ValueError, match="input_ids"):
        embeddings([151649])
    with pytest.raises(ValueError, match="integers"):
        embeddings([1.5])


# ---------------------------------------------------------------------------------- BatchFeature and torch

def test_return_tensors_pt_makes_every_field_a_tensor(processor, reference_dir):
    audio = load_audio(reference_dir / "audio" / "sine440_2s.wav")
    text = "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nWhat is it?"
    as_numpy = processor(text=[text, "hi"], audio=[audio], sampling_rate=16000, padding=True)
    as_torch = processor(text=[text, "hi"], audio=[audio], sampling_rate=16000, padding=True, return_tensors="pt")
    assert isinstance(as_torch, BatchFeature) and list(as_torch) == list(as_numpy)
    for key, value in as_torch.items():
        assert isinstance(value, torch.Tensor), key
        np.testing.assert_array_equal(value.numpy(), as_numpy[key])
    assert as_torch.input_ids.dtype == torch.int64 and as_torch.input_features.dtype == torch.float32
    with pytest.raises(ValueError, match="return_tensors"):
        processor(text="hi", return_tensors="tf")


def test_batch_feature_to_and_attribute_assignment(processor, reference_dir):
    audio = load_audio(reference_dir / "audio" / "sine440_2s.wav")
    inputs = processor(text="<|AUDIO|> hi", audio=audio, sampling_rate=16000, return_tensors="pt")
    features = inputs.input_features.clone()
    assert inputs.to("cpu") is inputs and inputs.to(torch.device("cpu")) is inputs
    assert inputs.to("cuda") is inputs  # harmless without a usable CUDA torch: the engine reads host memory
    moved_ids = inputs.input_ids.to("cuda")  # as the model card writes it
    assert isinstance(moved_ids, torch.Tensor) and moved_ids.size(1) == inputs["input_ids"].shape[1]
    inputs.input_ids = moved_ids
    assert inputs["input_ids"] is moved_ids
    assert inputs.to(torch.bfloat16) is inputs
    assert inputs.input_features.dtype == torch.bfloat16 and inputs.input_ids.dtype == torch.int64
    assert inputs.feature_attention_mask.dtype == torch.int32
    np.testing.assert_array_equal(inputs.input_features.float().numpy(), features.bfloat16().float().numpy())
    inputs.extra = 1
    del inputs.extra
    assert "extra" not in inputs
    with pytest.raises(AttributeError):
        inputs.missing

    as_numpy = processor(text="<|AUDIO|> hi", audio=audio, sampling_rate=16000)
    assert as_numpy.to("cuda:0") is as_numpy and as_numpy.to("float16") is as_numpy
    assert as_numpy.input_features.dtype == np.float16 and as_numpy.input_ids.dtype == np.int64
    with pytest.raises(ValueError, match="bfloat16"):
        as_numpy.to(torch.bfloat16)
    with pytest.raises(ValueError, match="device"):
        as_numpy.to(device="somewhere")
    with pytest.raises(ValueError, match="BatchFeature.to"):
        as_numpy.to(3.5)


def test_torch_inputs_give_torch_outputs(goldens, reference_dir, model):
    batch = left_padded_batch(goldens, reference_dir, ["g1_short_audio", "g4_text_only"])
    expected = model.generate(**batch, max_new_tokens=5, eos_token_id=[])
    assert isinstance(expected, np.ndarray)
    tensors = {key: torch.from_numpy(value) for key, value in batch.items()}
    sequences = model.generate(**tensors, max_new_tokens=5, eos_token_id=[])
    assert isinstance(sequences, torch.Tensor) and sequences.dtype == torch.int64
    np.testing.assert_array_equal(sequences.numpy(), expected)
    logits = model(**tensors).logits
    assert isinstance(logits, torch.Tensor)
    np.testing.assert_array_equal(logits.numpy(), model(**batch).logits)
    # Features cast to bfloat16 (inputs.to(torch.bfloat16)) are read as bfloat16-rounded floats.
    rounded = dict(tensors, input_features=tensors["input_features"].bfloat16())
    out = model.generate(**rounded, max_new_tokens=2, eos_token_id=[])
    assert isinstance(out, torch.Tensor) and out.shape == (2, batch["input_ids"].shape[1] + 2)


def test_import_does_not_import_torch(tiny_f32):
    script = f"""
import sys
import numpy as np
import qwen2audio
processor = qwen2audio.AutoProcessor.from_pretrained({str(tiny_f32)!r})
model = qwen2audio.AutoModelForCausalLM.from_pretrained({str(tiny_f32)!r})
inputs = processor(text="<|AUDIO|> hi", audio=np.zeros(16000, np.float32), sampling_rate=16000)
out = model.generate(**inputs, max_new_tokens=2, return_dict_in_generate=True, output_logprobs=True)
assert isinstance(out.sequences, np.ndarray)
streamer = qwen2audio.TextStreamer(processor.tokenizer)
assert "torch" not in sys.modules, "torch was imported"
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------- generate options

def test_min_new_tokens_keeps_eos_out(goldens, model):
    prompt = goldens["g4_text_only"]["input_ids"]
    first = goldens["g4_text_only"]["greedy_new_tokens"][0]
    assert model.generate(prompt, max_new_tokens=6, eos_token_id=[first]).shape[1] == len(prompt) + 1
    out = model.generate(prompt, max_new_tokens=6, eos_token_id=[first], min_new_tokens=3,
                         return_dict_in_generate=True, output_logits=True, output_scores=True)
    new_tokens = out.sequences[0, len(prompt):].tolist()
    assert len(new_tokens) >= 3 and first not in new_tokens[:3]
    for step in range(3):  # the choice is the raw argmax once EOS is masked, as transformers' processor does
        raw = out.logits[step][0].copy()
        assert out.scores[step][0][first] == -np.inf
        raw[first] = -np.inf
        assert new_tokens[step] == int(np.argmax(raw))
    # min_length counts the prompt.
    by_length = model.generate(prompt, max_new_tokens=6, eos_token_id=[first], min_length=len(prompt) + 3)
    assert by_length[0, len(prompt):].tolist() == new_tokens
    with pytest.raises(ValueError, match="min_new_tokens"):
        model.generate(prompt, max_new_tokens=2, min_new_tokens=-1)


def test_stop_strings_end_a_row_at_the_token_that_completes_them(goldens, model, processor):
    prompt = goldens["g4_text_only"]["input_ids"]
    greedy = goldens["g4_text_only"]["greedy_new_tokens"]
    assert processor.decode(greedy[:2]).endswith(" Investors")
    for stop in ("Investors", "Invest", ["nothing like it", "Investors"]):  # "Invest": the token runs past it
        out = model.generate(prompt, max_new_tokens=12, eos_token_id=[], stop_strings=stop, tokenizer=processor)
        assert out[0, len(prompt):].tolist() == greedy[:2], stop
    untouched = model.generate(prompt, max_new_tokens=12, eos_token_id=[], stop_strings="never appears",
                               tokenizer=processor.tokenizer)
    assert untouched[0, len(prompt):].tolist() == greedy
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(prompt, max_new_tokens=3, stop_strings="x")
    for bad in ("", [], [3]):
        with pytest.raises(ValueError, match="stop_strings"):
            model.generate(prompt, max_new_tokens=3, stop_strings=bad, tokenizer=processor.tokenizer)


def test_stop_strings_finish_rows_of_a_batch_one_by_one(goldens, reference_dir, model, processor):
    names = ["g1_short_audio", "g4_text_only"]
    batch = left_padded_batch(goldens, reference_dir, names)
    width = batch["input_ids"].shape[1]
    assert processor.decode(goldens["g1_short_audio"]["greedy_new_tokens"][:5]).endswith(".poll")
    sequences = model.generate(**batch, max_new_tokens=12, eos_token_id=[], stop_strings=["poll"],
                               tokenizer=processor.tokenizer, pad_token_id=PAD)
    assert sequences.shape == (2, width + 12)
    assert sequences[0, width:].tolist() == goldens["g1_short_audio"]["greedy_new_tokens"][:5] + [PAD] * 7
    assert sequences[1, width:].tolist() == goldens["g4_text_only"]["greedy_new_tokens"]
    # The streamed text of a stopped row ends with the stop string too.
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, timeout=60)
    prompt = goldens["g1_short_audio"]
    thread = threading.Thread(target=model.generate, kwargs=dict(
        **inputs_of(prompt, reference_dir), streamer=streamer, max_new_tokens=12, eos_token_id=[],
        stop_strings="poll", tokenizer=processor.tokenizer))
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text == processor.decode(prompt["greedy_new_tokens"][:5]) and text.endswith("poll")


def test_generation_config_argument_sets_defaults(goldens, model):
    prompt = goldens["g4_text_only"]["input_ids"]
    greedy = goldens["g4_text_only"]["greedy_new_tokens"]
    config = GenerationConfig(max_new_tokens=3, eos_token_id=[])
    assert model.generate(prompt, generation_config=config)[0, len(prompt):].tolist() == greedy[:3]
    assert model.generate(prompt, generation_config=config, max_new_tokens=5).shape[1] == len(prompt) + 5
    # Fields it leaves at transformers' defaults come from the model's own config (its EOS list here).
    first = greedy[0]
    model.generation_config.eos_token_id = [first]
    try:
        assert model.generate(prompt, generation_config=GenerationConfig(max_new_tokens=4)).shape[1] == len(prompt) + 1
    finally:
        model.generation_config.eos_token_id = [151645, 151643]
    with pytest.raises(TypeError, match="generation_config"):
        model.generate(prompt, generation_config={"max_new_tokens": 3})
    with pytest.raises(TypeError, match="unexpected keyword"):
        model.start_session().generate(prompt, max_new_tokenz=3)


def test_num_beams(goldens, model):
    prompt = goldens["g4_text_only"]["input_ids"]
    assert model.generate(prompt, max_new_tokens=2, num_beams=1).shape[1] == len(prompt) + 2
    for beams in (4, 0, "2"):
        with pytest.raises(ValueError, match="beam search is not supported"):
            model.generate(prompt, max_new_tokens=2, num_beams=beams)


def test_return_dict_scores_logits_and_logprobs(goldens, reference_dir, model):
    names = ["g1_short_audio", "g4_text_only"]
    batch = left_padded_batch(goldens, reference_dir, names)
    width = batch["input_ids"].shape[1]
    plain = model.generate(**batch, max_new_tokens=6, eos_token_id=[])
    out = model.generate(**batch, max_new_tokens=6, eos_token_id=[], return_dict_in_generate=True,
                         output_scores=True, output_logits=True, output_logprobs=True)
    np.testing.assert_array_equal(out.sequences, plain)
    assert out["sequences"] is out.sequences and out[0] is out.sequences and "scores" in out.keys()
    vocab = model.config.text_config.vocab_size
    assert isinstance(out.scores, tuple) and len(out.scores) == len(out.logits) == 6
    assert all(step.shape == (2, vocab) and step.dtype == np.float32 for step in out.scores + out.logits)
    assert out.logprobs.shape == (2, 6) and out.logprobs.dtype == np.float32
    # The raw logits are the model's: forward over the generated sequence gives them at each step.
    forward = model(out.sequences[:, :-1], np.concatenate([batch["attention_mask"], np.ones((2, 5), np.int64)], 1),
                    batch["input_features"], batch["feature_attention_mask"]).logits
    for step in range(6):
        np.testing.assert_allclose(out.logits[step], forward[:, width - 1 + step], atol=1e-4)
        np.testing.assert_array_equal(out.scores[step], out.logits[step])  # greedy, no penalty: unprocessed
        assert out.sequences[:, width + step].tolist() == np.argmax(out.scores[step], axis=-1).tolist()
    expected = np.stack([_log_softmax(out.logits[step])[np.arange(2), out.sequences[:, width + step]]
                         for step in range(6)], axis=1)
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-5)
    np.testing.assert_allclose(model.compute_transition_scores(out.sequences, out.logits, normalize_logits=True),
                               expected, atol=1e-5)
    np.testing.assert_array_equal(model.compute_transition_scores(out.sequences, out.scores),
                                  np.stack([out.scores[t][np.arange(2), out.sequences[:, width + t]]
                                            for t in range(6)], axis=1))
    with pytest.warns(UserWarning, match="return_dict_in_generate"):
        alone = model.generate(**batch, max_new_tokens=2, eos_token_id=[], output_scores=True)
    assert isinstance(alone, np.ndarray)


def test_processed_scores_follow_transformers_processors(goldens, model):
    prompt = np.array([goldens["g4_text_only"]["input_ids"]])
    out = model.generate(prompt, max_new_tokens=5, eos_token_id=[], do_sample=True, temperature=0.7, top_k=5,
                         repetition_penalty=1.3, seed=7, return_dict_in_generate=True, output_scores=True,
                         output_logits=True)
    again = model.generate(prompt, max_new_tokens=5, eos_token_id=[], do_sample=True, temperature=0.7, top_k=5,
                           repetition_penalty=1.3, seed=7)
    np.testing.assert_array_equal(out.sequences, again)  # recording does not change what is sampled
    for step in range(5):
        history = out.sequences[0, :prompt.shape[1] + step]
        scores = out.logits[step][0].copy()
        seen = np.unique(history)
        scores[seen] = np.where(scores[seen] < 0, scores[seen] * np.float32(1.3), scores[seen] / np.float32(1.3))
        scores = scores / np.float32(0.7)
        kth = np.sort(scores)[-5]
        scores[scores < kth] = -np.inf
        np.testing.assert_allclose(out.scores[step][0], scores, rtol=1e-6)
        assert np.isfinite(out.scores[step][0][out.sequences[0, prompt.shape[1] + step]])


def test_logprobs_of_finished_rows_are_zero(goldens, reference_dir, model):
    batch = left_padded_batch(goldens, reference_dir, ["g2_speech_system", "g4_text_only"])
    width = batch["input_ids"].shape[1]
    stop = goldens["g2_speech_system"]["greedy_new_tokens"][0]
    assert stop not in goldens["g4_text_only"]["greedy_new_tokens"][:4]
    out = model.generate(**batch, max_new_tokens=4, eos_token_id=[stop], pad_token_id=PAD,
                         return_dict_in_generate=True, output_logprobs=True)
    assert out.sequences[0, width:].tolist() == [stop, PAD, PAD, PAD]
    assert out.logprobs[0, 0] < 0 and out.logprobs[0, 1:].tolist() == [0.0, 0.0, 0.0]
    assert (out.logprobs[1] < 0).all()
    as_torch = model.generate(**{key: torch.from_numpy(value) for key, value in batch.items()}, max_new_tokens=4,
                              eos_token_id=[stop], pad_token_id=PAD, return_dict_in_generate=True,
                              output_logprobs=True)
    assert isinstance(as_torch.logprobs, torch.Tensor) and isinstance(as_torch.sequences, torch.Tensor)
    np.testing.assert_array_equal(as_torch.logprobs.numpy(), out.logprobs)


def test_session_generate_takes_the_same_options(goldens, model, processor):
    prompt = goldens["g4_text_only"]["input_ids"]
    greedy = goldens["g4_text_only"]["greedy_new_tokens"]
    session = model.start_session()
    out = session.generate(prompt, max_new_tokens=12, eos_token_id=[], stop_strings="Invest",
                           tokenizer=processor.tokenizer, return_dict_in_generate=True, output_logprobs=True)
    assert out.sequences.tolist() == [greedy[:2]] and out.logprobs.shape == (1, 2)


# ------------------------------------------------------------------------------ tokenizer.apply_chat_template

def test_tokenizer_apply_chat_template(processor):
    tokenizer = processor.tokenizer
    conversation = [
        {"role": "user", "content": [{"type": "audio", "audio_url": "clip.wav"}, {"type": "text", "text": "Hi?"}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "And?"}]},
    ]
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nHi?" in text and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)  # tokenize=True is the default
    assert ids == tokenizer.encode(text) and ids.count(151646) == 1
    encoded = tokenizer.apply_chat_template([conversation, conversation[:1]], add_generation_prompt=True,
                                            return_dict=True, padding=True, return_tensors="np")
    assert encoded["input_ids"].shape == encoded["attention_mask"].shape and encoded["input_ids"].shape[0] == 2
    assert encoded["input_ids"][0].tolist() == ids
    continued = tokenizer.apply_chat_template(conversation[:2], continue_final_message=True, tokenize=False)
    assert continued.endswith("<|im_start|>assistant\nHello.")
    with pytest.raises(ValueError, match="continue_final_message"):
        tokenizer.apply_chat_template(conversation, add_generation_prompt=True, continue_final_message=True)


# ------------------------------------------------------------------------------ GenerationConfig, load_audio

def test_generation_config_from_pretrained(tiny_f32, model, tmp_path):
    config = GenerationConfig.from_pretrained(tiny_f32)
    assert config == GenerationConfig.from_pretrained(tiny_f32 / "generation_config.json")
    assert config.eos_token_id == [151645, 151643] and config.pad_token_id == PAD and config.top_k == 50
    assert config.max_new_tokens is None and config.max_length == 20 and config.num_beams == 1
    assert config.to_dict() == model.generation_config.to_dict()
    assert GenerationConfig.from_pretrained(tiny_f32, max_new_tokens=9).max_new_tokens == 9
    built = GenerationConfig(max_new_tokens=5, do_sample=True, temperature=0.5, eos_token_id=7)
    assert (built.max_new_tokens, built.do_sample, built.temperature, built.eos_token_id) == (5, True, 0.5, [7])
    assert GenerationConfig.from_pretrained(built.save_pretrained(tmp_path).parent) == built
    with pytest.raises(ConfigError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "generation_config.json").write_text('{"top_p": 7}')
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig.from_pretrained(tmp_path / "bad")
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature="hot")


def test_load_audio_takes_librosas_sr(reference_dir):
    path = reference_dir / "audio" / "stereo_44k1.wav"
    np.testing.assert_array_equal(load_audio(path, sr=16000), load_audio(path, sampling_rate=16000))
    assert load_audio(path, sr=8000).size == pytest.approx(load_audio(path).size / 2, abs=2)
    with pytest.raises(ValueError, match="not both"):
        load_audio(path, sampling_rate=16000, sr=16000)
    with pytest.raises(ValueError, match="sr must be"):
        load_audio(path, sr=0)


# -------------------------------------------------------------------------------- defect 3: chat's length

def test_chat_without_a_length_gets_256_new_tokens(tiny_f32, reference_dir):
    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32)
    processor = Qwen2AudioProcessor.from_pretrained(tiny_f32)
    conversation = [{"role": "user", "content": [
        {"type": "audio", "audio_url": str(reference_dir / "audio" / "speech_en.wav")},
        {"type": "text", "text": "What does the person say?"}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
    assert len(prompt) > 20  # transformers' max_length default would refuse this prompt
    pieces = list(model.chat(processor, conversation, stream=True, eos_token_id=[]))
    assert pieces and len(model._chat_cache.session) == len(prompt) + 256
    assert isinstance(model.chat(processor, conversation, eos_token_id=[]), str)
    assert len(model._chat_cache.session) == len(prompt) + 256
    model.chat(processor, conversation, eos_token_id=[], max_length=len(prompt) + 7)
    assert len(model._chat_cache.session) == len(prompt) + 7
    model.generation_config.max_new_tokens = 5  # a checkpoint that sets its own length keeps it
    model.chat(processor, conversation, eos_token_id=[])
    assert len(model._chat_cache.session) == len(prompt) + 5


# ---------------------------------------------------------------------- defect 6: arrays without a rate

def test_arrays_without_sampling_rate_warn(processor, reference_dir, tmp_path):
    audio_44k = load_audio(reference_dir / "audio" / "stereo_44k1.wav", sampling_rate=44100)
    text = "<|AUDIO|> What is it?"
    with pytest.warns(MissingSamplingRateWarning) as caught:
        processor(text=text, audio=audio_44k)
    assert issubclass(MissingSamplingRateWarning, UserWarning)
    message = str(caught[0].message)
    assert "sampling_rate=" in message and "load_audio(path, sampling_rate=16000)" in message
    assert caught[0].filename == __file__  # points at the caller's line
    with pytest.raises(ValueError, match="44100"):
        processor(text=text, audio=audio_44k, sampling_rate=44100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processor(text=text, audio=load_audio(reference_dir / "audio" / "sine440_2s.wav"), sampling_rate=16000)
        processor(text=text, audio=str(reference_dir / "audio" / "stereo_44k1.wav"))  # decoded and resampled
        processor.apply_chat_template([{"role": "user", "content": [
            {"type": "audio", "audio": reference_dir / "audio" / "sine440_2s.wav"}]}], tokenize=True)
    with pytest.warns(MissingSamplingRateWarning):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "audio", "audio": audio_44k}]}],
                                      tokenize=True)


def test_internal_callers_pass_the_rate(tiny_f32, reference_dir, tmp_path):
    from qwen2audio.annotate import AnnotationItem, Annotator
    from qwen2audio.chat import ChatSession

    model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32)
    processor = Qwen2AudioProcessor.from_pretrained(tiny_f32)
    clip = load_audio(reference_dir / "audio" / "sine440_2s.wav")
    wav = reference_dir / "audio" / "short_0p3s.wav"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingSamplingRateWarning)
        model.chat(processor, [{"role": "user", "content": [{"type": "audio", "audio": clip}]}], max_new_tokens=2)
        ChatSession(model, processor, generation_kwargs={"max_new_tokens": 2}).send("hi", audio=[clip])
        records = Annotator(model, processor, {"max_new_tokens": 2}).run_batch(
            [AnnotationItem("a", str(wav)), AnnotationItem("b", str(wav))], "Describe.")
    assert [record.get("error") for record in records] == [None, None]


# ------------------------------------------------------------------------------------------ the model card

@pytest.fixture()
def card_audio(reference_dir, tmp_path) -> dict[str, str]:
    """Local WAVs standing in for the model card's URLs (the one substitution the card needs offline)."""
    names = {"glass-breaking-151256": "sine440_2s", "1272-128104-0000": "speech_en",
             "f2641_0_throatclearing": "short_0p3s"}
    for name, case in names.items():
        shutil.copy(reference_dir / "audio" / f"{case}.wav", tmp_path / f"{name}.wav")
    return {name: str(tmp_path / f"{name}.wav") for name in names}


def test_model_card_audio_analysis_inference(tiny_f32, card_audio, recwarn):
    checkpoint = str(tiny_f32)  # stands in for "Qwen/Qwen2-Audio-7B-Instruct"
    # ---- the model card's snippet; changed: the import line, the checkpoint, the audio URLs and loader ----
    from qwen2audio import Qwen2AudioForConditionalGeneration, AutoProcessor, load_audio

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(checkpoint, device_map="auto")

    conversation = [
        {'role': 'system', 'content': 'You are a helpful assistant.'},
        {"role": "user", "content": [
            {"type": "audio", "audio_url": card_audio["glass-breaking-151256"]},
            {"type": "text", "text": "What's that sound?"},
        ]},
        {"role": "assistant", "content": "It is the sound of glass shattering."},
        {"role": "user", "content": [
            {"type": "text", "text": "What can you do when you hear that?"},
        ]},
        {"role": "assistant", "content": "Stay alert and cautious, and check if anyone is hurt or if there is any damage to property."},  # noqa: E501
        {"role": "user", "content": [
            {"type": "audio", "audio_url": card_audio["1272-128104-0000"]},
            {"type": "text", "text": "What does the person say?"},
        ]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    audios = []
    for message in conversation:
        if isinstance(message["content"], list):
            for ele in message["content"]:
                if ele["type"] == "audio":
                    audios.append(load_audio(ele['audio_url'], sr=processor.feature_extractor.sampling_rate))

    inputs = processor(text=text, audios=audios, return_tensors="pt", padding=True)
    inputs.input_ids = inputs.input_ids.to("cuda")
    inputs = inputs.to("cuda")

    generate_ids = model.generate(**inputs, max_length=256)
    generate_ids = generate_ids[:, inputs.input_ids.size(1):]

    response = processor.batch_decode(generate_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
    # ---- end of the snippet ----
    assert isinstance(response, str)
    # The card hands arrays without sampling_rate=: warned, as transformers warns.
    assert len([warning for warning in recwarn if warning.category is MissingSamplingRateWarning]) == 1
    expected_inputs = processor(text=text, audio=audios, sampling_rate=16000)
    expected = model.generate(**expected_inputs, max_length=256)[:, expected_inputs["input_ids"].shape[1]:]
    assert isinstance(generate_ids, torch.Tensor) and generate_ids.tolist() == expected.tolist()
    assert expected.shape[1] > 0 and response == processor.decode(expected[0], skip_special_tokens=True)


def test_model_card_batch_inference(tiny_f32, card_audio):
    checkpoint = str(tiny_f32)  # stands in for "Qwen/Qwen2-Audio-7B-Instruct"
    # ---- the model card's snippet; changed: the import line, the checkpoint, the audio URLs and loader ----
    from qwen2audio import Qwen2AudioForConditionalGeneration, AutoProcessor, load_audio

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = Qwen2AudioForConditionalGeneration.from_pretrained(checkpoint, device_map="auto")

    conversation1 = [
        {"role": "user", "content": [
            {"type": "audio", "audio_url": card_audio["glass-breaking-151256"]},
            {"type": "text", "text": "What's that sound?"},
        ]},
        {"role": "assistant", "content": "It is the sound of glass shattering."},
        {"role": "user", "content": [
            {"type": "audio", "audio_url": card_audio["f2641_0_throatclearing"]},
            {"type": "text", "text": "What can you hear?"},
        ]}
    ]

    conversation2 = [
        {"role": "user", "content": [
            {"type": "audio", "audio_url": card_audio["1272-128104-0000"]},
            {"type": "text", "text": "What does the person say?"},
        ]},
    ]

    conversations = [conversation1, conversation2]

    text = [processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False) for conversation in conversations]  # noqa: E501

    audios = []
    for conversation in conversations:
        for message in conversation:
            if isinstance(message["content"], list):
                for ele in message["content"]:
                    if ele["type"] == "audio":
                        audios.append(load_audio(ele['audio_url'], sr=processor.feature_extractor.sampling_rate))

    inputs = processor(text=text, audios=audios, return_tensors="pt", padding=True)
    inputs['input_ids'] = inputs['input_ids'].to("cuda")
    inputs.input_ids = inputs.input_ids.to("cuda")

    generate_ids = model.generate(**inputs, max_length=256)
    generate_ids = generate_ids[:, inputs.input_ids.size(1):]

    response = processor.batch_decode(generate_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    # ---- end of the snippet ----
    assert isinstance(response, list) and len(response) == 2 and all(isinstance(item, str) for item in response)
    assert isinstance(generate_ids, torch.Tensor) and generate_ids.shape[1] > 0
    # Each row of the batch answers as it would alone (left padding), up to its EOS.
    for row, conversation in enumerate(conversations):
        alone = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                              return_dict=True)
        new_tokens = model.generate(**alone, max_new_tokens=8)[0, alone["input_ids"].shape[1]:].tolist()
        assert generate_ids[row, :len(new_tokens)].tolist() == new_tokens
        assert response[row].startswith(processor.decode(new_tokens, skip_special_tokens=True))
