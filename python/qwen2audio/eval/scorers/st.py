"""Speech-translation BLEU as the official Qwen2-Audio scorer (evaluate_st.py) computes it: per
``source``, sacrebleu 1.5.1 ``corpus_bleu`` on the raw responses and references (tags are not
stripped), with the tokenizer of the target language read from the source name
``covost2_<audio language>_<text language>_<split>``: zh -> zh, ja -> ja-mecab, others 13a."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from ..bleu import BleuResult, corpus_bleu


def target_language(source: str) -> str:
    parts = source.split("_")
    if len(parts) < 3:
        raise ValueError(f"speech-translation source {source!r} does not name its languages: the target language "
                         "is read from names like covost2_<src>_<tgt>_<split> (e.g. covost2_en_zh_test)")
    return parts[-2]


def tokenizer_for(language: str) -> str:
    return {"zh": "zh", "ja": "ja-mecab"}.get(language, "13a")


@dataclass
class StSourceScore:
    source: str
    target_language: str
    tokenize: str
    count: int = 0
    ids: list[Any] = field(default_factory=list)
    gts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    bleu: BleuResult | None = None

    @property
    def score(self) -> float:
        assert self.bleu is not None
        return self.bleu.score

    def printed_line(self) -> str:
        return f"source: {self.source}  cnt: {self.count} bleu score: {self.score:.4f}"


def score_st(records: Iterable[dict[str, Any]]) -> dict[str, StSourceScore]:
    scores: dict[str, StSourceScore] = {}
    for record in records:
        source = record["source"]
        if source not in scores:
            language = target_language(source)
            scores[source] = StSourceScore(source, language, tokenizer_for(language))
        score = scores[source]
        score.count += 1
        score.ids.append(record.get("id"))
        score.gts.append(record["gt"])
        score.responses.append(record["response"])
    for score in scores.values():
        try:
            score.bleu = corpus_bleu(score.responses, score.gts, tokenize=score.tokenize)
        except ValueError as error:
            raise ValueError(f"source {score.source}: {error}") from None
    return scores
