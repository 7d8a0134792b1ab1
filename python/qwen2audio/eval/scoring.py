"""Scores a dataset's records (each with its ``response``) with the scorer of its task, and gives the
summary figures (shaped like the reference data's summary.json) and one per-item line per record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import tasks
from .scorers.airbench import score_foundation
from .scorers.asr import pair_as_dict, score_asr
from .scorers.classification import score_exact_match
from .scorers.st import score_st

SUMMARY_SECTIONS = {tasks.ASR: "asr_wer", tasks.ST: "st_bleu", tasks.SER: "ser_acc", tasks.VSC: "vsc_acc",
                    tasks.AIRBENCH_FOUNDATION: "airbench"}


@dataclass
class DatasetResult:
    dataset: tasks.Dataset
    summary: dict[str, Any] = field(default_factory=dict)  # source (or "tasks"...) -> figures
    items: list[dict[str, Any]] = field(default_factory=list)
    printed: list[str] = field(default_factory=list)  # the official script's result lines


def _responses(records: list[dict[str, Any]], where: str) -> None:
    for record in records:
        if not isinstance(record.get("response"), str):
            raise ValueError(f"{where}:{record.get('_line', '?')}: no 'response' string (got "
                             f"{type(record.get('response')).__name__}); --score-only needs each record's model output")


def score_dataset(data: tasks.Dataset, records: list[dict[str, Any]], where: str = "responses") -> DatasetResult:
    if data.task == tasks.AIRBENCH_CHAT:
        raise ValueError("AIR-Bench chat is scored by a GPT-4 judge (AIR-Bench's score_chat.py), which this tool "
                         "does not call: give its Chat_result_modelx.jsonl to that script")
    _responses(records, where)
    result = DatasetResult(data)
    if data.task == tasks.ASR:
        tasks.require_fields(records, ("gt", "source"), where)
        if data.language is None:
            raise ValueError(f"ASR dataset {data.key} has no language")
        for source, score in score_asr(records, data.language).items():
            result.summary[source] = {"dataset": data.key, "language": data.language, "wer": score.wer,
                                      "edit_distance_total": score.edit_distance_total,
                                      "ref_length_total": score.ref_length_total, "count": score.count}
            result.printed.append(score.printed_line())
            for pair in score.pairs:
                result.items.append({"dataset": data.key, "source": source, "language": data.language,
                                     **pair_as_dict(pair), "errors": pair.edit_distance})
    elif data.task == tasks.ST:
        tasks.require_fields(records, ("gt", "source"), where)
        for source, score in score_st(records).items():
            bleu = score.bleu
            assert bleu is not None
            result.summary[source] = {"bleu": bleu.score, "tokenize": bleu.tokenize, "signature": bleu.signature,
                                      "count": score.count, "formatted": bleu.format()}
            result.printed.append(score.printed_line())
            for identifier, gt, response, ref, hyp in zip(score.ids, score.gts, score.responses, bleu.ref_tokenized,
                                                          bleu.hyp_tokenized):
                result.items.append({"dataset": data.key, "source": source, "id": identifier, "gt": gt,
                                     "response": response, "ref_tokenized": ref, "hyp_tokenized": hyp})
    elif data.task in (tasks.SER, tasks.VSC):
        tasks.require_fields(records, ("gt", "source"), where)
        for source, score in score_exact_match(records).items():
            result.summary[source] = {"accuracy": score.accuracy, "correct": score.correct, "count": score.count}
            result.printed.append(score.printed_line())
            for pair in score.pairs:
                result.items.append({"dataset": data.key, "source": source, **pair})
    elif data.task == tasks.AIRBENCH_FOUNDATION:
        tasks.require_fields(records, ("answer_gt", "choice_a", "choice_b", "task_name", "dataset_name"), where)
        score = score_foundation(records)
        result.summary = {"tasks": {name: {"sum": task.sum, "correct": task.correct, "acc": task.acc}
                                    for name, task in score.tasks.items()},
                          "total_sum": score.total_sum, "fail_num": score.fail_num}
        result.printed = [task.printed_line() for task in score.tasks.values()]
        result.printed += [f"total_sum: {score.total_sum}", f"fail_num: {score.fail_num}"]
        result.items = [{"dataset": data.key, **item} for item in score.items]
    else:
        raise ValueError(f"no scorer for task {data.task!r}")
    return result


def merge_summary(results: list[DatasetResult]) -> dict[str, Any]:
    """All results in the layout of the reference summary.json (asr_wer, st_bleu, ser_acc, vsc_acc, airbench)."""
    summary: dict[str, Any] = {}
    for result in results:
        section = SUMMARY_SECTIONS[result.dataset.task]
        if section == "airbench":
            summary[section] = result.summary
        else:
            summary.setdefault(section, {}).update(result.summary)
    return summary


def attach_airbench_meta(records: list[dict[str, Any]], meta: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Responses keyed by uniq_id (``{"uniq_id", "response"}`` lines) joined with their questions."""
    by_id = {str(item["uniq_id"]): item for item in meta}
    joined = []
    for record in records:
        key = str(record.get("uniq_id"))
        if key not in by_id:
            raise ValueError(f"{where}:{record.get('_line', '?')}: uniq_id {record.get('uniq_id')!r} is not in the "
                             "AIR-Bench meta file")
        joined.append({**by_id[key], **{k: v for k, v in record.items() if k != "_line"},
                       "_line": record.get("_line")})
    return joined
