"""Hostile and malformed input on every path into the engine: each must end in a ValueError (or a
subclass: CheckpointError, ConfigError, TemplateError) naming the problem — never a crash, a hang or
an allocation sized by the input. The other test modules cover the common mistakes; these are the
cases they leave out, several of them regressions of crashes found while hardening (marked so).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

import qwen2audio
from qwen2audio import Checkpoint, CheckpointError, ConfigError, Qwen2Tokenizer, load_audio
from qwen2audio import _core
from qwen2audio.chat_template import TemplateError

# These tests hand 16 kHz arrays without sampling_rate= on purpose (the transformers habit); the
# warning that habit gets is tested in test_hf_compat.py.
pytestmark = pytest.mark.filterwarnings("ignore::qwen2audio.processor.MissingSamplingRateWarning")

# Deep enough that recursive code over the parsed value overflowed an 8 MB stack before the fix,
# small enough (800 KB) to pass every file-size limit.
DEEP = 400_000


def nested(depth: int = DEEP) -> str:
    return "[" * depth + "]" * depth


def sparse_file(path: Path, size: int, prefix: bytes = b"") -> Path:
    """A file of `size` bytes that costs no disk: only its length is large."""
    with open(path, "wb") as handle:
        handle.write(prefix)
        handle.truncate(size)
    return path


# ------------------------------------------------------------------------------- checkpoint files
def safetensors_image(header: dict | bytes, data: bytes = b"", header_length: int | None = None) -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded) if header_length is None else header_length) + encoded + data


def write_model(folder: Path, image: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(image)
    return folder


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header, message", [
    ({"w": {**ENTRY, "shape": [-2]}}, "non-negative integer"),
    ({"w": {**ENTRY, "shape": [2.0]}}, "non-negative integer"),
    ({"w": {**ENTRY, "shape": [2**62, 2**62]}}, "overflows"),
    ({"w": {**ENTRY, "data_offsets": [0, 8, 16]}}, r"data_offsets must be \[begin, end\]"),
    ({"w": {**ENTRY, "data_offsets": [8, 0]}}, "end is before begin"),
    ({"w": {**ENTRY, "data_offsets": [-8, 0]}}, "non-negative integer"),
    ({"w": {**ENTRY, "data_offsets": [0, 2**64 - 1]}}, "absurdly large"),
    ({"w": {"shape": [2], "data_offsets": [0, 8]}}, "has no 'dtype'"),
    ({"w": {**ENTRY, "dtype": 7}}, "dtype is not a string"),
    ({"w": [1, 2]}, "entry is not an object"),
    ({"__metadata__": {"format": 1}, "w": ENTRY}, "__metadata__ value for 'format' is not a string"),
    ({"__metadata__": [], "w": ENTRY}, "__metadata__ is not an object"),
    (b"[]", "header is not a JSON object"),
    (b'{"w": {"dtype": "F32", "shape": [[[[[[[[1]]]]]]]], "data_offsets": [0, 8]}}', "nested too deeply"),
    (b'{"w": \xff}', "invalid JSON"),
])
def test_malformed_safetensors_headers(tmp_path, header, message):
    with pytest.raises(CheckpointError, match=message) as error:
        Checkpoint(write_model(tmp_path, safetensors_image(header, bytes(8))))
    assert "model.safetensors" in str(error.value)


def test_deeply_nested_safetensors_header_is_refused_at_once(tmp_path):
    with pytest.raises(CheckpointError, match="nested too deeply"):
        Checkpoint(write_model(tmp_path, safetensors_image(nested().encode())))


def test_oversized_header_is_refused_before_reading(tmp_path):
    # 200 MB claimed and present (sparse): over the 100 MB cap, so nothing is parsed or allocated.
    length = 200 << 20
    sparse_file(tmp_path / "model.safetensors", 8 + length + 8, struct.pack("<Q", length))
    with pytest.raises(CheckpointError, match="exceeds the .*-byte limit"):
        Checkpoint(tmp_path)


def within(seconds: float, call):
    """Runs `call` in a daemon thread: a regression that blocks forever fails the test instead of
    hanging the run. Returns the exception it raised (or None)."""
    outcome: list = []

    def run():
        try:
            call()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still blocked after {seconds} s"
    return outcome[0]


def test_fifos_are_refused_without_blocking(tiny_f32, tmp_path):
    # Opening a FIFO for reading waits for a writer; each reader must refuse it instead.
    (tmp_path / "model").mkdir()
    os.mkfifo(tmp_path / "model" / "model.safetensors")
    error = within(30, lambda: Checkpoint(tmp_path / "model"))
    assert isinstance(error, CheckpointError) and "not a regular file" in str(error)
    os.mkfifo(tmp_path / "clip.wav")
    error = within(30, lambda: load_audio(tmp_path / "clip.wav"))
    assert isinstance(error, ValueError) and "not a regular file" in str(error)
    os.mkfifo(tmp_path / "config.json")
    error = within(30, lambda: qwen2audio.Qwen2AudioConfig.from_pretrained(tmp_path / "config.json"))
    assert isinstance(error, ConfigError) and "not a regular file" in str(error)
    folder = tiny_with_config(tiny_f32, tmp_path / "ckpt", "{}")
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")
    error = within(30, lambda: Checkpoint(folder))
    assert isinstance(error, ConfigError), error


def test_empty_and_non_regular_weight_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="0 bytes, too small"):
        Checkpoint(tmp_path / "empty")
    (tmp_path / "folder" / "model.safetensors").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="not a regular file"):
        Checkpoint(tmp_path / "folder")


def test_truncated_checkpoint_names_a_tensor(tiny_bf16, tmp_path):
    image = (tiny_bf16 / "model.safetensors").read_bytes()
    write_model(tmp_path, image[: len(image) // 2])
    shutil.copy(tiny_bf16 / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="tensor '.*' data_offsets .* run past the data section"):
        Checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="run past the data section"):
        qwen2audio.Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path)


@pytest.mark.parametrize("index, message", [
    (json.dumps({"weight_map": {"a": "s.safetensors"}, "extra": json.loads(nested(40))}), None),
    ('{"weight_map": ' + nested() + "}", "nested more than 64 levels"),
    ('{"weight_map": []}', "no 'weight_map' object"),
    ('{"weight_map": {}}', "lists no tensors"),
    ('{"weight_map": {"a": 5}}', "shard of tensor 'a' is not a string"),
    ('{"weight_map": {"a": ".."}}', "not a file name"),
    ('{"weight_map": {"a": "sub/s.safetensors"}}', "not a file name"),
    ('{"weight_map": {"a": ""}}', "not a file name"),
    ("[1, 2]", "no 'weight_map' object"),
    (b"\xff\xfe{}", "invalid JSON"),
])
def test_malformed_shard_index(tmp_path, index, message):
    (tmp_path / "s.safetensors").write_bytes(safetensors_image({"a": ENTRY}, bytes(8)))
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(index if isinstance(index, bytes) else index.encode())
    if message is None:  # 40 levels is within the limit: loads
        assert Checkpoint(tmp_path).tensor_names() == ["a"]
        return
    with pytest.raises(CheckpointError, match=message) as error:
        Checkpoint(tmp_path)
    assert "model.safetensors.index.json" in str(error.value)


def test_oversized_shard_index_is_refused_before_reading(tmp_path):
    sparse_file(tmp_path / "model.safetensors.index.json", 65 << 20, b'{"weight_map": {')
    with pytest.raises(CheckpointError, match="absurdly large"):
        Checkpoint(tmp_path)


# ----------------------------------------------------------------------------------------- config
def tiny_with_config(tiny: Path, folder: Path, text: str, name: str = "config.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").symlink_to(tiny / "model.safetensors")
    for other in ("config.json", "generation_config.json"):
        if other != name:
            shutil.copy(tiny / other, folder / other)
    (folder / name).write_text(text)
    return folder


def test_deeply_nested_config_value(tiny_f32, tmp_path):
    # Regression: the error message quoted the value with nlohmann's recursive dump(); 800 KB of
    # '[' crashed the process with a stack overflow.
    config = (tiny_f32 / "config.json").read_text()
    text = config.replace('"hidden_size": 64', '"hidden_size": ' + nested(), 1)
    assert text != config
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        Checkpoint(tiny_with_config(tiny_f32, tmp_path / "a", text))
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        qwen2audio.Qwen2AudioConfig.from_json_string(text)
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        Checkpoint(tiny_with_config(tiny_f32, tmp_path / "b", '{"temperature": ' + nested() + "}",
                                    "generation_config.json"))


def test_long_config_values_are_quoted_briefly(tiny_f32):
    text = (tiny_f32 / "config.json").read_text().replace('"hidden_size": 64', '"hidden_size": "' + "x" * 100_000 + '"')
    with pytest.raises(ConfigError, match="hidden_size' must be an integer") as error:
        qwen2audio.Qwen2AudioConfig.from_json_string(text)
    assert len(str(error.value)) < 400


@pytest.mark.parametrize("key", ["rms_norm_eps", "rope_theta"])
def test_non_finite_config_numbers(tiny_f32, key):
    # Python's json reads 1e999 as inf; the engine's parser refuses it, so no infinite epsilon or
    # RoPE base reaches the model.
    config = json.loads((tiny_f32 / "config.json").read_text())
    config["text_config"][key] = 1.0
    text = json.dumps(config).replace(f'"{key}": 1.0', f'"{key}": 1e999')
    with pytest.raises(ConfigError, match="number overflow parsing '1e999'"):
        qwen2audio.Qwen2AudioConfig.from_json_string(text)


@pytest.mark.parametrize("text, message", [
    ('{"top_p": 1.5}', "top_p"),
    ('{"temperature": -1}', "temperature"),
    ('{"max_new_tokens": -5}', "max_new_tokens"),
    ('{"top_k": 1e3}', "top_k"),
    ('{"eos_token_id": [1, -2]}', "eos_token_id"),
    ('{"eos_token_id": "2"}', "eos_token_id"),
    ('{"do_sample": "yes"}', "do_sample"),
    ('{"repetition_penalty": 1e999}', "number overflow"),
    ("[]", "expected a JSON object"),
    ("{", "invalid JSON"),
])
def test_malformed_generation_config(tiny_f32, tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as error:
        Checkpoint(tiny_with_config(tiny_f32, tmp_path, text, "generation_config.json"))
    assert "generation_config.json" in str(error.value)


def test_config_files_over_the_size_limit(tiny_f32, tmp_path):
    folder = tiny_with_config(tiny_f32, tmp_path / "model", "{}")
    sparse_file(folder / "config.json", 5 << 20, b"{")
    with pytest.raises(ConfigError, match="over the .*-byte limit"):
        Checkpoint(folder)
    with pytest.raises(ConfigError, match="over the .*-byte limit"):
        qwen2audio.Qwen2AudioConfig.from_pretrained(folder)


def test_config_that_is_not_utf8(tiny_f32, tmp_path):
    folder = tiny_with_config(tiny_f32, tmp_path, '{"model_type": "qwen2_audio", "torch_dtype": "\xff"}')
    (folder / "config.json").write_bytes(b'{"model_type": "qwen2_audio", "torch_dtype": "\xff"}')
    with pytest.raises(ConfigError, match="invalid JSON"):
        Checkpoint(folder)
    with pytest.raises(ConfigError, match="UTF-8"):
        qwen2audio.Qwen2AudioConfig.from_pretrained(folder)


# -------------------------------------------------------------------------------- tokenizer files
@pytest.fixture
def small_tokenizer(tmp_path: Path) -> Path:
    """Byte-level BPE over the 256 byte tokens and one merge, in vocab.json + merges.txt form."""
    alphabet = _bytes_to_unicode()
    vocab = {alphabet[byte]: byte for byte in range(256)}
    vocab["he"] = 256
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\nh e\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {}}), encoding="utf-8")
    return folder


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def test_small_tokenizer_loads(small_tokenizer):
    tokenizer = Qwen2Tokenizer.from_pretrained(small_tokenizer)
    assert tokenizer.encode("hehe") == [256, 256]


def test_deeply_nested_tokenizer_config(small_tokenizer):
    # Regression: added_tokens_decoder entries are quoted in error messages with a recursive dump();
    # 800 KB of '[' crashed the C++ loader. Python's own reader hit its recursion limit (RecursionError).
    (small_tokenizer / "tokenizer_config.json").write_text('{"added_tokens_decoder": {"300": ' + nested() + "}}")
    with pytest.raises(ConfigError, match="nested more than 64 levels"):
        _core.Tokenizer.from_directory(small_tokenizer)
    with pytest.raises(ConfigError, match="tokenizer_config.json: not valid JSON"):
        Qwen2Tokenizer.from_pretrained(small_tokenizer)


def test_deeply_nested_tokenizer_json(small_tokenizer):
    vocab = json.loads((small_tokenizer / "vocab.json").read_text())
    document = {"model": {"type": "BPE", "vocab": vocab, "merges": ["h e"]},
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}}
    text = json.dumps(document)[:-1] + ', "post_processor": ' + nested() + "}"
    (small_tokenizer / "tokenizer.json").write_text(text)
    with pytest.raises(ConfigError, match="tokenizer.json: JSON nested more than 64 levels"):
        Qwen2Tokenizer.from_pretrained(small_tokenizer)
    (small_tokenizer / "tokenizer.json").write_text(json.dumps(document))
    assert Qwen2Tokenizer.from_pretrained(small_tokenizer).encode("hehe") == [256, 256]


@pytest.mark.parametrize("name, content, message", [
    ("added_tokens.json", "[]", "must map token contents to ids"),
    ("added_tokens.json", '{"<x>": -1}', "outside"),
    ("added_tokens.json", '{"<x>": 16777216}', "outside"),
    ("added_tokens.json", '{"": 300}', "empty content"),
    ("added_tokens.json", '{"<x>": "300"}', "must be an integer"),
    ("tokenizer_config.json", "[]", "must hold a JSON object"),
    ("tokenizer_config.json", b'{"eos_token": "\xff"}', "not valid"),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"300": {"content": "<x>", "special": "yes"}}}',
     "'special' must be true or false"),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"-1": {"content": "<x>"}}}', "not a token id"),
    ("tokenizer_config.json", '{"added_tokens_decoder": {"99999999999999999999": {"content": "<x>"}}}',
     "not a token id"),
    ("tokenizer_config.json", '{"added_tokens_decoder": []}', "must map ids to tokens"),
    ("tokenizer_config.json", '{"padding_side": "middle"}', "padding_side"),
    ("tokenizer_config.json", '{"eos_token": 5}', "special token must be a string"),
    ("tokenizer_config.json", '{"additional_special_tokens": "<x>"}', "must be a list"),
    ("chat_template.json", "[1]", "chat_template"),
    ("chat_template.json", '{"chat_template": [{"name": "x"}]}', "chat_template"),
    ("vocab.json", "{" + '"a": 1, ' * 3 + '"b": 16777216}', "outside"),
    ("vocab.json", '{"a": ' + nested(100) + "}", "vocabulary ids must be integers"),
    ("merges.txt", "#version: 0.2\n\n\nh  e\n", "two tokens separated by one space"),
])
def test_malformed_tokenizer_files(small_tokenizer, name, content, message):
    path = small_tokenizer / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as error:
        Qwen2Tokenizer.from_pretrained(small_tokenizer)
    assert isinstance(error.value, (ConfigError, ValueError))


def test_token_longer_than_the_decoder_allows(small_tokenizer):
    vocab = json.loads((small_tokenizer / "vocab.json").read_text())
    vocab["a" * 70_000] = 257
    (small_tokenizer / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ConfigError, match="token 257 is empty or longer than 64 KiB"):
        Qwen2Tokenizer.from_pretrained(small_tokenizer)


def test_oversized_tokenizer_config_is_refused_before_reading(small_tokenizer):
    sparse_file(small_tokenizer / "tokenizer_config.json", 65 << 20, b"{")
    with pytest.raises(ConfigError, match="over the .*-byte limit"):
        Qwen2Tokenizer.from_pretrained(small_tokenizer)
    with pytest.raises(ConfigError, match="over the .*-byte limit"):
        _core.Tokenizer.from_directory(small_tokenizer)


# ---------------------------------------------------------------------------------------- prompts
@pytest.fixture(scope="module")
def tokenizer(reference_dir: Path) -> Qwen2Tokenizer:
    return Qwen2Tokenizer.from_pretrained(reference_dir / "tokenizer")


def test_text_that_is_not_unicode_scalar_values(tokenizer):
    for text in ("a\ud800b", "\udfff", "ok " * 10 + "\ud83d"):
        with pytest.raises(ValueError, match="surrogate"):
            tokenizer.encode(text)
        with pytest.raises(ValueError, match="surrogate"):
            tokenizer(["fine", text])
    with pytest.raises(ValueError, match="string"):
        tokenizer([b"bytes are not text"])


def test_control_characters_and_nul_round_trip(tokenizer):
    text = "a\x00b\x01\x7f\u200b\ufeff\U0010ffff\ufffe end"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_very_long_word_encodes(tokenizer):
    # One 1 MB "word" (no split point): BPE must neither recurse per byte nor cache it.
    text = "x" * (1 << 20)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text


def test_bad_ids_for_decoding(tokenizer):
    for bad in ([2**70], [1.5], ["1"], [[1, 2], [3]], np.array([1], dtype=np.float32), [None]):
        with pytest.raises(ValueError):
            tokenizer.decode(bad)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.decode(np.array([2**63 - 1], dtype=np.int64))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.batch_decode([[1, 2], [tokenizer.vocab_size + 1000]])
    decoder = tokenizer.incremental_decoder()
    assert decoder.add(9707) == "Hello"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        decoder.add(-1)
    assert decoder.add(1879) == " world"  # still usable after the error


def test_processor_bad_audio_items(reference_dir, tmp_path):
    processor = qwen2audio.Qwen2AudioProcessor.from_pretrained(reference_dir / "tokenizer")
    prompt = "<|audio_bos|><|AUDIO|><|audio_eos|>What is this?"
    for audio, message in ((tmp_path / "missing.wav", "missing.wav"), ([None], "clip 0"),
                           ([np.zeros((2, 2, 2), np.float32)], "1-D"), ([np.array([], np.float32)], "empty"),
                           ([np.array(["a", "b"])], "dtype"), (b"not audio", "<bytes>")):
        with pytest.raises(ValueError, match=message):
            processor(text=prompt, audio=audio)
    conversation = [{"role": "user", "content": [{"type": "audio", "audio_url": str(tmp_path / "gone.wav")}]}]
    with pytest.raises(ValueError, match="gone.wav"):
        processor.apply_chat_template(conversation, tokenize=True)
    for bad in ([{"role": "user", "content": ["not a dict"]}], ["not a message"], [{"content": "no role"}]):
        with pytest.raises(ValueError):
            processor.apply_chat_template(bad, tokenize=True)


def test_hostile_chat_templates_are_sandboxed(reference_dir):
    processor = qwen2audio.Qwen2AudioProcessor.from_pretrained(reference_dir / "tokenizer")
    conversation = [{"role": "user", "content": "hi"}]
    for template, message in (
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "failed to render"),
        ("{% for m in messages %}{{ m.update({'role': 'x'}) }}{% endfor %}", "failed to render"),
        ("{% for i in range(10**9) %}{{ i }}{% endfor %}", "failed to render"),
        ("{{ messages[0].content / 0 }}", "failed to render"),
        ("{{ cycler.__init__.__globals__ }}", "failed to render"),
        ("{{ raise_exception('refused') }}", "refused"),
        ("{% if %}", "does not compile"),
    ):
        with pytest.raises(TemplateError, match=message):
            processor.apply_chat_template(conversation, chat_template=template)
    assert issubclass(TemplateError, ValueError)


# ------------------------------------------------------------------------------------------ audio
def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1, float32: bool = False) -> bytes:
    data = np.asarray(samples, np.float32 if float32 else np.int16).tobytes()
    width = 4 if float32 else 2
    fmt = struct.pack("<HHIIHH", 3 if float32 else 1, channels, rate, rate * width * channels, width * channels,
                      8 * width)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt +
            b"data" + struct.pack("<I", len(data)) + data)


def test_absurd_sample_rate_is_refused_quickly():
    # Regression: a 64-byte WAV claiming 1 Hz made the loader size a 4 GB resampling buffer (16000x
    # upsampling of a 65536-frame block) and spend a minute in libsoxr.
    for rate in (1, 10, 62):
        with pytest.raises(ValueError, match=f"sample rate of {rate} Hz is too far from 16000 Hz"):
            load_audio(wav_bytes(np.full(10, 1000), rate))
    # Within the ratio limit it loads, resampled: 100 Hz -> 16 kHz is 160x.
    assert load_audio(wav_bytes(np.full(10, 1000), 100)).size == 1600
    with pytest.raises(ValueError, match="1000000 Hz is too far from 3000 Hz"):
        load_audio(wav_bytes(np.full(10, 1000), 1_000_000), sampling_rate=3000)


def test_many_channels_load_with_bounded_buffers():
    # 1024 channels is libsndfile's maximum; the decode block shrinks with the channel count.
    frames = np.tile(np.arange(1024, dtype=np.int16), 8)  # 8 frames, channel c holds c
    samples = load_audio(wav_bytes(frames, 16000, channels=1024))
    np.testing.assert_allclose(samples, np.full(8, np.arange(1024).mean() / 32768, np.float32), rtol=1e-6)


@pytest.mark.parametrize("cut", [12, 36, 44, 45])
def test_truncated_wav(reference_dir, cut):
    data = (reference_dir / "audio" / "speech_en.wav").read_bytes()[:cut]
    with pytest.raises(ValueError, match="<bytes>"):
        load_audio(data)


def test_wav_claiming_more_data_than_present(reference_dir):
    data = bytearray((reference_dir / "audio" / "speech_en.wav").read_bytes()[:1044])
    data[40:44] = struct.pack("<I", 0x7FFF0000)  # the data chunk claims 2 GB
    samples = load_audio(bytes(data))
    expected = load_audio(reference_dir / "audio" / "speech_en.wav")[:500]
    np.testing.assert_array_equal(samples, expected)


FUZZ_REGRESSIONS = Path(__file__).resolve().parents[1] / "fuzz" / "regressions"


@pytest.mark.parametrize("path", sorted((FUZZ_REGRESSIONS / "audio").glob("*")), ids=lambda path: path.name)
def test_saved_fuzz_inputs_for_audio(path):
    # fuzz_audio's input: one byte choosing the output rate, then the encoded file. Each of these once
    # found a bug (vorbis_header_leak.ogg: libvorbis leaks on it, suppressed in tests/fuzz/lsan.supp);
    # here each must load as finite audio or be refused with a ValueError naming the source.
    data = path.read_bytes()
    rate = (16000, 16000, 8000, 44100)[data[0] % 4]
    try:
        samples = load_audio(data[1:], sampling_rate=rate, max_seconds=10)
    except ValueError as error:
        assert "<bytes>" in str(error)
    else:
        assert samples.size > 0 and np.isfinite(samples).all()


def test_float_wav_with_non_finite_samples():
    with pytest.raises(ValueError, match="sample 1 is NaN or infinite"):
        load_audio(wav_bytes(np.array([0.1, np.nan, 0.2]), 16000, float32=True))
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_audio(wav_bytes(np.array([0.1, 0.2, -np.inf]), 8000, float32=True))  # through the resampler


def test_load_audio_argument_ranges(reference_dir):
    path = reference_dir / "audio" / "speech_en.wav"
    for bad in (dict(sampling_rate=2**40), dict(sampling_rate=10**7), dict(sampling_rate=-1),
                dict(sampling_rate="16000"), dict(max_seconds=-1.0), dict(max_seconds=float("nan")),
                dict(max_seconds="60")):
        with pytest.raises(ValueError):
            load_audio(path, **bad)
    assert load_audio(path, max_seconds=1e300).size == 49326  # huge but finite: no int64 overflow


@pytest.mark.parametrize("settings", [
    dict(feature_size=2**40), dict(sampling_rate=2**31), dict(n_fft=-400), dict(hop_length=0),
    dict(feature_size=128, chunk_length=3600, hop_length=1),  # 2^34 features per clip
    dict(feature_size=4096, n_fft=65536),  # a 1 GB filter bank
    dict(chunk_length=3601),
])
def test_feature_extractor_settings_that_would_allocate_without_bound(settings):
    with pytest.raises(ValueError):
        qwen2audio.WhisperFeatureExtractor(**settings)


def test_feature_extractor_config_files(tmp_path):
    config = tmp_path / "preprocessor_config.json"
    config.write_text('{"feature_size": ' + nested() + "}")
    with pytest.raises(ValueError, match="not valid JSON"):
        qwen2audio.WhisperFeatureExtractor.from_pretrained(tmp_path)
    config.write_bytes(b'{"feature_size": 128, "x": "\xff"}')
    with pytest.raises(ValueError, match="UTF-8"):
        qwen2audio.WhisperFeatureExtractor.from_pretrained(tmp_path)
    sparse_file(config, 65 << 20, b"{")
    with pytest.raises(ValueError, match="over the .*-byte limit"):
        qwen2audio.WhisperFeatureExtractor.from_pretrained(tmp_path)
    config.write_text("[128]")
    with pytest.raises(ValueError, match="JSON object"):
        qwen2audio.WhisperFeatureExtractor.from_pretrained(tmp_path)


def test_feature_extractor_odd_arrays(reference_dir):
    extractor = qwen2audio.WhisperFeatureExtractor(feature_size=128)
    audio = np.load(reference_dir / "mel" / "speech_en.audio.npy")
    expected = extractor(audio)["input_features"]
    # Strided and read-only views give the same features as a contiguous copy.
    strided = np.repeat(audio, 2)[::2]
    read_only = audio.copy()
    read_only.setflags(write=False)
    np.testing.assert_array_equal(extractor(strided)["input_features"], expected)
    np.testing.assert_array_equal(extractor(read_only)["input_features"], expected)
    for bad in (np.float32(0.5), np.zeros(10, np.complex64), np.zeros(10, bool), np.array([object()]),
                [[0.1, "x"]], np.zeros((1, 0), np.float32)):
        with pytest.raises(ValueError):
            extractor(bad)


# ------------------------------------------------------------------------------ generation arguments
@pytest.fixture(scope="module")
def model(tiny_f32: Path) -> qwen2audio.Qwen2AudioForConditionalGeneration:
    return qwen2audio.Qwen2AudioForConditionalGeneration.from_pretrained(tiny_f32, dtype="float32")


PROMPT = [[151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198]]


@pytest.mark.parametrize("arguments, message", [
    (dict(seed=2**64), "seed"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(do_sample=True, top_k=2**70), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(pad_token_id=10**20), "pad_token_id"),
    (dict(pad_token_id=-1), "pad_token_id"),
    (dict(pad_token_id=151649), "pad_token_id"),
    (dict(temperature="hot", do_sample=True), "temperature"),
    (dict(temperature=float("nan"), do_sample=True), "temperature"),
    (dict(top_p=float("nan"), do_sample=True), "top_p"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty"),
    (dict(eos_token_id="abc"), "eos_token_id"),
    (dict(eos_token_id=[1.5]), "eos_token_id"),
    (dict(eos_token_id=[2**70]), "eos_token_id"),
    (dict(max_new_tokens=2**70), "max_position_embeddings"),
    (dict(max_new_tokens=3.0), "max_new_tokens"),
    (dict(max_new_tokens=None, max_length=5), "max_length"),
])
def test_bad_generation_arguments(model, arguments, message):
    arguments.setdefault("max_new_tokens", 2)
    with pytest.raises(ValueError, match=message):
        model.generate(PROMPT, **arguments)


def test_bad_session_arguments(model):
    for size in (0, -1, 10**9, 2**70, 1.5, "2"):
        with pytest.raises(ValueError, match="batch_size"):
            model.start_session(batch_size=size)
    session = model.start_session()
    session.append(PROMPT)
    for length in (2**70, -1, len(PROMPT[0]) + 1):
        with pytest.raises(ValueError):
            session.truncate(length)
    with pytest.raises(ValueError, match="rows"):
        session.append([[1, 2], [3, 4]])
    assert session.generate(max_new_tokens=1, eos_token_id=[]).shape == (1, 1)  # still usable


def test_prompts_past_the_context_window(model):
    limit = model.config.text_config.max_position_embeddings
    too_long = np.full((1, limit + 1), 9707, dtype=np.int64)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(too_long, max_new_tokens=1)
    session = model.start_session()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        session.append(too_long)
    assert len(session) == 0


def test_audio_features_of_odd_shapes(model, reference_dir):
    features = np.load(reference_dir / "mel" / "speech_en.input_features.npy")[None]
    for bad in (features[:, :, :0], features[:, :64], np.zeros((0, 128, 3000), np.float32), features[..., :10]):
        with pytest.raises(ValueError):
            model.encode_audio(bad)
    with pytest.raises(ValueError, match="floating point"):
        model.encode_audio(features.astype(np.int32))
