"""AIR-Bench foundation (single-choice) scoring as its score_foundation.py does it.

The response is stripped and loses every newline; the answer letter is its first character when
that is A-D (upper case), else its second-to-last character when that is A-D, else extraction fails
("None" and empty responses fail too). Failed extractions count in ``fail_num`` and in neither the
task's numerator nor its denominator. The ground-truth letter is the first choice whose text equals
``answer_gt``. Task id = task_name + "_" + dataset_name, in order of first appearance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

LETTERS = "ABCD"
_CHOICE_FIELDS = ("choice_a", "choice_b", "choice_c", "choice_d")


def clean_response(response: str) -> str:
    return response.strip().replace("\n", "")


def extract_letter(response: str) -> str | None:
    predict = clean_response(response)
    if not predict or predict == "None":
        return None
    if predict[0] in LETTERS:
        return predict[0]
    if len(predict) > 1 and predict[-2] in LETTERS:
        return predict[-2]
    return None


def answer_letter(record: dict[str, Any]) -> str:
    for letter, name in zip(LETTERS, _CHOICE_FIELDS):
        # choice_a/choice_b must exist upstream; c/d may be missing or null
        choice = record[name] if name in ("choice_a", "choice_b") else record.get(name)
        if record["answer_gt"] == choice:
            return letter
    raise ValueError(f"AIR-Bench record {record.get('uniq_id', record.get('path'))!r}: answer_gt "
                     f"{record['answer_gt']!r} equals none of its choices")


@dataclass
class TaskScore:
    task: str
    sum: int = 0
    correct: int = 0

    @property
    def acc(self) -> float | None:
        """None when every response of the task failed extraction (upstream crashes there)."""
        return self.correct / self.sum if self.sum else None

    def printed_line(self) -> str:
        return f"{self.task}: Sum={self.sum}, correct={self.correct}, acc={self.acc}"


@dataclass
class FoundationScore:
    tasks: dict[str, TaskScore] = field(default_factory=dict)
    fail_num: int = 0
    skipped_without_task: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_sum(self) -> int:
        return sum(task.sum for task in self.tasks.values())


def task_id(record: dict[str, Any]) -> str:
    return f"{record['task_name']}_{record['dataset_name']}"


def score_foundation(records: Iterable[dict[str, Any]]) -> FoundationScore:
    result = FoundationScore()
    for record in records:
        if record.get("task_name") is None:
            result.skipped_without_task += 1  # upstream skips these without counting them
            continue
        task = result.tasks.setdefault(task_id(record), TaskScore(task_id(record)))
        response = record.get("response")
        if response is None:
            raise ValueError(f"AIR-Bench record {record.get('uniq_id')!r} has no 'response'")
        predicted = extract_letter(response)
        item = {"uniq_id": record.get("uniq_id"), "task": task.task, "response": response, "predicted": predicted}
        if predicted is None:
            result.fail_num += 1
            item["outcome"] = "failed_extraction"
        else:
            expected = answer_letter(record)
            task.sum += 1
            task.correct += predicted == expected
            item.update(expected=expected, outcome="correct" if predicted == expected else "wrong")
        result.items.append(item)
    return result
