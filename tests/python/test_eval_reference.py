"""Every figure of ../shared/reference/eval/expected reproduced by `qwen2audio eval --score-only` on the
matching input: integers exactly, WER and BLEU to 1e-9, the official scripts' printed lines verbatim, and
the per-item JSONL's intermediate strings equal to the reference's per-pair data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen2audio.cli import main

TOLERANCE = 1e-9
ASR_FILES = ["librispeech_eval.jsonl", "cv15_asr_en_eval.jsonl", "aishell2_eval.jsonl", "fleurs_asr_zh_eval.jsonl",
             "cv15_asr_yue_eval.jsonl", "cv15_asr_fr_eval.jsonl"]


@pytest.fixture(scope="module")
def eval_dir(reference_dir: Path) -> Path:
    return reference_dir / "eval"


@pytest.fixture(scope="module")
def expected(eval_dir: Path) -> dict:
    return json.loads((eval_dir / "expected" / "summary.json").read_text(encoding="utf-8"))


def _inputs(eval_dir: Path) -> list[str]:
    return ([str(eval_dir / "asr" / name) for name in ASR_FILES]
            + [str(eval_dir / "st" / "covost2_eval.jsonl"), str(eval_dir / "ser" / "meld_eval.jsonl"),
               str(eval_dir / "vsc" / "vocalsound_eval.jsonl"),
               str(eval_dir / "airbench" / "Foundation_result_modelx.jsonl")])


def _score(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["eval", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def scored(eval_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    """One run over every reference input, as a user runs it: the command in a subprocess."""
    items = tmp_path_factory.mktemp("eval") / "items.jsonl"
    run = subprocess.run([sys.executable, "-m", "qwen2audio", "eval", "--score-only", *_inputs(eval_dir), "--json",
                          "--items", str(items)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    return json.loads(run.stdout), lines


def _close(actual: float, wanted: float) -> bool:
    return abs(actual - wanted) <= TOLERANCE


def test_asr_wer_every_source(scored: tuple[dict, list[dict]], expected: dict) -> None:
    got = scored[0]["asr_wer"]
    assert list(got) == list(expected["asr_wer"])
    for source, figures in expected["asr_wer"].items():
        ours = got[source]
        for name in ("dataset", "language", "edit_distance_total", "ref_length_total", "count"):
            assert ours[name] == figures[name], (source, name)
        assert _close(ours["wer"], figures["wer"]), source


def test_st_bleu_every_source(scored: tuple[dict, list[dict]], expected: dict) -> None:
    got = scored[0]["st_bleu"]
    assert list(got) == list(expected["st_bleu"])
    for source, figures in expected["st_bleu"].items():
        assert _close(got[source]["bleu"], figures["bleu"]), source
        for name in ("tokenize", "signature", "count"):
            assert got[source][name] == figures[name], (source, name)


@pytest.mark.parametrize("section", ["ser_acc", "vsc_acc"])
def test_accuracy(scored: tuple[dict, list[dict]], expected: dict, section: str) -> None:
    got = scored[0][section]
    assert list(got) == list(expected[section])
    for source, figures in expected[section].items():
        assert got[source]["correct"] == figures["correct"] and got[source]["count"] == figures["count"]
        assert _close(got[source]["accuracy"], figures["accuracy"])


def test_airbench_foundation(scored: tuple[dict, list[dict]], expected: dict) -> None:
    got, wanted = scored[0]["airbench"], expected["airbench"]
    assert got["total_sum"] == wanted["total_sum"] and got["fail_num"] == wanted["fail_num"]
    assert list(got["tasks"]) == list(wanted["tasks"])
    for name, figures in wanted["tasks"].items():
        assert got["tasks"][name]["sum"] == figures["sum"] and got["tasks"][name]["correct"] == figures["correct"]
        assert _close(got["tasks"][name]["acc"], figures["acc"])


def test_official_printed_lines(scored: tuple[dict, list[dict]], eval_dir: Path) -> None:
    lines = scored[0]["official_lines"]
    asr = json.loads((eval_dir / "expected" / "asr.json").read_text(encoding="utf-8"))["datasets"]
    for key, data in asr.items():
        assert lines[key] == [source["official_printed_line"] for source in data["sources"].values()]
    st = json.loads((eval_dir / "expected" / "st.json").read_text(encoding="utf-8"))
    assert lines["covost2"] == [source["official_printed_line"] for source in st["sources"].values()]
    for name, key in (("emotion", "meld"), ("vocal_sound", "vocalsound")):
        data = json.loads((eval_dir / "expected" / f"{name}.json").read_text(encoding="utf-8"))
        assert lines[key] == [source["official_printed_line"] for source in data["sources"].values()]
    airbench = json.loads((eval_dir / "expected" / "airbench_foundation.json").read_text(encoding="utf-8"))
    # the script's result lines are the tail of its stdout (after the per-failure lines)
    assert airbench["official_stdout"].rstrip("\n").splitlines()[-len(lines["airbench_foundation"]):] == \
        lines["airbench_foundation"]
    assert lines["airbench_foundation"][:-2] == [task["official_printed_line"] for task in airbench["tasks"].values()]


def test_asr_items_match_every_intermediate_string(scored: tuple[dict, list[dict]], eval_dir: Path) -> None:
    items = {(item["source"], item["id"]): item for item in scored[1] if "steps" in item}
    asr = json.loads((eval_dir / "expected" / "asr.json").read_text(encoding="utf-8"))["datasets"]
    checked = 0
    for data in asr.values():
        for source, figures in data["sources"].items():
            for pair in figures["pairs"]:
                ours = items[(source, pair["id"])]
                for name in ("ref_after_remove_sp", "hyp_after_remove_sp", "steps", "ref_normalized", "hyp_normalized",
                             "ref_items", "hyp_items", "edit_distance", "ref_len"):
                    assert ours[name] == pair[name], (pair["id"], name)
                checked += 1
    assert checked == 40


def test_st_items_match_tokenized_strings(scored: tuple[dict, list[dict]], eval_dir: Path) -> None:
    items = {item["id"]: item for item in scored[1] if "hyp_tokenized" in item}
    st = json.loads((eval_dir / "expected" / "st.json").read_text(encoding="utf-8"))
    for source in st["sources"].values():
        for pair in source["pairs"]:
            assert items[pair["id"]]["ref_tokenized"] == pair["ref_tokenized"]
            assert items[pair["id"]]["hyp_tokenized"] == pair["hyp_tokenized"]


def test_classification_and_airbench_items(scored: tuple[dict, list[dict]], eval_dir: Path) -> None:
    by_id = {item.get("id"): item for item in scored[1] if "match" in item}
    for name in ("emotion", "vocal_sound"):
        data = json.loads((eval_dir / "expected" / f"{name}.json").read_text(encoding="utf-8"))
        for source in data["sources"].values():
            for pair in source["pairs"]:
                assert by_id[pair["id"]]["response_lstripped"] == pair["response_lstripped"]
                assert by_id[pair["id"]]["match"] == pair["match"]
    airbench = json.loads((eval_dir / "expected" / "airbench_foundation.json").read_text(encoding="utf-8"))
    ours = [item for item in scored[1] if "outcome" in item]
    assert [(item["uniq_id"], item["task"], item["outcome"]) for item in ours] == \
        [(item["uniq_id"], item["task_id"], item["outcome"]) for item in airbench["items"]]


def test_airbench_predictions_with_meta(capsys: pytest.CaptureFixture, eval_dir: Path, expected: dict) -> None:
    got = _score(capsys, "--score-only", str(eval_dir / "airbench" / "predictions.jsonl"),
                 "--airbench-meta", str(eval_dir / "airbench" / "Foundation_meta.json"))["airbench"]
    assert got["tasks"] == {name: {"sum": t["sum"], "correct": t["correct"], "acc": t["acc"]}
                            for name, t in expected["airbench"]["tasks"].items()}
    assert (got["total_sum"], got["fail_num"]) == (expected["airbench"]["total_sum"], expected["airbench"]["fail_num"])


@pytest.mark.parametrize("name", ASR_FILES)
def test_each_asr_file_alone_with_explicit_dataset(capsys: pytest.CaptureFixture, eval_dir: Path, expected: dict,
                                                    name: str) -> None:
    """Scoring does not depend on what else is scored in the same run, nor on recognising the file name."""
    asr = json.loads((eval_dir / "expected" / "asr.json").read_text(encoding="utf-8"))["datasets"]
    key = next(key for key, data in asr.items() if data["jsonl"].endswith(name))
    got = _score(capsys, "--score-only", str(eval_dir / "asr" / name), "--dataset", key)["asr_wer"]
    for source in asr[key]["sources"]:
        assert _close(got[source]["wer"], expected["asr_wer"][source]["wer"])
        assert got[source]["edit_distance_total"] == expected["asr_wer"][source]["edit_distance_total"]


def test_compare_paper_table(capsys: pytest.CaptureFixture, eval_dir: Path) -> None:
    assert main(["eval", "--score-only", str(eval_dir / "asr" / "librispeech_eval.jsonl"),
                 str(eval_dir / "st" / "covost2_eval.jsonl"), str(eval_dir / "ser" / "meld_eval.jsonl"),
                 "--compare", "paper"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line and not line.startswith(" ")}
    assert rows["librispeech_test_clean"] == ["7", "3.30", "1.6"]
    assert rows["librispeech_test_other"] == ["5", "1.64", "3.6"]
    assert rows["covost2_en_zh_test"] == ["6", "62.12", "45.2"]
    assert rows["covost2_en_de_test"] == ["5", "54.20", "29.9"]
    assert rows["covost2_en_ja_test"] == ["4", "52.37", "-"]  # not in the paper
    assert rows["meld_test"] == ["10", "0.6000", "0.553"]
    assert "sacreBLEU signature: case.mixed+numrefs.?+smooth.exp+tok.zh+version.1.5.1" in out
