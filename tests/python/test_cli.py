"""The command line end to end, in subprocesses, on the built-in demo checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwen2audio.annotate import parse_shard, read_manifest, select_shard
from qwen2audio.demo import demo_checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_checkpoint(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture()
def clips(tmp_path: Path, sine_wav) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    for index in range(6):
        sine_wav(folder / f"clip{index:02d}.wav", 0.4 + 0.1 * index, 300 + 100 * index)
    return folder


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen2audio", *args], capture_output=True, text=True,
                          env=_env(), timeout=600, **kwargs)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


ANNOTATE = ["annotate", "--prompt", "Describe the sound.", "--max-new-tokens", "4", "--quiet"]


def test_annotate_writes_one_line_per_file(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output),
                   "--batch-size", "4"])
    assert result.returncode == 0, result.stderr
    records = _lines(output)
    assert sorted(r["id"] for r in records) == sorted(p.name for p in clips.iterdir())
    for record in records:
        assert set(record) >= {"id", "path", "prompt", "answer", "tokens", "seconds"}
        assert record["prompt"] == "Describe the sound."
        assert 0 < record["tokens"] <= 4


def test_annotate_interrupted_then_resumed(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "qwen2audio", *ANNOTATE, "--model", str(demo_model), "--input", str(clips),
               "--output", str(output), "--batch-size", "1"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and output.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # the harshest interrupt: no clean-up code runs
    process.wait()
    before = _lines(output) if output.exists() else []
    assert 2 <= len(before) < 6, "the run must be cut mid-way for this test to mean anything"

    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output),
                   "--batch-size", "1"])
    assert result.returncode == 0, result.stderr
    after = _lines(output)
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids)) == 6
    assert after[: len(before)] == before  # lines written before the interrupt are kept as they were
    assert '"skipped": %d' % len(before) in result.stderr


def test_torn_last_line_is_repaired(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text(json.dumps({"id": "clip00.wav", "answer": "x"}) + "\n" + '{"id": "clip01.wa')
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in _lines(output)]
    assert sorted(ids) == sorted(p.name for p in clips.iterdir())


def test_shards_cover_each_file_once(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    seen: list[str] = []
    for index in (1, 2, 3):
        output = tmp_path / f"shard{index}.jsonl"
        result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output),
                       "--shard", f"{index}/3"])
        assert result.returncode == 0, result.stderr
        if output.exists():
            seen += [r["id"] for r in _lines(output)]
    assert sorted(seen) == sorted(p.name for p in clips.iterdir())


def test_shard_selection_is_deterministic_and_partitions(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"item{n}", "path": f"a/{n}.wav"}) + "\n" for n in range(200)))
    items = read_manifest(manifest)
    shards = [select_shard(items, index, 7) for index in range(1, 8)]
    assert sorted(item.id for shard in shards for item in shard) == sorted(item.id for item in items)
    assert all(len(shard) > 10 for shard in shards)  # a hash spreads 200 ids over 7 shards
    assert select_shard(list(reversed(items)), 3, 7) == list(reversed(shards[2]))  # order-independent
    with pytest.raises(ValueError):
        parse_shard("4/3")
    with pytest.raises(ValueError):
        parse_shard("x")


def test_corrupt_file_is_recorded_and_the_run_goes_on(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    (clips / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output),
                   "--batch-size", "3"])
    assert result.returncode == 0, result.stderr
    records = {r["id"]: r for r in _lines(output)}
    assert len(records) == 7
    assert "error" in records["broken.wav"] and "broken.wav" in records["broken.wav"]["error"]
    assert all("answer" in r for name, r in records.items() if name != "broken.wav")


def test_csv_manifest_with_prompts(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("id,path,prompt\nfirst,clips/clip00.wav,Is it loud?\nsecond,clips/clip01.wav,\n")
    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(manifest), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    records = {r["id"]: r for r in _lines(output)}
    assert records["first"]["prompt"] == "Is it loud?"
    assert records["second"]["prompt"] == "Describe the sound."


def test_chat_streams_text(demo_model: Path, clips: Path) -> None:
    command = [sys.executable, "-m", "qwen2audio", "chat", "--model", str(demo_model), "--audio",
               str(clips / "clip00.wav"), "--max-new-tokens", "12", "What is this?"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = []
    while True:
        chunk = process.stdout.read1(4096)
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=300)
    assert process.returncode == 0, process.stderr.read().decode()
    text = b"".join(chunks).decode()
    assert text.startswith("assistant> ")
    assert len(text.strip()) > len("assistant>")
    assert len(chunks) >= 2  # pieces arrive as they are generated, not in one block at the end


def test_interactive_chat_with_audio_command(demo_model: Path, clips: Path) -> None:
    script = f"/audio {clips / 'clip01.wav'}\nWhat is it?\nAnd now?\n/quit\n"
    result = _run(["chat", "--model", str(demo_model), "--max-new-tokens", "6"], input=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("assistant> ") == 2
    assert "[attached" in result.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    result = _run(["chat", "--model", str(tmp_path / "nope"), "hi"])
    assert result.returncode == 2
    assert "nope" in result.stderr and "Traceback" not in result.stderr
