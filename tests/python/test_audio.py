"""Audio input and the Whisper log-mel front end against the golden features in ../shared/reference/mel
(made by transformers' WhisperFeatureExtractor, torch path, as Qwen2AudioProcessor calls it)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

import qwen2audio
from qwen2audio import _core
from qwen2audio.audio import (
    AudioTruncatedWarning,
    WhisperFeatureExtractor,
    load_audio,
    num_audio_tokens,
    split_audio,
)

# The reference's recommended tolerance (manifest.json); independent implementations (transformers'
# numpy and torch paths) differ by up to 5e-5 on these cases.
ATOL = 1e-4


@pytest.fixture(scope="module")
def manifest(reference_dir: Path) -> dict:
    return json.loads((reference_dir / "mel" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def extractor(reference_dir: Path) -> WhisperFeatureExtractor:
    return WhisperFeatureExtractor.from_pretrained(reference_dir / "tokenizer")


def _case_audio(reference_dir: Path, case: dict) -> np.ndarray:
    """The float audio transformers was given: audio.npy where the reference ships it, else the canonical
    16-bit WAV (long_47s)."""
    if case.get("audio_npy"):
        return np.load(reference_dir / case["audio_npy"])
    return load_audio(reference_dir / case["wav"])


def _cases(manifest: dict) -> dict[str, dict]:
    return {name: case for name, case in manifest["cases"].items() if "input_features" in case}


# ------------------------------------------------------------------------------------ features
def test_every_reference_case_matches(extractor, manifest, reference_dir) -> None:
    cases = _cases(manifest)
    assert len(cases) >= 8
    for name, case in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AudioTruncatedWarning)
            out = extractor(_case_audio(reference_dir, case), sampling_rate=16000)
        features, mask = out["input_features"], out["attention_mask"]
        assert features.shape == (1, 128, 3000) and features.dtype == np.float32, name
        assert mask.shape == (1, 3000) and mask.dtype == np.int32, name
        expected = np.load(reference_dir / case["input_features"])
        assert np.abs(features[0] - expected).max() <= ATOL, name
        np.testing.assert_array_equal(mask[0], np.load(reference_dir / case["feature_attention_mask"]), err_msg=name)
        assert int(mask.sum()) == case["mask_sum"], name


def test_batch_of_all_cases_equals_one_by_one(extractor, manifest, reference_dir) -> None:
    clips = [_case_audio(reference_dir, case) for case in _cases(manifest).values()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioTruncatedWarning)
        batch = extractor(clips)
        singles = [extractor(clip) for clip in clips]
    assert batch["input_features"].shape == (len(clips), 128, 3000)
    for index, single in enumerate(singles):
        np.testing.assert_array_equal(batch["input_features"][index], single["input_features"][0])
        np.testing.assert_array_equal(batch["attention_mask"][index], single["attention_mask"][0])


def test_thread_counts_agree(extractor, reference_dir) -> None:
    clip = np.load(reference_dir / "mel" / "speech_en.audio.npy")
    one = extractor([clip, clip[::-1].copy()], num_threads=1)["input_features"]
    two = extractor([clip, clip[::-1].copy()], num_threads=2)["input_features"]
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("precision", ["double", "float"])
def test_every_kernel_variant_this_cpu_runs_matches(manifest, reference_dir, precision) -> None:
    isas = ["sse", "avx2", "avx512"]
    available = isas[: isas.index(_core.cpu_lane_isa()) + 1]
    case = _cases(manifest)["chirp_5s"]
    audio = _case_audio(reference_dir, case)
    expected = np.load(reference_dir / case["input_features"])
    for isa in available:
        features, _ = _core.WhisperLogMel(precision=precision, isa=isa)([audio])
        assert np.abs(features[0] - expected).max() <= ATOL, (precision, isa)


def test_frames_in_the_padding_equal_explicit_zeros(extractor, reference_dir) -> None:
    # Frames lying wholly in the zero padding skip their DFT; giving the zeros explicitly makes every
    # frame go through it. The two must agree exactly wherever the clip max - 8 clamp applies (loud clips).
    clip = np.load(reference_dir / "mel" / "sine440_2s.audio.npy")
    padded = np.zeros(480000, np.float32)
    padded[: clip.size] = clip
    short, full = extractor([clip, padded])["input_features"]
    np.testing.assert_array_equal(short, full)


def _float64_features(clip: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
    """transformers' formula in float64 NumPy, independent of the engine (its numpy path, vectorised)."""
    padded = np.zeros(480000)
    padded[: min(clip.size, 480000)] = clip[:480000]
    padded = np.pad(padded, 200, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160][:3000]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
    log_spec = np.log10(np.maximum(mel_filters @ power.T, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("length", [1, 2, 150, 201, 479641, 479999, 480000, 480001])
def test_edge_lengths_match_the_formula(extractor, reference_dir, length) -> None:
    # Lengths the reference cases miss: shorter than the reflect padding, and ending inside the last
    # frames, where the right-hand reflection reads real audio.
    rng = np.random.default_rng(length)
    clip = (rng.standard_normal(length) * 0.2).astype(np.float32)
    mel_filters = np.load(reference_dir / "mel" / "mel_filters_128x201.npy").astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AudioTruncatedWarning)  # 480001: truncated, tested elsewhere
        out = extractor(clip)
    # The engine's DFT runs in double: against exact float64 arithmetic it is within ~1e-5 (the float
    # mel bank and power), well inside the 1e-4 allowed against transformers' float32 torch path.
    assert np.abs(out["input_features"][0] - _float64_features(clip.astype(np.float64), mel_filters)).max() <= 2e-5
    assert out["attention_mask"][0].sum() == min(-(-length // 160), 3000)


def test_mel_bank_matches_reference(reference_dir, extractor) -> None:
    expected = np.load(reference_dir / "mel" / "mel_filters_128x201.npy")  # (128, 201): transformers' bank .T
    bank = _core.mel_filter_bank(201, 128, 0.0, 8000.0, 16000)
    assert bank.shape == (128, 201) and bank.dtype == np.float64
    assert np.abs(bank.astype(np.float32) - expected).max() <= 1e-8
    # transformers' orientation on the extractor: (frequency bins, mel filters).
    assert extractor.mel_filters.shape == (201, 128)
    np.testing.assert_array_equal(extractor.mel_filters.T, bank)


def test_input_dtypes(extractor, reference_dir) -> None:
    pcm = (np.load(reference_dir / "mel" / "speech_en.audio.npy") * 32768).round().astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    reference = extractor(as_float)["input_features"]
    np.testing.assert_array_equal(extractor(pcm)["input_features"], reference)  # int16 / 32768
    np.testing.assert_array_equal(extractor(as_float.astype(np.float64))["input_features"], reference)
    np.testing.assert_array_equal(extractor(list(map(float, as_float[:4000])))["input_features"],
                                  extractor(as_float[:4000])["input_features"])
    np.testing.assert_array_equal(extractor([as_float.tolist()])["input_features"], reference)


def test_return_options(extractor, reference_dir) -> None:
    clip = np.load(reference_dir / "mel" / "noise_1s.audio.npy")
    assert set(extractor(clip, return_attention_mask=False)) == {"input_features"}
    torch = pytest.importorskip("torch")
    out = extractor(clip, return_tensors="pt")
    assert isinstance(out["input_features"], torch.Tensor) and tuple(out["input_features"].shape) == (1, 128, 3000)


# ---------------------------------------------------------------------------------- bad input
def test_wrong_sampling_rate_names_the_fix(extractor) -> None:
    clip = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match=r"load_audio\(path, sampling_rate=16000\)"):
        extractor(clip, sampling_rate=44100)
    extractor(clip, sampling_rate=16000)  # the right rate is fine


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(extractor, bad) -> None:
    clip = np.zeros(16000, np.float32)
    clip[1234] = bad
    with pytest.raises(ValueError, match="NaN or infinite.*1234"):
        extractor(clip)
    with pytest.raises(ValueError, match="clip 1"):
        extractor([np.zeros(100, np.float32), clip])


def test_stereo_array_gets_a_channel_hint(extractor) -> None:
    with pytest.raises(ValueError, match="average the channels"):
        extractor(np.zeros((16000, 2), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        extractor(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        extractor(np.float32(0.5).reshape(()))


def test_empty_audio(extractor) -> None:
    with pytest.raises(ValueError, match="empty"):
        extractor(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="empty"):
        extractor([np.zeros(10, np.float32), np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="no audio"):
        extractor([])


@pytest.mark.parametrize(
    "clip", [np.array(["a", "b"]), np.array([object(), object()]), np.zeros(8, np.complex64), np.zeros(8, bool)]
)
def test_non_numeric_dtype(extractor, clip) -> None:
    with pytest.raises(ValueError, match="dtype"):
        extractor(clip)


def test_non_numeric_list(extractor) -> None:
    with pytest.raises(ValueError, match="not numeric"):
        extractor([["a", "b"]])
    with pytest.raises(ValueError, match="raw_speech"):
        extractor("speech.wav")


def test_unsupported_options(extractor) -> None:
    clip = np.zeros(100, np.float32)
    with pytest.raises(ValueError, match="padding"):
        extractor(clip, padding="longest")
    with pytest.raises(ValueError, match="return_tensors"):
        extractor(clip, return_tensors="tf")
    with pytest.raises(ValueError, match="num_threads"):
        extractor(clip, num_threads=0)


# ---------------------------------------------------------------------------------- long audio
def test_long_audio_warns_and_truncates(extractor, reference_dir, manifest) -> None:
    long_clip = load_audio(reference_dir / "audio" / "long_47s.wav")
    assert long_clip.size == 752000
    with pytest.warns(AudioTruncatedWarning, match=r"30 s.*47\.0 s.*split_audio"):
        out = extractor(long_clip)
    # Truncation is what transformers does: identical to giving the first 30 s.
    np.testing.assert_array_equal(out["input_features"], extractor(long_clip[:480000])["input_features"])
    assert issubclass(AudioTruncatedWarning, UserWarning)
    with pytest.raises(ValueError, match="split_audio"):
        extractor(long_clip, truncation=False)


def test_audio_up_to_30s_does_not_warn(extractor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        extractor(np.zeros(480000, np.float32))


def test_split_audio(reference_dir, extractor) -> None:
    long_clip = load_audio(reference_dir / "audio" / "long_47s.wav")
    pieces = split_audio(long_clip)
    assert [piece.size for piece in pieces] == [480000, 272000]
    np.testing.assert_array_equal(np.concatenate(pieces), long_clip)
    assert [piece.size for piece in split_audio(np.ones(100), sampling_rate=10, chunk_seconds=2.5)] == [25] * 4
    assert [piece.size for piece in split_audio(np.ones(101), sampling_rate=10, chunk_seconds=2.5)] == [25] * 4 + [1]
    assert len(split_audio(np.ones(10))) == 1
    # Each window is an ordinary segment: no warning, and the second has 272000 samples of audio.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = extractor(pieces)["attention_mask"]
    assert mask.sum(axis=1).tolist() == [3000, 1700]
    for bad in (dict(chunk_seconds=0), dict(chunk_seconds=float("nan")), dict(sampling_rate=0)):
        with pytest.raises(ValueError):
            split_audio(long_clip, **bad)
    with pytest.raises(ValueError, match="1-D"):
        split_audio(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="empty"):
        split_audio(np.zeros(0))


def test_num_audio_tokens_matches_reference(manifest) -> None:
    for name, case in _cases(manifest).items():
        assert num_audio_tokens(case["mask_sum"]) == case["num_audio_tokens"], name

    # Every length, against the encoder's shapes counted out: the second conv (kernel 3, padding 1,
    # stride 2) then the average pool (kernel 2, stride 2) - output positions are window starts that fit.
    def counted(frames: int) -> int:
        conv = len(range(0, frames + 2 * 1 - 3 + 1, 2))
        return len(range(0, conv - 2 + 1, 2))

    assert [num_audio_tokens(length) for length in range(1, 3001)] == [counted(length) for length in range(1, 3001)]
    assert num_audio_tokens(np.int64(500)) == 125
    with pytest.raises(ValueError):
        num_audio_tokens(-1)
    with pytest.raises(TypeError):
        num_audio_tokens(2.5)


# -------------------------------------------------------------------------------------- files
def test_load_audio_wav_is_int16_over_32768(manifest, reference_dir) -> None:
    checked = 0
    for name, case in manifest["cases"].items():
        if not case.get("audio_npy"):
            continue
        samples = load_audio(reference_dir / case["wav"])
        assert samples.dtype == np.float32 and samples.ndim == 1, name
        np.testing.assert_array_equal(samples, np.load(reference_dir / case["audio_npy"]), err_msg=name)
        checked += 1
    assert checked >= 7


def test_load_audio_from_bytes_and_file_objects(reference_dir) -> None:
    path = reference_dir / "audio" / "speech_en.wav"
    expected = load_audio(path)
    data = path.read_bytes()
    np.testing.assert_array_equal(load_audio(data), expected)
    np.testing.assert_array_equal(load_audio(bytearray(data)), expected)
    np.testing.assert_array_equal(load_audio(memoryview(data)), expected)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), expected)
    np.testing.assert_array_equal(load_audio(str(path)), expected)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(load_audio(handle), expected)
    # Exposed through the package's lazy names too (the truncation warning's advice names them).
    assert qwen2audio.load_audio is load_audio
    assert qwen2audio.split_audio is split_audio and qwen2audio.AudioTruncatedWarning is AudioTruncatedWarning


def test_load_audio_resamples_like_sox(reference_dir) -> None:
    # stereo_44k1.wav averaged to mono and resampled by libsoxr (high quality) against the reference made by
    # `sox -D stereo_44k1.wav -r 16000 -c 1 -b 16`. libsoxr grew out of SoX's own rate effect and both
    # default to linear phase with a ~95% passband, so the two differ by little more than the reference's
    # 16-bit rounding: +-0.5 LSB (1.5e-5), RMS LSB/sqrt(12) = 8.8e-6. Allowing 3 LSB peak (1e-4) and 1.7x
    # the rounding RMS (1.5e-5) leaves room for filter-design details while a real error (wrong rate,
    # channel sum instead of mean, a lost sample) moves the signal by orders of magnitude more (its RMS is 0.1).
    resampled = load_audio(reference_dir / "audio" / "stereo_44k1.wav", sampling_rate=16000)
    expected = load_audio(reference_dir / "audio" / "stereo_44k1_to16k.wav")
    assert resampled.size == expected.size
    difference = resampled - expected
    assert np.abs(difference).max() <= 1e-4
    assert np.sqrt(np.mean(difference**2)) <= 1.5e-5
    assert np.sqrt(np.mean(expected**2)) > 0.05  # the comparison is not between near-silences
    # At the file's own rate nothing is resampled: the mean of the channels, read independently here.
    with wave.open(str(reference_dir / "audio" / "stereo_44k1.wav")) as handle:
        assert (handle.getframerate(), handle.getnchannels(), handle.getsampwidth()) == (44100, 2, 2)
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").reshape(-1, 2).astype(np.float64)
    native = load_audio(reference_dir / "audio" / "stereo_44k1.wav", sampling_rate=44100)
    np.testing.assert_array_equal(native, (pcm.sum(axis=1) / 65536).astype(np.float32))


def test_load_audio_other_formats(reference_dir, tmp_path) -> None:
    sox = shutil.which("sox")
    if sox is None:
        pytest.skip("sox (scripts/install-deps.sh installs it) is needed to write FLAC/Ogg test files")
    source = reference_dir / "audio" / "speech_en.wav"
    expected = load_audio(source)
    subprocess.run([sox, str(source), str(tmp_path / "speech.flac")], check=True)
    np.testing.assert_array_equal(load_audio(tmp_path / "speech.flac"), expected)  # lossless
    subprocess.run([sox, str(source), str(tmp_path / "speech.ogg")], check=True)
    vorbis = load_audio(tmp_path / "speech.ogg")
    # Lossy: same length and the same signal up to coding noise.
    assert abs(vorbis.size - expected.size) <= 1
    size = min(vorbis.size, expected.size)
    correlation = np.corrcoef(vorbis[:size], expected[:size])[0, 1]
    assert correlation > 0.99


def test_load_audio_errors_name_the_file(tmp_path, reference_dir) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="corrupt.wav"):
        load_audio(corrupt)
    garbage = tmp_path / "noise.bin"
    garbage.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(ValueError, match="noise.bin"):
        load_audio(garbage)
    with pytest.raises(ValueError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="<bytes>"):
        load_audio(b"definitely not audio")
    with pytest.raises(ValueError):
        load_audio(b"")
    # A valid header with no samples.
    header_only = (reference_dir / "audio" / "speech_en.wav").read_bytes()[:44]
    empty = tmp_path / "empty.wav"
    empty.write_bytes(header_only[:40] + b"\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="empty.wav.*no audio"):
        load_audio(empty)
    with pytest.raises(ValueError, match="text mode|binary"):
        load_audio(io.StringIO("abc"))
    with pytest.raises(ValueError, match="path, bytes"):
        load_audio(12345)


def test_load_audio_length_cap(reference_dir) -> None:
    path = reference_dir / "audio" / "speech_en.wav"  # 3.08 s
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(path, max_seconds=1.0)
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(reference_dir / "audio" / "stereo_44k1.wav", max_seconds=1.0)  # resampled path
    assert load_audio(path, max_seconds=4.0).size == 49326
    for bad in (dict(max_seconds=0), dict(max_seconds=float("inf")), dict(sampling_rate=0), dict(sampling_rate=16000.5)):
        with pytest.raises(ValueError):
            load_audio(path, **bad)


# ------------------------------------------------------------------------------ configuration
def test_from_pretrained_and_round_trip(reference_dir, tmp_path, extractor) -> None:
    config = json.loads((reference_dir / "tokenizer" / "preprocessor_config.json").read_text())
    assert extractor.feature_size == 128 and extractor.n_samples == 480000 and extractor.nb_max_frames == 3000
    saved = extractor.to_dict()
    for key, value in config.items():
        assert saved[key] == value, key
    extractor.save_pretrained(tmp_path)
    again = WhisperFeatureExtractor.from_pretrained(tmp_path)
    assert again == extractor and again.to_dict() == saved
    assert WhisperFeatureExtractor.from_pretrained(tmp_path / "preprocessor_config.json") == extractor


def test_missing_keys_take_transformers_defaults(tmp_path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    loaded = WhisperFeatureExtractor.from_pretrained(tmp_path)
    assert (loaded.sampling_rate, loaded.hop_length, loaded.chunk_length, loaded.n_fft) == (16000, 160, 30, 400)
    assert loaded.padding_value == 0.0 and loaded.return_attention_mask is False
    assert WhisperFeatureExtractor().feature_size == 80  # transformers' class default
    assert WhisperFeatureExtractor.from_pretrained(tmp_path, feature_size=80).feature_size == 80


def test_other_settings_change_the_shape(reference_dir) -> None:
    small = WhisperFeatureExtractor(feature_size=80, chunk_length=10)
    out = small(np.load(reference_dir / "mel" / "speech_en.audio.npy"))
    assert out["input_features"].shape == (1, 80, 1000)
    assert out["attention_mask"].sum() == 309


def test_bad_configs(tmp_path) -> None:
    with pytest.raises(ValueError, match="no preprocessor_config.json"):
        WhisperFeatureExtractor.from_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        WhisperFeatureExtractor.from_pretrained(tmp_path)
    for bad in (
        {"feature_size": 0},
        {"n_fft": 1},
        {"hop_length": "160"},
        {"feature_extractor_type": "SeamlessM4TFeatureExtractor"},
        {"padding_value": 1.0},
        {"dither": 1e-5},
        {"padding_side": "left"},
    ):
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError):
            WhisperFeatureExtractor.from_pretrained(tmp_path)
