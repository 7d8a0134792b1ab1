"""Qwen2AudioProcessor against the chat examples made with HF's processor, template and tokenizers."""

from __future__ import annotations

import json
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from qwen2audio import Qwen2AudioProcessor

# These tests hand 16 kHz arrays without sampling_rate= on purpose (the transformers habit); the
# warning that habit gets is tested in test_hf_compat.py.
pytestmark = pytest.mark.filterwarnings("ignore::qwen2audio.processor.MissingSamplingRateWarning")


@pytest.fixture(scope="module")
def processor(tiny_f32: Path) -> Qwen2AudioProcessor:
    return Qwen2AudioProcessor.from_pretrained(tiny_f32)


@pytest.fixture(scope="module")
def chat_examples(reference_dir: Path) -> list[dict]:
    return json.loads((reference_dir / "tokenizer" / "chat_examples.json").read_text())["examples"]


def _reference_audio(reference_dir: Path, name: str) -> np.ndarray:
    # Items name reference clips as "mel/<case>"; the canonical input is the 16-bit WAV, as float
    # int16 / 32768 (reference README), read here with the standard library, not our loader.
    with wave.open(str(reference_dir / "audio" / f"{name.split('/')[-1]}.wav"), "rb") as stream:
        assert stream.getframerate() == 16000 and stream.getnchannels() == 1 and stream.getsampwidth() == 2
        pcm = np.frombuffer(stream.readframes(stream.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0


def _with_arrays(messages: list[dict], reference_dir: Path) -> list[dict]:
    converted = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [
                {**item, **{key: _reference_audio(reference_dir, item[key]) for key in ("audio", "audio_url") if key in item}}
                for item in content
            ]
        converted.append({**message, "content": content})
    return converted


def test_chat_template_renders_every_example(processor: Qwen2AudioProcessor, chat_examples: list[dict]) -> None:
    for example in chat_examples:
        prompt = processor.apply_chat_template(example["messages"], add_generation_prompt=example["add_generation_prompt"])
        assert prompt == example["prompt"], example["name"]


def test_processor_ids_and_features_match_every_example(
    processor: Qwen2AudioProcessor, chat_examples: list[dict], reference_dir: Path
) -> None:
    for example in chat_examples:
        audio = [_reference_audio(reference_dir, case) for case in example["audio_cases"]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long_47s warns about truncation; tested below
            inputs = processor(text=example["prompt"], audio=audio or None, return_tensors="np")
        assert inputs["input_ids"][0].tolist() == example["input_ids"], example["name"]
        assert processor.decode(inputs["input_ids"][0]) == example["expanded_prompt"], example["name"]
        if audio:
            assert inputs["feature_attention_mask"].sum(-1).tolist() == example["feature_attention_mask_sums"]
            for index, case in enumerate(example["audio_cases"]):
                expected = np.load(reference_dir / "mel" / f"{case}.input_features.npy")
                np.testing.assert_allclose(inputs["input_features"][index], expected, atol=1e-4, rtol=0)
        else:
            assert "input_features" not in inputs


def test_tokenized_chat_template_with_arrays(processor: Qwen2AudioProcessor, chat_examples: list[dict],
                                             reference_dir: Path) -> None:
    example = next(e for e in chat_examples if e["name"] == "two_audios")
    inputs = processor.apply_chat_template(
        _with_arrays(example["messages"], reference_dir), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert inputs["input_ids"][0].tolist() == example["input_ids"]
    assert inputs["feature_attention_mask"].sum(-1).tolist() == example["feature_attention_mask_sums"]
    ids = processor.apply_chat_template(_with_arrays(example["messages"], reference_dir), add_generation_prompt=True,
                                        tokenize=True)
    assert list(ids) == example["input_ids"]


def test_audio_from_file_path(processor: Qwen2AudioProcessor, chat_examples: list[dict], reference_dir: Path) -> None:
    example = next(e for e in chat_examples if e["name"] == "one_audio_text")
    messages = [{"role": "user", "content": [{"type": "audio", "audio_url": str(reference_dir / "audio" / "speech_en.wav")},
                                             {"type": "text", "text": "What does the speaker say?"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert inputs["input_ids"][0].tolist() == example["input_ids"]


def test_batch_with_padding(processor: Qwen2AudioProcessor, chat_examples: list[dict], reference_dir: Path) -> None:
    first = next(e for e in chat_examples if e["name"] == "one_audio_text")
    second = next(e for e in chat_examples if e["name"] == "text_user_only_genprompt")
    inputs = processor(text=[first["prompt"], second["prompt"]], audio=[_reference_audio(reference_dir, "speech_en")],
                       padding=True, return_tensors="np")
    width = max(len(first["input_ids"]), len(second["input_ids"]))
    assert inputs["input_ids"].shape == (2, width)
    mask = inputs["attention_mask"]
    for row, example in enumerate((first, second)):
        kept = inputs["input_ids"][row][mask[row] == 1].tolist()
        assert kept == example["input_ids"]


def test_placeholder_count_mismatch(processor: Qwen2AudioProcessor, reference_dir: Path) -> None:
    clip = _reference_audio(reference_dir, "sine440_2s")
    with pytest.raises(ValueError, match="Found 1 <\\|AUDIO\\|>.*received 2"):
        processor(text="Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>", audio=[clip, clip])
    with pytest.raises(ValueError, match="Found 0"):
        processor(text="no placeholder", audio=clip)
    with pytest.raises(ValueError, match="received 0"):
        processor(text="<|AUDIO|>")


def test_audios_alias_and_conflict(processor: Qwen2AudioProcessor, reference_dir: Path) -> None:
    clip = _reference_audio(reference_dir, "sine440_2s")
    text = "<|audio_bos|><|AUDIO|><|audio_eos|>"
    np.testing.assert_array_equal(processor(text=text, audios=clip)["input_ids"], processor(text=text, audio=clip)["input_ids"])
    with pytest.raises(ValueError, match="not both"):
        processor(text=text, audio=clip, audios=clip)


def test_wrong_sampling_rate_has_a_hint(processor: Qwen2AudioProcessor, reference_dir: Path) -> None:
    clip = _reference_audio(reference_dir, "sine440_2s")
    with pytest.raises(ValueError, match="load_audio"):
        processor(text="<|AUDIO|>", audio=clip, sampling_rate=44100)


def test_bos_eos_added_only_when_absent(processor: Qwen2AudioProcessor, reference_dir: Path) -> None:
    clip = _reference_audio(reference_dir, "short_0p3s")  # 7 audio tokens
    bare = processor.decode(processor(text="x<|AUDIO|>y", audio=clip)["input_ids"][0])
    assert bare == "x<|audio_bos|>" + "<|AUDIO|>" * 7 + "<|audio_eos|>y"
    framed = processor.decode(processor(text="x<|audio_bos|><|AUDIO|><|audio_eos|>y", audio=clip)["input_ids"][0])
    assert framed == bare


def test_long_audio_truncates_with_warning_or_chunks(processor: Qwen2AudioProcessor, reference_dir: Path) -> None:
    long_clip = _reference_audio(reference_dir, "long_47s")
    text = "<|audio_bos|><|AUDIO|><|audio_eos|>"
    with pytest.warns(UserWarning, match="30"):
        truncated = processor(text=text, audio=long_clip)
    assert truncated["input_features"].shape == (1, 128, 3000)
    assert (truncated["input_ids"][0] == 151646).sum() == 750
    chunked = processor(text=text, audio=long_clip, long_audio="chunk")
    assert chunked["input_features"].shape == (2, 128, 3000)
    np.testing.assert_allclose(chunked["input_features"][0], truncated["input_features"][0], atol=1e-6)
    # 47 s = 30 s + 17 s: 750 tokens, then ((1700-1)//2+1-2)//2+1 = 425.
    assert chunked["feature_attention_mask"].sum(-1).tolist() == [3000, 1700]
    decoded = processor.decode(chunked["input_ids"][0])
    assert decoded == ("<|audio_bos|>" + "<|AUDIO|>" * 750 + "<|audio_eos|><|audio_bos|>" + "<|AUDIO|>" * 425
                       + "<|audio_eos|>")


def test_save_and_reload(processor: Qwen2AudioProcessor, tmp_path: Path, chat_examples: list[dict]) -> None:
    processor.save_pretrained(tmp_path)
    reloaded = Qwen2AudioProcessor.from_pretrained(tmp_path)
    example = chat_examples[0]
    assert reloaded.apply_chat_template(example["messages"], add_generation_prompt=True) == example["prompt"]
    assert reloaded(text=example["prompt"])["input_ids"][0].tolist() == example["input_ids"]
    assert reloaded.feature_extractor.to_dict() == processor.feature_extractor.to_dict()


def test_batch_decode(processor: Qwen2AudioProcessor, chat_examples: list[dict]) -> None:
    ids = [e["input_ids"] for e in chat_examples[:3]]
    assert processor.batch_decode(ids) == [e["expanded_prompt"] for e in chat_examples[:3]]
    assert processor.batch_decode(ids, skip_special_tokens=True)[0].startswith("system\nYou are a helpful assistant.")


def test_bad_messages(processor: Qwen2AudioProcessor) -> None:
    with pytest.raises(ValueError, match="role"):
        processor.apply_chat_template([{"content": "hi"}])
    with pytest.raises(ValueError, match="gives no audio"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "audio", "audio": None}]}], tokenize=True)
