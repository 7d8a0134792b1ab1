"""The command line end to end, in subprocesses, on the built-in demo checkpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    # Enough files that the run cannot finish between two polls after its second line (the tiny demo model
    # answers six clips in tens of milliseconds: with six, the kill sometimes came after the last line).
    many = tmp_path / "many"
    many.mkdir()
    files = sorted(clips.iterdir())
    total = 60
    for index in range(total):
        shutil.copy(files[index % len(files)], many / f"clip{index:02d}.wav")
    output = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "qwen2audio", *ANNOTATE, "--model", str(demo_model), "--input", str(many),
               "--output", str(output), "--batch-size", "1"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if output.exists() and output.read_text().count("\n") >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # the harshest interrupt: no clean-up code runs
    process.wait()
    before = _lines(output) if output.exists() else []
    assert 2 <= len(before) < total, "the run must be cut mid-way for this test to mean anything"

    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(many), "--output", str(output),
                   "--batch-size", "1"])
    assert result.returncode == 0, result.stderr
    after = _lines(output)
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids)) == total
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
    stderr = process.stderr.read().decode()
    assert process.returncode == 0, stderr
    text = b"".join(chunks).decode()
    # stdout is a pipe: the answer alone, ready for `answer=$(qwen2audio chat ...)`
    assert not text.startswith("assistant>") and text.strip() and text.endswith("\n")
    assert len(chunks) >= 2  # pieces arrive as they are generated, not in one block at the end
    assert re.search(r"\[\d+ tokens in [\d.]+ s, [\d.]+ tokens/s; prefill \d+ tokens", stderr)


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


# ------------------------------------------------------------------------------------ chat, issue 13
def _prefills(stderr: str) -> list[int]:
    """Prompt tokens prefilled per answer, from the figures line printed after each one."""
    return [int(n) for n in re.findall(r"tokens/s; prefill (\d+) tokens", stderr)]


@pytest.fixture()
def long_clip(tmp_path: Path, sine_wav) -> Path:
    return sine_wav(tmp_path / "long clip.wav", 35.0, 440)


def test_chat_without_prompt_is_interactive_with_the_audio_on_the_first_turn(demo_model: Path, tmp_path: Path,
                                                                              sine_wav) -> None:
    clip = sine_wav(tmp_path / "five.wav", 5.0, 440)  # 125 audio tokens
    result = _run(["chat", "--model", str(demo_model), "--audio", str(clip), "--max-new-tokens", "4"],
                  input="What is it?\nAnd now?\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("assistant> ") == 2
    first, second = _prefills(result.stderr)
    assert first > 125  # the clip went with the first message ...
    assert second < 40  # ... and the second one prefilled only its own words


def test_one_shot_chat_with_a_prompt_or_audio_alone(demo_model: Path, clips: Path) -> None:
    result = _run(["chat", "--model", str(demo_model), "--audio", str(clips / "clip03.wav"), "--max-new-tokens", "3",
                   ""], input="this is not read\n")
    assert result.returncode == 0, result.stderr
    assert len(_prefills(result.stderr)) == 1 and "assistant>" not in result.stdout


def test_interactive_help_and_unknown_commands(demo_model: Path) -> None:
    result = _run(["chat", "--model", str(demo_model), "--max-new-tokens", "3"],
                  input="/help\n/frobnicate now\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert "/audio PATH" in result.stdout and "/reset" in result.stdout  # /help lists the commands
    assert "unknown command /frobnicate" in result.stderr
    assert "assistant> " not in result.stdout  # neither went to the model
    assert _prefills(result.stderr) == []


def test_audio_command_takes_quoted_paths(demo_model: Path, tmp_path: Path, sine_wav) -> None:
    clip = sine_wav(tmp_path / "my clip.wav", 5.0, 330)
    result = _run(["chat", "--model", str(demo_model), "--max-new-tokens", "3"],
                  input=f'/audio "{clip}"\n/audio {tmp_path / "absent.wav"}\nWhat is it?\n/quit\n')
    assert result.returncode == 0, result.stderr
    assert f"[attached {clip}]" in result.stderr
    assert "absent.wav" in result.stderr and "no such file" in result.stderr
    assert _prefills(result.stderr)[0] > 125


def test_long_audio_note_in_chat(demo_model: Path, long_clip: Path) -> None:
    truncate = _run(["chat", "--model", str(demo_model), "--audio", str(long_clip), "--max-new-tokens", "2", "Hi"])
    assert truncate.returncode == 0, truncate.stderr
    notes = [line for line in truncate.stderr.splitlines() if "--long-audio chunk" in line]
    assert len(notes) == 1 and "35.0 s" in notes[0]
    assert "Warning" not in truncate.stderr and "split_audio" not in truncate.stderr
    chunk = _run(["chat", "--model", str(demo_model), "--audio", str(long_clip), "--max-new-tokens", "2",
                  "--long-audio", "chunk", "Hi"])
    assert chunk.returncode == 0, chunk.stderr
    assert "--long-audio chunk" not in chunk.stderr
    assert _prefills(chunk.stderr)[0] > _prefills(truncate.stderr)[0] + 100  # the second window is heard too


def test_version_and_defaults_in_help() -> None:
    import qwen2audio

    version = _run(["--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"qwen2audio {qwen2audio.__version__}"
    chat_help = _run(["chat", "--help"]).stdout
    assert "(default: 256)" in chat_help and "(default: truncate)" in chat_help and "(default: cpu)" in chat_help
    annotate_help = _run(["annotate", "--help"]).stdout
    assert "(default: the fastest of 1, 2, 4, 8 per file" in " ".join(annotate_help.split())
    for column in ("path", "id", "prompt", "finish_reason", "duration_s", "truncated", "--retry-errors"):
        assert column in annotate_help


@pytest.mark.parametrize("option", [["--threads", "0"], ["--max-new-tokens", "0"], ["--device", "gpu"]])
def test_bad_numbers_and_devices_are_refused_by_argparse(demo_model: Path, option: list[str]) -> None:
    result = _run(["chat", "--model", str(demo_model), *option, "Hi"])
    assert result.returncode == 2
    assert f"argument {option[0]}" in result.stderr and "usage:" in result.stderr
    assert "[model loaded" not in result.stderr


def test_device_reaches_from_pretrained(demo_model: Path) -> None:
    from qwen2audio import DeviceError, Qwen2AudioForConditionalGeneration

    try:
        Qwen2AudioForConditionalGeneration.from_pretrained(demo_model, device="cuda")
        expected_error = None
    except DeviceError as error:
        expected_error = str(error)
    result = _run(["chat", "--model", str(demo_model), "--device", "cuda", "--max-new-tokens", "2", "Hi"])
    if expected_error is None:  # a machine with a usable GPU
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2 and expected_error in result.stderr and "Traceback" not in result.stderr


def test_errors_name_the_fix_before_loading(demo_model: Path, tmp_path: Path) -> None:
    hub = _run(["chat", "--model", "Qwen/Qwen2-Audio-7B-Instruct", "Hi"], cwd=tmp_path)
    assert hub.returncode == 2
    assert "huggingface-cli download Qwen/Qwen2-Audio-7B-Instruct --local-dir DIR` then pass the folder" in hub.stderr
    url = _run(["chat", "--model", str(demo_model), "--audio", "https://example.com/a.wav", "Hi"])
    assert url.returncode == 2 and "URLs are not fetched; download the file first" in url.stderr
    missing = _run(["chat", "--model", str(demo_model), "--audio", str(tmp_path / "nope.wav"), "Hi"])
    assert missing.returncode == 2 and "nope.wav" in missing.stderr and "no such file" in missing.stderr
    for result in (url, missing):
        assert "[model loaded" not in result.stderr and "Traceback" not in result.stderr


# -------------------------------------------------------------------------------- annotate, issue 13
def test_annotate_rows_carry_duration_truncation_finish_reason_and_key(demo_model: Path, clips: Path,
                                                                        long_clip: Path, tmp_path: Path) -> None:
    long_clip.rename(clips / "long.wav")
    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    records = {r["id"]: r for r in _lines(output)}
    assert len(records) == 7
    assert records["long.wav"]["truncated"] is True and records["long.wav"]["duration_s"] == 35.0
    assert records["clip00.wav"]["truncated"] is False and records["clip00.wav"]["duration_s"] == 0.4
    for record in records.values():
        assert record["finish_reason"] in ("stop", "length")
        assert record["finish_reason"] == "length" or record["tokens"] < 4
        assert record["seconds"] > 0 and re.fullmatch(r"[0-9a-f]{16}", record["key"])
    assert len({r["key"] for r in records.values()}) == 1  # same prompt and settings, same key
    notes = [line for line in result.stderr.splitlines() if "--long-audio chunk" in line]
    assert len(notes) == 1 and notes[0].startswith("qwen2audio: 1 file")
    assert "Warning" not in result.stderr

    chunked = tmp_path / "chunked.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(chunked),
                   "--long-audio", "chunk"])
    assert result.returncode == 0, result.stderr
    assert not any(r["truncated"] for r in _lines(chunked)) and "--long-audio chunk" not in result.stderr
    assert {r["key"] for r in _lines(chunked)}.isdisjoint({r["key"] for r in _lines(output)})


def test_finish_reason_stop_when_an_eos_token_ends_the_answer(demo_model: Path, clips: Path) -> None:
    from qwen2audio import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor
    from qwen2audio.annotate import AnnotationItem, Annotator

    model = Qwen2AudioForConditionalGeneration.from_pretrained(demo_model)
    processor = Qwen2AudioProcessor.from_pretrained(demo_model)
    item = AnnotationItem("a", str(clips / "clip00.wav"))
    [free] = Annotator(model, processor, {"max_new_tokens": 3}).run_batch([item], "Describe.")
    assert free["finish_reason"] == "length" and free["tokens"] == 3
    # The first token of that greedy answer, from the prompt the annotator builds (re-encoding the answer's
    # stripped text need not give back the token the model chose).
    from qwen2audio import load_audio
    audio = load_audio(item.path, sampling_rate=16000)
    conversation = [{"role": "user",
                     "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": "Describe."}]}]
    inputs = processor.apply_chat_template([conversation], add_generation_prompt=True, tokenize=True,
                                           return_dict=True, sampling_rate=16000)
    first = int(model.generate(**inputs, max_new_tokens=1)[0, -1])
    # The same greedy answer, with its first token declared an end-of-turn token: it stops at once.
    [stopped] = Annotator(model, processor, {"max_new_tokens": 3, "eos_token_id": [first]}).run_batch([item], "Describe.")
    assert stopped["finish_reason"] == "stop" and stopped["tokens"] == 0 and stopped["answer"] == ""


def test_prompt_column_makes_prompt_optional(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    complete = tmp_path / "complete.jsonl"
    complete.write_text("".join(json.dumps({"id": f"f{n}", "path": f"clips/clip0{n}.wav", "prompt": f"Q{n}?"}) + "\n"
                                for n in range(3)))
    output = tmp_path / "out.jsonl"
    command = ["annotate", "--model", str(demo_model), "--max-new-tokens", "2", "--quiet"]
    result = _run([*command, "--input", str(complete), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    assert [r["prompt"] for r in _lines(output)] == ["Q0?", "Q1?", "Q2?"]

    partial = tmp_path / "partial.csv"
    partial.write_text("id,path,prompt\nfirst,clips/clip00.wav,Is it loud?\nsecond,clips/clip01.wav,\n")
    result = _run([*command, "--input", str(partial), "--output", str(tmp_path / "partial.jsonl")])
    assert result.returncode == 2
    assert "'second'" in result.stderr and "--prompt" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "partial.jsonl").exists()


def test_folder_without_audio_is_an_error(demo_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "readme.txt").write_text("no audio here")
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(folder), "--output", str(tmp_path / "o.jsonl")])
    assert result.returncode == 2
    assert "no audio files" in result.stderr and ".wav" in result.stderr and ".m4a" in result.stderr


def test_retry_errors_replaces_error_lines(demo_model: Path, clips: Path, tmp_path: Path, sine_wav) -> None:
    broken = clips / "clip02.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    output = tmp_path / "out.jsonl"
    arguments = [*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output)]
    assert _run(arguments).returncode == 0
    first = _lines(output)
    assert "error" in next(r for r in first if r["id"] == "clip02.wav")

    sine_wav(broken, 0.6, 500)  # the file is fixed
    again = _run(arguments)
    assert again.returncode == 0 and '"skipped": 6' in again.stderr
    assert "--retry-errors redoes them" in again.stderr and _lines(output) == first

    retried = _run([*arguments, "--retry-errors"])
    assert retried.returncode == 0, retried.stderr
    assert '"written": 1' in retried.stderr and '"skipped": 5' in retried.stderr
    after = _lines(output)
    assert [r["id"] for r in after].count("clip02.wav") == 1 and len(after) == 6  # one line per file
    assert "answer" in next(r for r in after if r["id"] == "clip02.wav")
    assert [r for r in after if r["id"] != "clip02.wav"] == [r for r in first if r["id"] != "clip02.wav"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")] == []  # no temporary left


def test_rerun_with_other_settings_is_refused(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    base = ["annotate", "--model", str(demo_model), "--input", str(clips), "--output", str(output), "--quiet"]
    assert _run([*base, "--prompt", "Describe the sound.", "--max-new-tokens", "3"]).returncode == 0
    before = output.read_bytes()

    same = _run([*base, "--prompt", "Describe the sound.", "--max-new-tokens", "3"])
    assert same.returncode == 0 and '"skipped": 6' in same.stderr

    other_prompt = _run([*base, "--prompt", "Transcribe it.", "--max-new-tokens", "3"])
    assert other_prompt.returncode == 2
    assert "the prompt differs" in other_prompt.stderr and "'Transcribe it.'" in other_prompt.stderr
    assert "new --output" in other_prompt.stderr

    other_settings = _run([*base, "--prompt", "Describe the sound.", "--max-new-tokens", "5"])
    assert other_settings.returncode == 2 and "generation settings" in other_settings.stderr
    assert output.read_bytes() == before  # nothing written or removed by the refused runs


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (scripts/install-deps.sh adds it)")
def test_annotate_reads_m4a_through_ffmpeg(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clips / "clip05.wav"), "-c:a", "aac", str(clips / "voice.m4a")],
                   check=True)
    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    record = next(r for r in _lines(output) if r["id"] == "voice.m4a")
    assert "answer" in record and abs(record["duration_s"] - 0.9) < 0.2


def test_annotate_logprobs_are_the_model_probabilities_of_the_answer(demo_model: Path, clips: Path,
                                                                      tmp_path: Path) -> None:
    """--logprobs: each answer token's log-probability, checked against a full forward pass over the
    prompt and the answer (log-softmax of the logits that chose each token)."""
    from qwen2audio import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, load_audio

    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output),
                   "--batch-size", "3", "--logprobs"])
    assert result.returncode == 0, result.stderr
    records = {record["id"]: record for record in _lines(output)}
    plain = tmp_path / "plain.jsonl"
    assert _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(plain)]).returncode == 0
    assert all("logprobs" not in record for record in _lines(plain))
    assert {r["key"] for r in _lines(plain)}.isdisjoint({r["key"] for r in records.values()})

    model = Qwen2AudioForConditionalGeneration.from_pretrained(demo_model)
    processor = Qwen2AudioProcessor.from_pretrained(demo_model)
    record = records["clip01.wav"]
    assert len(record["logprobs"]) == record["tokens"] > 0
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": load_audio(record["path"])},
                                                 {"type": "text", "text": record["prompt"]}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, sampling_rate=16000)
    answer = model.generate(**inputs, max_new_tokens=4)[0, inputs["input_ids"].shape[1]:][:record["tokens"]]
    full = np.concatenate([inputs["input_ids"][0], answer])[None]
    logits = model(input_ids=full, input_features=inputs["input_features"],
                   feature_attention_mask=inputs["feature_attention_mask"]).logits[0].astype(np.float64)
    start = inputs["input_ids"].shape[1] - 1
    rows = logits[start:start + len(answer)]
    expected = rows[np.arange(len(answer)), answer] - np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) \
        - rows.max(1)
    np.testing.assert_allclose(record["logprobs"], expected, atol=2e-3)
    assert record["mean_logprob"] == pytest.approx(np.mean(record["logprobs"]), abs=1e-4)
    assert all(value <= 0 for value in record["logprobs"])


def test_batches_group_files_of_similar_length(tmp_path: Path, sine_wav) -> None:
    from qwen2audio.annotate import GROUPING_WINDOW_BATCHES, grouped

    lengths = [0.2, 2.0, 0.3, 1.9, 0.25, 2.1, 0.35, 1.8]
    items = read_manifest_of(tmp_path, sine_wav, lengths)
    batches = list(grouped(items, 4))
    assert sorted(item.id for batch in batches for item in batch) == sorted(item.id for item in items)
    assert [max(_seconds(item) for item in batch) < 1 for batch in batches] == [True, False]
    # Windows keep the run moving through the manifest: nothing from a later window comes earlier.
    many = items * (GROUPING_WINDOW_BATCHES + 1)
    first_window = {id(item) for item in many[: 4 * GROUPING_WINDOW_BATCHES]}
    first_batches = list(grouped(many, 4))[:GROUPING_WINDOW_BATCHES]
    assert all(id(item) in first_window for batch in first_batches for item in batch)


def read_manifest_of(folder: Path, sine_wav, lengths: list[float]) -> list:
    for index, seconds in enumerate(lengths):
        sine_wav(folder / f"clip{index}.wav", seconds, 440)
    return read_manifest(folder)


def _seconds(item) -> float:
    return (os.path.getsize(item.path) - 44) / 32000


class _FakeSession:
    def __init__(self, model, size):
        self.model, self.size = model, size

    def append(self, ids):
        assert ids.shape[0] == self.size

    def generate(self, max_new_tokens, eos_token_id):
        self.model.now += max_new_tokens * self.model.step_seconds(self.size)


class _FakeModel:
    """A model whose decode step takes step_seconds(batch) on a fake clock."""

    def __init__(self, step_seconds):
        self.step_seconds, self.now = step_seconds, 0.0
        self.config = type("Config", (), {"text_config": type("Text", (), {"vocab_size": 1000})()})()

    def start_session(self, size):
        return _FakeSession(self, size)


@pytest.mark.parametrize("step_seconds, limit, expected", [
    (lambda size: 0.5, None, 8),                    # memory-bound: a step costs the same for 8 rows
    (lambda size: 0.5 * size, None, 1),             # compute-bound: nothing gained per file
    (lambda size: 0.3 + 0.5 * size, None, 4),       # 8 rows are only 1.07x faster per file than 4
    (lambda size: 0.5, 3, 2),                       # never more rows than files
])
def test_batch_size_is_chosen_by_the_decode_step_per_file(step_seconds, limit, expected) -> None:
    from qwen2audio.annotate import choose_batch_size

    model = _FakeModel(step_seconds)
    assert choose_batch_size(model, limit=limit, clock=lambda: model.now) == expected


def test_annotate_picks_a_batch_size_when_none_is_given(demo_model: Path, clips: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    result = _run([*ANNOTATE, "--model", str(demo_model), "--input", str(clips), "--output", str(output)])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["batch_size"] in (1, 2, 4, 8) and summary["written"] == 6
    assert len(_lines(output)) == 6
