"""Tokenizers, corpus BLEU, edit distance and the AIR-Bench answer rule against the reference data
(st.json's tokenized strings and BLEU statistics, asr.json's item lists and distances,
airbench_foundation.json's per-question outcomes) and the behaviours its README documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen2audio.eval.bleu import corpus_bleu
from qwen2audio.eval.edit_distance import edit_distance
from qwen2audio.eval.scorers.airbench import extract_letter, score_foundation
from qwen2audio.eval.scorers.st import target_language, tokenizer_for
from qwen2audio.eval.tokenizers import TOKENIZERS, EvaluationTokenizer, is_chinese_char, tokenize_13a, tokenize_zh


def _load(reference_dir: Path, name: str) -> dict:
    return json.loads((reference_dir / "eval" / "expected" / name).read_text(encoding="utf-8"))


def test_st_tokenized_pairs_and_statistics(reference_dir: Path) -> None:
    st = _load(reference_dir, "st.json")
    for source, figures in st["sources"].items():
        tokenize = TOKENIZERS[figures["tokenize"]]
        assert tokenizer_for(target_language(source)) == figures["tokenize"]
        for pair in figures["pairs"]:
            assert tokenize(pair["gt"].rstrip()) == pair["ref_tokenized"], pair["id"]
            assert tokenize(pair["response"].rstrip()) == pair["hyp_tokenized"], pair["id"]
        bleu = corpus_bleu([p["response"] for p in figures["pairs"]], [p["gt"] for p in figures["pairs"]],
                           figures["tokenize"])
        assert (bleu.counts, bleu.totals, bleu.sys_len, bleu.ref_len) == \
            (figures["counts"], figures["totals"], figures["sys_len"], figures["ref_len"])
        assert bleu.precisions == pytest.approx(figures["precisions"], abs=1e-9)
        assert bleu.bp == pytest.approx(figures["bp"], abs=1e-12)
        assert abs(bleu.score - figures["bleu"]) <= 1e-9
        assert bleu.format() == figures["formatted"]
        assert bleu.signature == figures["signature"]


def test_13a() -> None:
    assert tokenize_13a("Hello, world! It's 3.5 &amp; 1,000-2 \"quoted\".") == \
        "Hello , world ! It's 3.5 & 1,000 - 2 \" quoted \" ."  # the apostrophe is not in 13a's symbol ranges


def test_zh_splits_the_ranges_sacrebleu_effectively_has() -> None:
    assert tokenize_zh("我们2023年 go…") == "我 们 2023 年 go …"
    # sacrebleu's five-digit escapes make U+2001..U+2A6D "Chinese" and leave Extension B alone
    assert is_chinese_char("\u2014") and is_chinese_char("\u2a6d") and not is_chinese_char("\u2a6e")
    assert not is_chinese_char("\u2000") and not is_chinese_char("\U00020bb6")


def test_ja_mecab() -> None:
    assert TOKENIZERS["ja-mecab"]("私は学生です。") == "私 は 学生 です 。"


def test_evaluation_tokenizer_drops_punctuation_tokens_and_empty_ones() -> None:
    tokenizer = EvaluationTokenizer("none")
    assert tokenizer.tokenize("Hello  , World ...  x") == "hello world x"
    assert tokenizer.tokenize("“quoted” -- ok") == "“quoted” ok"  # tokens with a letter stay whole


def test_bleu_edge_cases() -> None:
    # every hypothesis shorter than 4 tokens: no 4-gram at all, so no smoothing applies and BLEU is 0
    assert corpus_bleu(["a b c", "d"], ["a b c", "d"]).score == 0.0
    assert corpus_bleu(["", "x"], ["a b c d e", "x"]).bp < 1.0  # an empty hypothesis is allowed
    with pytest.raises(ValueError, match="reference 1 is empty"):
        corpus_bleu(["a", "b"], ["a", ""])
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="unknown BLEU tokenizer"):
        corpus_bleu(["a"], ["a"], tokenize="intl")
    perfect = corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert perfect.score == pytest.approx(100.0)


def test_st_source_names() -> None:
    assert target_language("covost2_en_zh_test") == "zh"
    assert tokenizer_for("ja") == "ja-mecab" and tokenizer_for("de") == "13a"
    with pytest.raises(ValueError, match="covost2_<src>_<tgt>_<split>"):
        target_language("covost2")


def test_edit_distance_against_reference_items(reference_dir: Path) -> None:
    asr = _load(reference_dir, "asr.json")["datasets"]
    pairs = [pair for data in asr.values() for source in data["sources"].values() for pair in source["pairs"]]
    assert len(pairs) == 40
    for pair in pairs:
        assert edit_distance(pair["ref_items"], pair["hyp_items"]) == pair["edit_distance"], pair["id"]
        assert edit_distance(pair["hyp_items"], pair["ref_items"]) == pair["edit_distance"]


@pytest.mark.parametrize("a, b, distance", [
    ("", "", 0), ("abc", "", 3), ("", "ab", 2), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abc", "abc", 0),
    (["the", "cat"], ["a", "cat", "sat"], 2),
])
def test_edit_distance(a, b, distance: int) -> None:
    assert edit_distance(list(a), list(b)) == distance


@pytest.mark.parametrize("response, letter", [
    ("A", "A"), ("B.", "B"), ("Answer: B", "A"), ("Based on the audio, the answer is D.", "B"),
    ("The answer is C.", "C"), ("The answer is C", None), ("(C)", "C"), ("[C]", "C"), ("C)", "C"),
    ("Option D.", "D"), ("b", None), ("b.", None), ("E.", None), ("The correct answer is (C).", None),
    ("None", None), ("", None), ("  \n", None), ("\nA\n", "A"),
])
def test_airbench_extraction(response: str, letter: str | None) -> None:
    assert extract_letter(response) == letter


def test_airbench_outcomes_per_question(reference_dir: Path) -> None:
    expected = _load(reference_dir, "airbench_foundation.json")
    lines = (reference_dir / "eval" / "airbench" / "Foundation_result_modelx.jsonl").read_text(encoding="utf-8")
    score = score_foundation(json.loads(line) for line in lines.splitlines())
    assert [item["outcome"] for item in score.items] == [item["outcome"] for item in expected["items"]]
    assert score.fail_num == expected["fail_num"] and score.total_sum == expected["total_sum"]


def test_airbench_wrong_letter_for_missing_choice_and_bad_ground_truth() -> None:
    record = {"task_name": "T", "dataset_name": "d", "choice_a": "x", "choice_b": "y", "choice_c": None,
              "choice_d": None, "answer_gt": "y", "response": "C", "uniq_id": 1}
    score = score_foundation([record])
    assert (score.tasks["T_d"].sum, score.tasks["T_d"].correct) == (1, 0)
    with pytest.raises(ValueError, match="equals none of its choices"):
        score_foundation([{**record, "answer_gt": "z"}])
    # every response of a task failing: upstream divides by zero; here the task has no accuracy
    failed = score_foundation([{**record, "response": "no idea"}])
    assert failed.tasks["T_d"].acc is None and failed.fail_num == 1
