"""ASR word/character error rate as the official Qwen2-Audio scorer (evaluate_asr.py) computes it.

Per ``source``, in order of first appearance: tags stripped from gt and response, the normalizers of
the language (en: English then basic; zh: Chinese text normalization; yue: traditional to simplified
then basic; anything else: basic), the evaluation tokenizer, characters for zh/yue, and the corpus
WER = total edit distance / total reference items. The language belongs to the dataset, not the source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..edit_distance import edit_distance
from ..normalizers import BasicTextNormalizer, ChineseTextNormalizer, EnglishTextNormalizer, to_simplified
from ..tokenizers import EvaluationTokenizer

_TAG = re.compile(r"<\|.*?\|>")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCTUATION = re.compile(" ?([!,.?;:])")

# step names as the reference data records them
STEP_T2S = "zhconv.convert(zh-cn)"
STEP_ENGLISH = "EnglishTextNormalizer"
STEP_BASIC = "BasicTextNormalizer"
STEP_CHINESE = "cn_tn.TextNorm"
STEP_TOKENIZE = "EvaluationTokenizer.tokenize"

_english = EnglishTextNormalizer()
_basic = BasicTextNormalizer()
_chinese = ChineseTextNormalizer()
_tokenizer = EvaluationTokenizer("none", lowercase=True, punctuation_removal=True)


def remove_special_tokens(text: str, language: str) -> str:
    """Tags like <|en|> to spaces, whitespace collapsed, no space before ! , . ? ; :, leading spaces
    dropped (trailing ones stay); for zh all whitespace goes."""
    text = _TAG.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = text.lstrip(" ")
    if language == "zh":
        text = _SPACES.sub("", text)
    return text


def normalizer_steps(language: str) -> list[tuple[str, Callable[[str], str]]]:
    steps: list[tuple[str, Callable[[str], str]]] = []
    if language == "yue":
        steps.append((STEP_T2S, to_simplified))
    if language == "en":
        steps.append((STEP_ENGLISH, _english))
    # upstream tests zh in its own if/else: every other language, English included, also gets the basic one
    steps.append((STEP_CHINESE, _chinese) if language == "zh" else (STEP_BASIC, _basic))
    return steps


@dataclass
class AsrPair:
    id: Any
    gt: str
    response: str
    ref_after_remove_sp: str
    hyp_after_remove_sp: str
    steps: list[dict[str, str]]
    ref_normalized: str
    hyp_normalized: str
    ref_items: list[str]
    hyp_items: list[str]
    edit_distance: int
    ref_len: int


@dataclass
class AsrSourceScore:
    source: str
    language: str
    count: int = 0
    edit_distance_total: int = 0
    ref_length_total: int = 0
    pairs: list[AsrPair] = field(default_factory=list)

    @property
    def wer(self) -> float | None:
        """None when no reference has any item (upstream divides by zero there)."""
        return self.edit_distance_total / self.ref_length_total if self.ref_length_total else None

    def printed_line(self) -> str:
        """The line the official script prints."""
        wer = "n/a" if self.wer is None else f"{self.wer:.4f}"
        return f"source: {self.source}  cnt: {self.count} wer: {wer}"


def score_pair(gt: str, response: str, language: str, identifier: Any = None) -> AsrPair:
    ref = remove_special_tokens(gt, language)
    hyp = remove_special_tokens(response, language)
    ref_after, hyp_after = ref, hyp
    steps = []
    for name, step in normalizer_steps(language):
        ref_out, hyp_out = step(ref), step(hyp)
        steps.append({"step": name, "ref_in": ref, "ref_out": ref_out, "hyp_in": hyp, "hyp_out": hyp_out})
        ref, hyp = ref_out, hyp_out
    ref_tokens, hyp_tokens = _tokenizer.tokenize(ref), _tokenizer.tokenize(hyp)
    steps.append({"step": STEP_TOKENIZE, "ref_in": ref, "ref_out": ref_tokens, "hyp_in": hyp, "hyp_out": hyp_tokens})
    ref_items, hyp_items = ref_tokens.split(), hyp_tokens.split()
    if language in ("zh", "yue"):
        # characters are code points, so a supplementary-plane ideograph is one item
        ref_items, hyp_items = list("".join(ref_items)), list("".join(hyp_items))
    return AsrPair(identifier, gt, response, ref_after, hyp_after, steps, ref, hyp, ref_items, hyp_items,
                   edit_distance(ref_items, hyp_items), len(ref_items))


def score_asr(records: Iterable[dict[str, Any]], language: str) -> dict[str, AsrSourceScore]:
    """Scores per source of records with ``gt``, ``response`` and ``source``."""
    scores: dict[str, AsrSourceScore] = {}
    for record in records:
        source = record["source"]
        score = scores.setdefault(source, AsrSourceScore(source, language))
        pair = score_pair(record["gt"], record["response"], language, record.get("id"))
        score.pairs.append(pair)
        score.count += 1
        score.edit_distance_total += pair.edit_distance
        score.ref_length_total += pair.ref_len
    return scores


def pair_as_dict(pair: AsrPair) -> dict[str, Any]:
    return dict(pair.__dict__)
