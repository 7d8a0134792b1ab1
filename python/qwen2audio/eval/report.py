"""Tables of the results, one per task with a row per source, as the paper reports them (WER in %,
BLEU, accuracy), optionally beside the paper's own figure (Qwen2-Audio technical report, Table 2)."""

from __future__ import annotations

import re
from typing import Any, TextIO

from . import tasks
from .scoring import DatasetResult

# Qwen2-Audio, Table 2: (label, figure). WER in %, BLEU, accuracy as a fraction.
PAPER_TABLE_2 = {
    "librispeech test-clean": 1.6, "librispeech test-other": 3.6,
    "common voice 15 en": 8.6, "common voice 15 zh": 6.9, "common voice 15 yue": 5.9, "common voice 15 fr": 9.6,
    "fleurs zh": 7.5,
    "aishell-2 mic": 3.0, "aishell-2 ios": 3.0, "aishell-2 android": 2.9,
    "covost2 en-de": 29.9, "covost2 de-en": 35.2, "covost2 en-zh": 45.2, "covost2 zh-en": 24.4,
    "covost2 es-en": 40.0, "covost2 fr-en": 38.5, "covost2 it-en": 36.3,
    "meld": 0.553, "vocalsound": 0.9392,
}


def paper_row(data: tasks.Dataset, source: str) -> str | None:
    """The Table 2 row a source corresponds to, from the dataset and the source's name (None: no such row)."""
    name = source.lower()
    if data.key == "librispeech":
        for split in ("clean", "other"):
            if split in name:
                return f"librispeech test-{split}"
        return None
    if data.key.startswith("cv15_"):
        return f"common voice 15 {data.key[5:]}"
    if data.key == "fluers_zh":
        return "fleurs zh"
    if data.key == "aishell2":
        for device in ("mic", "ios", "android"):
            if device in name:
                return f"aishell-2 {device}"
        return None
    if data.key == "covost2":
        match = re.search(r"_([a-z]{2})_([a-z]{2})(?:_[^_]*)?$", name)
        if match:
            row = f"covost2 {match.group(1)}-{match.group(2)}"
            return row if row in PAPER_TABLE_2 else None
        return None
    if data.key in ("meld", "vocalsound"):
        return data.key
    return None


def _figure(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def rows(result: DatasetResult) -> list[tuple[str, int, str, str | None]]:
    """(name, count, our figure, paper row) for each source or AIR-Bench task."""
    data = result.dataset
    out = []
    if data.task == tasks.ASR:
        for source, entry in result.summary.items():
            wer = entry["wer"]
            out.append((source, entry["count"], _figure(None if wer is None else 100 * wer, 2), paper_row(data, source)))
    elif data.task == tasks.ST:
        for source, entry in result.summary.items():
            out.append((source, entry["count"], _figure(entry["bleu"], 2), paper_row(data, source)))
    elif data.task in (tasks.SER, tasks.VSC):
        for source, entry in result.summary.items():
            out.append((source, entry["count"], _figure(entry["accuracy"], 4), paper_row(data, source)))
    elif data.task == tasks.AIRBENCH_FOUNDATION:
        for name, entry in result.summary["tasks"].items():
            out.append((name, entry["sum"], _figure(entry["acc"], 4), None))
    return out


def print_tables(results: list[DatasetResult], stream: TextIO, compare_paper: bool = False) -> None:
    by_task: dict[str, list[DatasetResult]] = {}
    for result in results:
        by_task.setdefault(result.dataset.task, []).append(result)
    first = True
    for task in (tasks.ASR, tasks.ST, tasks.SER, tasks.VSC, tasks.AIRBENCH_FOUNDATION):
        if task not in by_task:
            continue
        table = [row for result in by_task[task] for row in rows(result)]
        width = max([len("source")] + [len(name) for name, *_ in table])
        headers = ["source".ljust(width), "count".rjust(6), "score".rjust(8)]
        paper_column = compare_paper and task != tasks.AIRBENCH_FOUNDATION  # not in the paper's Table 2
        if paper_column:
            headers.append("paper".rjust(8))
        if not first:
            print(file=stream)
        first = False
        print(tasks.TASK_TITLES[task], file=stream)
        print("  ".join(headers), file=stream)
        for name, count, figure, paper in table:
            cells = [name.ljust(width), str(count).rjust(6), figure.rjust(8)]
            if paper_column:
                cells.append((str(PAPER_TABLE_2[paper]) if paper else "-").rjust(8))
            print("  ".join(cells), file=stream)
        if task == tasks.ST:
            signatures = sorted({entry["signature"] for result in by_task[task] for entry in result.summary.values()})
            for signature in signatures:
                print(f"  sacreBLEU signature: {signature}", file=stream)
        if task == tasks.AIRBENCH_FOUNDATION:
            for result in by_task[task]:
                print(f"  total_sum {result.summary['total_sum']}, failed extractions (fail_num) "
                      f"{result.summary['fail_num']}", file=stream)


def paper_comparison(results: list[DatasetResult]) -> dict[str, Any]:
    """source -> {"paper_row", "paper"} for the --json output with --compare paper."""
    out: dict[str, Any] = {}
    for result in results:
        if result.dataset.task == tasks.AIRBENCH_FOUNDATION:
            continue
        for source in result.summary:
            row = paper_row(result.dataset, source)
            out[source] = {"paper_row": row, "paper": PAPER_TABLE_2.get(row) if row else None}
    return out
