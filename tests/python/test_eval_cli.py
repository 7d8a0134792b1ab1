"""`qwen2audio eval` end to end on the tiny checkpoint (ASR and AIR-Bench foundation on espeak-ng clips,
through inference and scoring; the numbers are noise, the pipeline and formats are what is checked),
resuming and sharding, and the errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen2audio.cli import main
from qwen2audio.demo import synthesize_speech
from qwen2audio.eval import tasks
from qwen2audio.eval.runner import EvalAnnotator

SENTENCES = ["hello world", "the cat sat on the mat", "good morning to you"]
QUESTIONS = [("one two three", "male"), ("four five six", "female")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official layouts: data/asr/librispeech_eval.jsonl with audio under audio/, and AIR-Bench's
    Foundation_meta.json with {task_name}_{dataset_name}/{path} audio folders."""
    root = tmp_path_factory.mktemp("evalcorpus")
    (root / "data" / "asr").mkdir(parents=True)
    (root / "audio" / "librispeech").mkdir(parents=True)
    lines = []
    for index, text in enumerate(SENTENCES):
        synthesize_speech(text, root / "audio" / "librispeech" / f"{index}.wav")
        lines.append({"audio": f"librispeech/{index}.wav", "prompt": "<|startoftranscript|><|en|><|transcribe|><|en|>"
                      "<|notimestamps|><|wo_itn|>", "gt": text.upper(), "source": "librispeech_test_clean"})
    (root / "data" / "asr" / "librispeech_eval.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    folder = root / "Foundation" / "Speaker_Gender_Recognition_cv"
    folder.mkdir(parents=True)
    meta = []
    for index, (text, answer) in enumerate(QUESTIONS):
        synthesize_speech(text, folder / f"{index}.wav")
        meta.append({"path": f"{index}.wav", "question": "What is the gender of the speaker?", "choice_a": "male",
                     "choice_b": "female", "answer_gt": answer, "task_name": "Speaker_Gender_Recognition",
                     "dataset_name": "cv", "uniq_id": 100 + index})
    (root / "Foundation" / "Foundation_meta.json").write_text(json.dumps(meta))
    return root


def _run(tiny: Path, corpus: Path, output: Path, *extra: str) -> int:
    return main(["eval", "--model", str(tiny), "--datasets", "librispeech", "airbench_foundation",
                 "--data", str(corpus / "data"), "--audio-root", str(corpus / "audio"),
                 "--airbench-root", str(corpus / "Foundation"), "--output-dir", str(output), "--batch-size", "2",
                 "--max-new-tokens", "12", "--quiet", *extra])


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_end_to_end(tiny_f32: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert _run(tiny_f32, corpus, out, "--json", "--compare", "paper") == 0
    printed = json.loads(capsys.readouterr().out)

    generations = _lines(out / "librispeech.generations.jsonl")
    assert len(generations) == 3
    for line in generations:  # the base model's prompt, no chat template
        assert line["prompt"].startswith("<|audio_bos|><|AUDIO|><|audio_eos|><|startoftranscript|>")
        assert "<|im_start|>" not in line["prompt"] and isinstance(line["response"], str)
        assert 1 <= line["tokens"] <= 12
    responses = _lines(out / "librispeech.responses.jsonl")
    assert [line["gt"] for line in responses] == [text.upper() for text in SENTENCES]  # input order, every field
    assert all({"audio", "prompt", "gt", "source", "response"} <= set(line) for line in responses)

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    wer = summary["asr_wer"]["librispeech_test_clean"]
    assert wer["count"] == 3 and wer["ref_length_total"] == sum(len(text.split()) for text in SENTENCES)
    assert wer["wer"] == pytest.approx(wer["edit_distance_total"] / wer["ref_length_total"])
    assert printed["asr_wer"] == summary["asr_wer"]
    assert printed["paper"]["librispeech_test_clean"] == {"paper_row": "librispeech test-clean", "paper": 1.6}

    # the scores of the written responses are what --score-only gives for them, from anywhere
    assert main(["eval", "--score-only", str(out / "librispeech.responses.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["asr_wer"] == summary["asr_wer"]

    items = _lines(out / "librispeech.items.jsonl")
    assert len(items) == 3 and all("hyp_items" in item and "errors" in item for item in items)

    # AIR-Bench: the Instruct chat template with its system prompt, and the instruction with all four choices
    air = _lines(out / "airbench_foundation.generations.jsonl")
    assert len(air) == 2
    assert air[0]["prompt"].startswith(tasks.AIRBENCH_INSTRUCTION + "\nWhat is the gender of the speaker?\nA. male")
    assert air[0]["prompt"].endswith("\nC. None\nD. None")
    result = _lines(out / "airbench_foundation.responses.jsonl")
    assert [line["uniq_id"] for line in result] == [100, 101]
    assert list(result[0]) == ["path", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer_gt",
                               "task_name", "dataset_name", "response", "uniq_id"]
    airbench = summary["airbench"]
    assert airbench["total_sum"] + airbench["fail_num"] == 2
    assert main(["eval", "--score-only", str(out / "airbench_foundation.responses.jsonl"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["airbench"] == airbench

    # a rerun resumes: nothing is generated again and the results are the same
    before = (out / "librispeech.generations.jsonl").read_text(encoding="utf-8")
    assert _run(tiny_f32, corpus, out) == 0
    assert (out / "librispeech.generations.jsonl").read_text(encoding="utf-8") == before
    assert '"skipped": 3' in capsys.readouterr().err


def test_chat_prompting_is_the_instruct_template(tiny_f32: Path) -> None:
    from qwen2audio.processor import Qwen2AudioProcessor

    processor = Qwen2AudioProcessor.from_pretrained(tiny_f32)
    text = processor.apply_chat_template([{"role": "system", "content": tasks.SYSTEM_PROMPT},
                                          {"role": "user", "content": [{"type": "audio", "audio": "x.wav"},
                                                                       {"type": "text", "text": "Q"}]}],
                                         add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: "
                    "<|audio_bos|><|AUDIO|><|audio_eos|>\nQ<|im_end|>\n<|im_start|>assistant\n")
    annotator = EvalAnnotator(None, processor, dict(tasks.GENERATION), chat=True)
    assert annotator.settings()["eval_prompting"] == "chat"
    assert tasks.GENERATION == {"max_new_tokens": 256, "min_new_tokens": 1, "do_sample": False}


def test_shards_then_score_only(tiny_f32: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "sharded"
    for shard in ("1/2", "2/2"):
        assert main(["eval", "--model", str(tiny_f32), "--datasets", "librispeech", "--data", str(corpus / "data"),
                     "--audio-root", str(corpus / "audio"), "--output-dir", str(out), "--max-new-tokens", "4",
                     "--quiet", "--shard", shard]) == 0
    assert "score all shards together" in capsys.readouterr().err
    files = sorted(out.glob("librispeech.shard-*.responses.jsonl"))
    assert len(files) == 2 and sum(len(_lines(path)) for path in files) == 3
    assert main(["eval", "--score-only", *map(str, files), "--dataset", "librispeech", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["asr_wer"]["librispeech_test_clean"]["count"] == 3


def _error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(["eval", *argv]) == 2
    return capsys.readouterr().err


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, reference_dir: Path) -> None:
    assert "no such file" in _error(capsys, "--score-only", str(tmp_path / "absent.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "no records in" in _error(capsys, "--score-only", str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"gt": "a", "source": "librispeech_x", "response": "a"}\n{not json\n')
    assert "broken.jsonl:2: not valid JSON" in _error(capsys, "--score-only", str(broken))
    unknown = tmp_path / "mystery.jsonl"
    unknown.write_text('{"gt": "a", "source": "my_corpus", "response": "a"}\n')
    assert "cannot tell which dataset" in _error(capsys, "--score-only", str(unknown))
    assert "unknown dataset 'nope'" in _error(capsys, "--score-only", str(unknown), "--dataset", "nope")
    no_response = tmp_path / "librispeech_eval.jsonl"
    no_response.write_text('{"audio": "a.wav", "prompt": "p", "gt": "a", "source": "librispeech_x"}\n')
    assert "no 'response' string" in _error(capsys, "--score-only", str(no_response))
    no_gt = tmp_path / "cv15_asr_fr_eval.jsonl"
    no_gt.write_text('{"source": "cv15_fr_test", "response": "a"}\n')
    assert "missing field(s) gt" in _error(capsys, "--score-only", str(no_gt))
    st = tmp_path / "covost2_eval.jsonl"
    st.write_text('{"gt": "a", "source": "covost2", "response": "a"}\n')
    assert "covost2_<src>_<tgt>_<split>" in _error(capsys, "--score-only", str(st), "--dataset", "covost2")
    predictions = reference_dir / "eval" / "airbench" / "predictions.jsonl"
    assert "--airbench-meta" in _error(capsys, "--score-only", str(predictions))
    assert "GPT-4" in _error(capsys, "--score-only", str(unknown), "--dataset", "airbench_chat")
    assert "--score-only" in _error(capsys, "--datasets", "librispeech")
    assert "--airbench-root" in _error(capsys, "--model", str(tmp_path), "--datasets", "airbench_foundation",
                                       "--output-dir", str(tmp_path / "o"))


def test_custom_asr_language(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"gt": "Ça va bien", "source": "my_fr", "response": "ça va"}) + "\n")
    assert main(["eval", "--score-only", str(path), "--language", "fr", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)["asr_wer"]["my_fr"]
    assert (figures["edit_distance_total"], figures["ref_length_total"], figures["language"]) == (1, 3, "fr")


def test_dask_generates_what_a_local_run_does(tiny_f32: Path, corpus: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    distributed = pytest.importorskip("distributed")
    common = ["--datasets", "librispeech", "airbench_foundation", "--data", str(corpus / "data"), "--audio-root",
              str(corpus / "audio"), "--airbench-root", str(corpus / "Foundation"), "--max-new-tokens", "6", "--quiet"]
    assert main(["eval", "--model", str(tiny_f32), "--output-dir", str(tmp_path / "local"), *common]) == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster:
        assert main(["eval", "--model", str(tiny_f32), "--output-dir", str(tmp_path / "dask"),
                     "--dask-scheduler", cluster.scheduler_address, *common]) == 0
    for name in ("librispeech", "airbench_foundation"):
        local = _lines(tmp_path / "local" / f"{name}.responses.jsonl")
        remote = _lines(tmp_path / "dask" / f"{name}.responses.jsonl")
        assert local == remote
    generations = _lines(tmp_path / "dask" / "airbench_foundation.generations.jsonl")
    assert all(line["prompt"].startswith(tasks.AIRBENCH_INSTRUCTION) for line in generations)


def test_items_of_files_without_ids(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "vocalsound_eval.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in [
        {"audio": "a.wav", "prompt": "p", "gt": "Cough", "source": "vocalsound_test", "response": "Cough\n"},
        {"prompt": "p", "gt": "Sniff", "source": "vocalsound_test", "response": " Sniff"}]))
    items = tmp_path / "items.jsonl"
    assert main(["eval", "--score-only", str(path), "--items", str(items), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vsc_acc"]["vocalsound_test"] == {"accuracy": 0.5, "correct": 1,
                                                                                 "count": 2}
    assert [(line["id"], line["match"]) for line in _lines(items)] == [("a.wav", False), ("vocalsound_eval.jsonl:2", True)]
