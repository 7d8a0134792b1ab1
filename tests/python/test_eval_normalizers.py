"""The ASR normalizers, step by step, against the per-pair reference data (asr.json records each
normalizer's input and output as the official code produced them), plus the behaviours the reference
README documents for the official code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen2audio.eval.normalizers import BasicTextNormalizer, ChineseTextNormalizer, EnglishTextNormalizer, to_simplified
from qwen2audio.eval.normalizers.chinese import number_to_chinese
from qwen2audio.eval.scorers.asr import normalizer_steps, remove_special_tokens
from qwen2audio.eval.tokenizers import EvaluationTokenizer

STEPS = {
    "EnglishTextNormalizer": EnglishTextNormalizer(),
    "BasicTextNormalizer": BasicTextNormalizer(),
    "cn_tn.TextNorm": ChineseTextNormalizer(),
    "zhconv.convert(zh-cn)": to_simplified,
    "EvaluationTokenizer.tokenize": EvaluationTokenizer("none").tokenize,
}


def _pairs(reference_dir: Path) -> list[tuple[str, dict]]:
    data = json.loads((reference_dir / "eval" / "expected" / "asr.json").read_text(encoding="utf-8"))["datasets"]
    return [(dataset["language"], pair) for dataset in data.values() for source in dataset["sources"].values()
            for pair in source["pairs"]]


def test_every_step_of_every_pair(reference_dir: Path) -> None:
    checked = {name: 0 for name in STEPS}
    for language, pair in _pairs(reference_dir):
        assert remove_special_tokens(pair["gt"], language) == pair["ref_after_remove_sp"]
        assert remove_special_tokens(pair["response"], language) == pair["hyp_after_remove_sp"]
        assert [step["step"] for step in pair["steps"]] == [name for name, _ in normalizer_steps(language)] + \
            ["EvaluationTokenizer.tokenize"]
        for step in pair["steps"]:
            function = STEPS[step["step"]]
            assert function(step["ref_in"]) == step["ref_out"], (pair["id"], step["step"], "ref")
            assert function(step["hyp_in"]) == step["hyp_out"], (pair["id"], step["step"], "hyp")
            checked[step["step"]] += 1
    assert all(checked.values()), checked


@pytest.mark.parametrize("text, expected", [
    ("$3.50", "3 50"),                 # the English normalizer keeps "$3.50"; the basic one then splits it
    ("3.5 percent", "3 5"),
    ("twenty five", "25"),
    ("I can't go", "i can not go"),
    ("I cannot go", "i cannot go"),
    ("the colour grey", "the color gray"),
    ("uh I mean um yes", "i mean yes"),
    ("Mr. Smith", "mister smith"),
    ("St. Louis", "saint louis"),
    ("O'Brien", "0 brien"),
    ("9 o'clock", "90 clock"),
    ("don\u2019t", "don t"),
    ("hello [noise] (laughs) world", "hello world"),
])
def test_english_then_basic(text: str, expected: str) -> None:
    assert BasicTextNormalizer()(EnglishTextNormalizer()(text)).strip() == expected


@pytest.mark.parametrize("text, expected", [
    ("one hundred and five", "105"),
    ("one oh one", "101"),
    ("twenty first", "21st"),
    ("two and a half", "2.5"),
    ("five percent", "5%"),
    ("minus three", "-3"),
    ("twenty dollars", "$20"),
    ("double seven", "77"),
    ("one", "one"),
    ("the 1960s", "the 1960s"),
    ("1,000,000", "1000000"),
])
def test_english_numbers(text: str, expected: str) -> None:
    assert EnglishTextNormalizer()(text).strip() == expected


@pytest.mark.parametrize("text, expected", [
    ("Ça va? L'été «chaud»", "ça va l été chaud "),
    ("Hello-World  (aside) [tag]", "hello world "),
])
def test_basic(text: str, expected: str) -> None:
    assert BasicTextNormalizer()(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("2019年", "二零一九年"),
    ("1889年", "一千八百八十九年"),           # a year reads digit by digit only as 19xx/20xx (or 0x/8x/9x)
    ("在98年", "在九八年"),
    ("２０２３年", "两千零百二十三年"),         # full-width digits: \d matches, lstrip('0') does not
    ("5月3日", "五月三日"),
    ("花了15元5角", "花了十五元五角"),
    ("电话13812345678", "电话一三八一二三四五六七八"),
    ("3/4", "四分之三"),
    ("25.5%", "百分之二十五点五"),
    ("5千克", "五千克"),
    ("编号12345", "编号一二三四五"),
    ("共2000人", "共二零零零人"),             # four digits or more without a measure word: digit by digit
    ("他有2000元", "他有两千元"),
    ("12", "十二"),
    ("P2P", "P2P"),
    ("呃，你好！", "呃 你好 "),
    ("ＡＢＣ", "ＡＢＣ"),                      # no full-width folding
])
def test_chinese(text: str, expected: str) -> None:
    assert ChineseTextNormalizer()(text) == expected


@pytest.mark.parametrize("number, units, expected", [
    ("0", True, "零"), ("10", True, "十"), ("20", True, "二十"), ("200", True, "两百"), ("2222", True, "两千两百二十二"),
    ("100000000", True, "一亿"), ("1005", True, "一千零五"), ("0.5", True, "零点五"), ("2019", False, "二零一九"),
])
def test_number_to_chinese(number: str, units: bool, expected: str) -> None:
    assert number_to_chinese(number, with_units=units, liang=units) == expected


def test_traditional_to_simplified() -> None:
    assert to_simplified("我哋今日去咗飲茶") == "我哋今日去咗饮茶"
    assert to_simplified("呢個問題好難答") == "呢个问题好难答"


def test_tag_stripping() -> None:
    assert remove_special_tokens("<|en|>Hello , world .  ", "en") == "Hello, world. "
    assert remove_special_tokens("<|zh|>你 好 ，世界", "zh") == "你好，世界"
