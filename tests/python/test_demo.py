"""The demo checkpoint and `qwen2audio demo` work from any install, in any folder: the real Qwen2 tokenizer
ships as package data, and the cached demo folder is keyed on what it holds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen2audio import _core, demo
from qwen2audio.demo import MARKER, demo_checkpoint, default_demo_dir
from qwen2audio.tokenizer import Qwen2Tokenizer, bundled_tokenizer_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGED = ("vocab.json", "merges.txt", "tokenizer_config.json", "NOTICE", "LICENSE")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundled_tokenizer_is_the_real_one(reference_dir: Path) -> None:
    bundled = bundled_tokenizer_dir()
    for name in ("vocab.json", "merges.txt"):
        assert _sha256(bundled / name) == _sha256(reference_dir / "tokenizer" / name), name
    notice = (bundled / "NOTICE").read_text()
    assert "Apache License" in notice and "vocab.json" in notice
    assert "Apache License" in (bundled / "LICENSE").read_text()
    tokenizer = Qwen2Tokenizer.from_pretrained(bundled)
    assert len(tokenizer) == 151649
    # Ids made by HF tokenizers (Rust) from the reference tokenizer, for every chat example.
    examples = json.loads((reference_dir / "tokenizer" / "chat_examples.json").read_text())["examples"]
    for example in examples:
        assert tokenizer.encode(example["expanded_prompt"]) == example["input_ids"], example["name"]
    reference_template = json.loads((reference_dir / "tokenizer" / "tokenizer_config.json").read_text())["chat_template"]
    assert tokenizer.chat_template == reference_template


def _build_py(destination: Path) -> Path:
    """What a non-editable install (`pip install .`, a wheel) copies of the Python package: setuptools'
    build_py step with the project's own configuration (the C++ extension is not part of it)."""
    metadata = destination.parent / f"{destination.name}-egg-info"  # not in the source tree
    metadata.mkdir()
    result = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(metadata), "build_py",
                             "--build-lib", str(destination)],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return destination


def test_non_editable_install_carries_the_tokenizer_files(tmp_path: Path) -> None:
    built = _build_py(tmp_path / "lib") / "qwen2audio" / "tokenizer_files"
    for name in PACKAGED:
        assert (built / name).is_file(), f"{name} is not in the built package"
        assert (built / name).read_bytes() == (bundled_tokenizer_dir() / name).read_bytes()


def _byte_level_stand_in(folder: Path) -> None:
    """What the old fallback wrote: a 256-token vocabulary the 151649-row model cannot decode."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({chr(0x100 + n): n for n in range(256)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def test_demo_runs_from_an_installed_copy_outside_the_project(tmp_path: Path) -> None:
    """`pip install .` then `qwen2audio demo` in some other folder, no ../shared anywhere, and a stale
    demo folder already in the cache under the current name."""
    lib = _build_py(tmp_path / "site")
    cache = tmp_path / "cache"
    env = {key: value for key, value in os.environ.items() if key not in ("QWEN2AUDIO_REFERENCE_DIR",
                                                                            "QWEN2AUDIO_MODEL")}
    # The C++ extension is the one this test process uses (a wheel would carry it; build_py does not).
    env.update(PYTHONPATH=str(lib), XDG_CACHE_HOME=str(cache), HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
               TMPDIR=str(tmp_path / "tmp"), QWEN2AUDIO_CORE_DIR=str(Path(_core.__file__).parent))
    (tmp_path / "tmp").mkdir()
    stale = cache / "qwen2audio" / default_demo_dir().name  # the name depends only on what the folder holds
    _byte_level_stand_in(stale)
    (stale / MARKER).write_text(json.dumps({"fingerprint": "0" * 64, "files": {"vocab.json": "x"}}))
    _byte_level_stand_in(cache / "qwen2audio" / "demo-tiny")  # the folder the old versions used
    (cache / "qwen2audio" / "demo-tiny" / ".complete").write_text("byte-tokenizer")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    result = subprocess.run([sys.executable, "-m", "qwen2audio", "demo"], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    import qwen2audio

    loaded_from = subprocess.run([sys.executable, "-c", "import qwen2audio; print(qwen2audio.__file__)"], cwd=cwd,
                                 env=env, capture_output=True, text=True).stdout.strip()
    assert loaded_from.startswith(str(lib)) and not loaded_from.startswith(str(Path(qwen2audio.__file__).parent))
    answers = [line[len("assistant> "):] for line in result.stdout.splitlines() if line.startswith("assistant> ")]
    assert len(answers) == 3 and all(answer.strip() for answer in answers), result.stdout
    assert "not in the vocabulary" not in result.stderr
    # The stale folder was rebuilt with the real tokenizer, and the old cache folder is gone.
    assert _sha256(stale / "vocab.json") == _sha256(bundled_tokenizer_dir() / "vocab.json")
    assert not (cache / "qwen2audio" / "demo-tiny").exists()
    # The annotation result is printed as JSON, and the temporary work folder is removed.
    summary = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"output"')))
    assert summary["written"] == 2 and summary["failed"] == 0
    assert not Path(summary["output"]).parent.exists()
    assert list((tmp_path / "tmp").glob("qwen2audio-demo-*")) == []


def test_demo_keeps_workdir_when_given(tmp_path: Path) -> None:
    model = demo_checkpoint(tmp_path / "model")
    work = tmp_path / "work"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "qwen2audio", "demo", "--model", str(model), "--workdir",
                             str(work)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = (work / "annotations.jsonl").read_text().splitlines()
    assert len(lines) == 2 and sorted(p.name for p in (work / "clips").iterdir()) == ["clip0.wav", "clip1.wav"]
    assert "tokens/s" in result.stdout


def test_demo_folder_is_rebuilt_when_stale_or_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = demo_checkpoint()
    assert folder == default_demo_dir() and folder.parent == tmp_path / "cache" / "qwen2audio"
    assert demo.demo_fingerprint()[:16] in folder.name
    weights = (folder / "model.safetensors").stat().st_mtime_ns

    assert demo_checkpoint() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights  # a valid folder is reused as it is

    (folder / "vocab.json").write_text("{}")  # damaged: a file no longer has its recorded hash
    demo_checkpoint()
    assert _sha256(folder / "vocab.json") == _sha256(bundled_tokenizer_dir() / "vocab.json")

    marker = json.loads((folder / MARKER).read_text())
    (folder / MARKER).write_text(json.dumps({**marker, "fingerprint": "f" * 64}))  # made by another version
    demo_checkpoint()
    assert json.loads((folder / MARKER).read_text())["fingerprint"] == demo.demo_fingerprint()

    (folder / MARKER).unlink()  # foreign content under our cache name: rebuilt, not trusted
    demo_checkpoint()
    assert json.loads((folder / MARKER).read_text())["fingerprint"] == demo.demo_fingerprint()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folders left behind


def test_demo_fingerprint_follows_the_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    before = demo.demo_fingerprint()
    monkeypatch.setattr(demo, "DEMO_WRITER_VERSION", demo.DEMO_WRITER_VERSION + 1)
    assert demo.demo_fingerprint() != before


def test_explicit_folder_with_other_content_is_not_overwritten(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a qwen2audio demo checkpoint folder"):
        demo_checkpoint(folder)
    assert (folder / "notes.txt").read_text() == "keep me"
