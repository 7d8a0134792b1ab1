"""Shared fixtures: the golden data in ../shared/reference and complete tiny checkpoint folders."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"
TOKENIZER_FILES_EXCLUDED = {"chat_examples.json", "bpe_validation.json", "llama_cpp_vectors"}


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.fail(f"golden reference data not found at {REFERENCE}: it must sit beside the project as ../shared")
    return REFERENCE


def _materialize_tiny_model(reference: Path, dtype: str, destination: Path) -> Path:
    """A complete checkpoint folder, as the reference README describes: weights gunzipped plus
    the tokenizer files."""
    source = reference / "tiny_model" / dtype
    destination.mkdir(parents=True)
    with gzip.open(source / "model.safetensors.gz", "rb") as compressed, open(destination / "model.safetensors", "wb") as out:
        shutil.copyfileobj(compressed, out)
    for name in ("config.json", "generation_config.json"):
        shutil.copy(source / name, destination / name)
    for item in (reference / "tokenizer").iterdir():
        if item.name not in TOKENIZER_FILES_EXCLUDED and item.is_file():
            shutil.copy(item, destination / item.name)
    return destination


@pytest.fixture(scope="session")
def tiny_f32(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _materialize_tiny_model(reference_dir, "f32", tmp_path_factory.mktemp("tiny") / "f32")


@pytest.fixture(scope="session")
def tiny_bf16(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _materialize_tiny_model(reference_dir, "bf16", tmp_path_factory.mktemp("tiny") / "bf16")


def write_sine_wav(path: Path, seconds: float, frequency: float, rate: int = 16000) -> Path:
    """A 16-bit mono WAV of a sine tone, written with the standard library."""
    import wave

    import numpy as np

    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((0.3 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="session")
def sine_wav():
    """Factory fixture: ``sine_wav(path, seconds, frequency)`` writes a test clip."""
    return write_sine_wav
