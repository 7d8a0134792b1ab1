"""Accuracy for emotion recognition (MELD, evaluate_emotion.py) and vocal-sound classification
(VocalSound, evaluate_vocal_sound.py): per ``source``, the response with leading whitespace removed
must equal ``gt`` exactly (case, trailing whitespace and punctuation all count)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class AccuracySourceScore:
    source: str
    count: int = 0
    correct: int = 0
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else 0.0

    def printed_line(self) -> str:
        """As upstream prints it (print's str() of the float)."""
        return f"{self.source} ACC_score: {self.accuracy} {self.count}"


def score_exact_match(records: Iterable[dict[str, Any]]) -> dict[str, AccuracySourceScore]:
    scores: dict[str, AccuracySourceScore] = {}
    for record in records:
        score = scores.setdefault(record["source"], AccuracySourceScore(record["source"]))
        response = record["response"].lstrip()
        match = response == record["gt"]
        score.count += 1
        score.correct += match
        score.pairs.append({"id": record.get("id"), "gt": record["gt"], "response": record["response"],
                            "response_lstripped": response, "match": match})
    return scores


score_emotion = score_exact_match
score_vocal_sound = score_exact_match
