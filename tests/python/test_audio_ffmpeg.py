"""load_audio reads m4a/AAC/WebM through the ffmpeg program, refuses URLs, and says what to install when
ffmpeg is missing. The files are made by ffmpeg itself (installed by scripts/install-deps.sh)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from qwen2audio import load_audio

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (scripts/install-deps.sh adds it)")


def _stereo_wav(path: Path, rate: int = 44100, seconds: float = 1.5) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1000 * t)
    frames = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.tobytes())
    return path


def _ffmpeg(source: Path, target: Path, *codec: str) -> Path:
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(source), *codec, str(target)], check=True, timeout=120)
    return target


def _peak_hz(audio: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[np.argmax(spectrum)])


@needs_ffmpeg
def test_lossless_m4a_equals_the_wav_it_was_made_from(tmp_path: Path) -> None:
    # ALAC in an .m4a holds the WAV's exact samples, so after ffmpeg decodes the container the same channel
    # averaging and resampling (44.1 kHz stereo -> 16 kHz mono) must give the same array as the WAV route.
    wav = _stereo_wav(tmp_path / "tone.wav")
    m4a = _ffmpeg(wav, tmp_path / "tone.m4a", "-c:a", "alac")
    expected = load_audio(wav, sampling_rate=16000)
    for source in (m4a, str(m4a), m4a.read_bytes(), open(m4a, "rb")):
        got = load_audio(source, sampling_rate=16000)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6)


@needs_ffmpeg
@pytest.mark.parametrize("suffix, codec", [(".m4a", ["-c:a", "aac"]), (".aac", ["-c:a", "aac", "-f", "adts"]),
                                           (".webm", ["-c:a", "libopus"])])
def test_lossy_formats_decode(tmp_path: Path, suffix: str, codec: list[str]) -> None:
    rate = 16000
    t = np.arange(2 * rate) / rate
    with wave.open(str(tmp_path / "tone.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())
    encoded = _ffmpeg(tmp_path / "tone.wav", tmp_path / f"tone{suffix}", *codec)
    audio = load_audio(encoded, sampling_rate=16000)
    assert abs(audio.size / 16000 - 2.0) < 0.2  # lossy encoders add priming and padding frames
    assert abs(_peak_hz(audio) - 440) < 5
    # The same bytes under a name libsndfile cannot place (no extension) are recognised too.
    anonymous = tmp_path / "upload"
    anonymous.write_bytes(encoded.read_bytes())
    assert load_audio(anonymous, sampling_rate=16000).shape == audio.shape


@needs_ffmpeg
def test_length_limit_applies_to_ffmpeg_input(tmp_path: Path) -> None:
    m4a = _ffmpeg(_stereo_wav(tmp_path / "tone.wav", seconds=3.0), tmp_path / "tone.m4a", "-c:a", "alac")
    with pytest.raises(ValueError, match="longer than the limit"):
        load_audio(m4a, sampling_rate=16000, max_seconds=1.0)


@needs_ffmpeg
def test_undecodable_m4a_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(b"\x00\x00\x00\x20ftypM4A not really audio")
    with pytest.raises(ValueError, match=r"broken\.m4a.*ffmpeg could not decode it"):
        load_audio(broken)


def test_without_ffmpeg_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = tmp_path / "voice.m4a"
    clip.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert shutil.which("ffmpeg") is None
    with pytest.raises(ValueError, match=r"install ffmpeg \(apt-get install ffmpeg\) to read \.m4a"):
        load_audio(clip)
    with pytest.raises(ValueError, match=r"install ffmpeg \(apt-get install ffmpeg\) to read \.m4a"):
        load_audio(clip.read_bytes())


def test_urls_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="URLs are not fetched; download the file first"):
        load_audio("https://example.com/clip.wav")
    with pytest.raises(ValueError, match=r"missing\.wav'?: no such file"):
        load_audio(tmp_path / "missing.wav")


def test_fifo_with_an_ffmpeg_extension_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import threading

    os.mkfifo(tmp_path / "clip.m4a")
    outcome: list = []

    def read() -> None:
        try:
            load_audio(tmp_path / "clip.m4a")
        except ValueError as error:
            outcome.append(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(30)
    assert outcome and "not a regular file" in str(outcome[0])
