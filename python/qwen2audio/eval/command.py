"""The ``qwen2audio eval`` command: run the paper's evaluation datasets through the engine and score
them as the official scripts do, or (``--score-only``) score responses produced anywhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from . import tasks
from .report import paper_comparison, print_tables
from .scoring import DatasetResult, attach_airbench_meta, merge_summary, score_dataset

EPILOG = """\
datasets (--datasets; the files the official scripts read, under --data):
  librispeech  asr/librispeech_eval.jsonl      en     cv15_en    asr/cv15_asr_en_eval.jsonl    en
  aishell2     asr/aishell2_eval.jsonl         zh     cv15_zh    asr/cv15_asr_zh_eval.jsonl    zh
  fleurs_zh    asr/fleurs_asr_zh_eval.jsonl    zh     cv15_yue   asr/cv15_asr_yue_eval.jsonl   yue
  cv15_fr      asr/cv15_asr_fr_eval.jsonl      fr     covost2    st/covost2_eval.jsonl
  meld         ser/meld_eval.jsonl                    vocalsound vsc/vocalsound_eval.jsonl
  airbench_foundation, airbench_chat: --airbench-root with Foundation_meta.json / Chat_meta.json and the
  audio as {task_name}_{dataset_name}/{path}
  Each JSONL line: audio (relative to --audio-root), prompt, gt, source.

outputs (--output-dir): per dataset NAME.generations.jsonl (resumable), NAME.responses.jsonl (each
record with its response; AIR-Bench: its result-file lines), NAME.items.jsonl (per item: normalized
strings, items, errors), and summary.json. AIR-Bench chat answers are written for AIR-Bench's GPT-4
judge (score_chat.py), which this command does not run.

--score-only FILE...: JSONL files of records with 'response' (the official format plus the model output,
as HF or vLLM runs produce); the dataset is recognised from the file name or the sources, or --dataset.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--score-only", nargs="+", metavar="RESPONSES", default=None,
                        help="score these responses files; no model is loaded")
    parser.add_argument("--dataset", default=None,
                        help="with --score-only: the dataset of the files (default: recognised from name/sources)")
    parser.add_argument("--language", default=None,
                        help="with --score-only: score as ASR in this language (en, zh, yue, fr, ...), for a set "
                             "outside the list")
    parser.add_argument("--airbench-meta", default=None,
                        help="with --score-only of uniq_id/response lines: AIR-Bench's Foundation_meta.json")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="NAME", help="datasets to run (see below)")
    parser.add_argument("--data", default=".", help="folder holding asr/, st/, ser/, vsc/ as the official scripts")
    parser.add_argument("--audio-root", default=None,
                        help="folder the JSONL 'audio' paths are relative to (default: the current folder, as "
                             "upstream)")
    parser.add_argument("--airbench-root", default=None, help="AIR-Bench's Foundation/ (or Chat/) folder")
    parser.add_argument("--output-dir", default=None, help="where responses, per-item lines and summary.json go")
    parser.add_argument("--batch-size", type=int, default=1, help="records per batch (left-padded, as upstream)")
    parser.add_argument("--shard", default=None, help="I/N: only shard I of N; score later with --score-only on "
                                                      "all shards' responses files")
    parser.add_argument("--dask-scheduler", default=None, help="generate on a Dask distributed cluster at this address")
    parser.add_argument("--retry-errors", action="store_true", help="redo records whose generation failed")
    parser.add_argument("--max-new-tokens", type=int, default=tasks.GENERATION["max_new_tokens"],
                        help="most tokens per response (the official scripts: 256)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--items", default=None, help="write the per-item JSONL here")
    parser.add_argument("--compare", choices=["paper"], default=None,
                        help="paper: print the Qwen2-Audio paper's Table 2 figure beside each source")


def _group_score_only(args: argparse.Namespace) -> list[DatasetResult]:
    grouped: dict[str, tuple[tasks.Dataset, list[dict[str, Any]], list[str]]] = {}
    for path in args.score_only:
        # one shard's file may be empty; all of them empty is an error below
        records = tasks.read_jsonl(path, allow_empty=True)
        if not records:
            continue
        if args.language:
            data = tasks.custom_asr_dataset(args.dataset or Path(path).stem, args.language)
        elif args.dataset:
            data = tasks.dataset(args.dataset)
        else:
            data = tasks.guess_dataset(path, records)
        if data.task == tasks.AIRBENCH_FOUNDATION and "task_name" not in records[0]:
            if not args.airbench_meta:
                raise ValueError(f"{path}: lines without the questions (uniq_id/response): give --airbench-meta "
                                 "Foundation_meta.json")
            records = attach_airbench_meta(records, tasks.read_airbench_meta(args.airbench_meta), path)
        for record in records:
            # names the per-item lines of files without ids (the official JSONLs have none)
            if record.get("id") is None and "uniq_id" not in record:
                record["id"] = record.get("audio") or f"{Path(path).name}:{record['_line']}"
        entry = grouped.setdefault(data.key, (data, [], []))
        entry[1].extend(records)
        entry[2].append(str(path))
    if not grouped:
        raise ValueError(f"no records in {', '.join(args.score_only)}")
    return [score_dataset(data, records, ", ".join(paths)) for data, records, paths in grouped.values()]


def _run(args: argparse.Namespace) -> tuple[list[DatasetResult], list[str]]:
    from ..annotate import parse_shard
    from ..cli import _HUB_ID, _load, _note, check_model_path
    from .runner import load_records, missing_audio

    if not args.model:
        raise ValueError("give --model (a checkpoint folder) to run inference, or --score-only RESPONSES.jsonl")
    if not args.datasets:
        raise ValueError("give --datasets NAME... (or --score-only RESPONSES.jsonl)")
    if not args.output_dir:
        raise ValueError("give --output-dir for the responses and results")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be at least 1")
    chosen = [tasks.dataset(name) for name in args.datasets]
    shard = parse_shard(args.shard) if args.shard else None
    loaded = []
    for data in chosen:  # every input is read and checked before the model loads
        records = load_records(data, Path(args.data), Path(args.audio_root) if args.audio_root else None,
                               Path(args.airbench_root) if args.airbench_root else None)
        absent = missing_audio(records)
        if absent and data.task in (tasks.AIRBENCH_FOUNDATION, tasks.AIRBENCH_CHAT):
            # AIR-Bench's inference script skips questions whose audio is missing ("lack wav")
            _note(f"{data.key}: {len(absent)} of {len(records)} audio files are missing (e.g. "
                  f"{absent[0]['audio_path']}); those questions are skipped, as AIR-Bench's script does")
            records = [record for record in records if Path(record["audio_path"]).exists()]
        elif absent:
            _note(f"{data.key}: {len(absent)} of {len(records)} audio files are missing (e.g. "
                  f"{absent[0]['audio_path']}); they get error lines and the dataset is not scored")
        loaded.append((data, records))
    if not args.dask_scheduler or _HUB_ID.fullmatch(args.model):
        check_model_path(args.model)  # with Dask the folder need only exist on the workers
    if Path(args.model, "config.json").is_file():
        from ..auto import _resolve

        tasks.check_model_family(_resolve(args.model, "model"), chosen)
    client = None
    model = processor = None
    if args.dask_scheduler:
        from distributed import Client

        client = Client(args.dask_scheduler)
    else:
        model, processor = _load(args)
    try:
        return _generate_and_score(args, loaded, model, processor, client, shard)
    finally:
        if client is not None:
            client.close()


def _generate_and_score(args: argparse.Namespace, loaded: list, model: Any, processor: Any, client: Any,
                        shard: tuple[int, int] | None) -> tuple[list[DatasetResult], list[str]]:
    from ..cli import _model_kwargs
    from .runner import run_dataset

    dask = (client, args.model, _model_kwargs(args)) if client is not None else None
    generation = dict(tasks.GENERATION, max_new_tokens=args.max_new_tokens)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results: list[DatasetResult] = []
    notes: list[str] = []
    for data, records in loaded:
        answered, counts, responses = run_dataset(model, processor, data, records, output_dir, generation,
                                                  args.batch_size, shard, args.long_audio, not args.quiet,
                                                  args.retry_errors, dask)
        print(json.dumps({"dataset": data.key, "responses": str(responses), **counts}), file=sys.stderr)
        expected = len(records) if shard is None else None
        if data.task == tasks.AIRBENCH_CHAT:
            notes.append(f"{data.key}: responses in {responses} (AIR-Bench's result format); scoring them needs "
                         "AIR-Bench's GPT-4 judge (score_chat.py), which this command does not run")
            continue
        if shard is not None:
            notes.append(f"{data.key}: shard {args.shard} written to {responses}; score all shards together with "
                         "--score-only")
            continue
        if counts["errors"] or counts["missing"] or (expected is not None and len(answered) != expected):
            notes.append(f"{data.key}: {counts['errors'] + counts['missing']} records have no response (see "
                         f"{output_dir / (data.key + '.generations.jsonl')}; --retry-errors redoes failed ones); "
                         "not scored")
            continue
        result = score_dataset(data, answered, str(responses))
        _write_items(output_dir / f"{data.key}.items.jsonl", result.items)
        results.append(result)
    if results:
        summary = merge_summary(results)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    return results, notes


def _write_items(path: Path | str, items: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps({k: v for k, v in item.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")


def report(results: list[DatasetResult], args: argparse.Namespace, stream: TextIO) -> None:
    if args.json:
        payload: dict[str, Any] = merge_summary(results)
        payload["official_lines"] = {result.dataset.key: result.printed for result in results}
        if args.compare == "paper":
            payload["paper"] = paper_comparison(results)
        print(json.dumps(payload, indent=1, ensure_ascii=False), file=stream)
    else:
        print_tables(results, stream, compare_paper=args.compare == "paper")


def run(args: argparse.Namespace) -> int:
    if args.score_only:
        results = _group_score_only(args)
        notes: list[str] = []
    else:
        results, notes = _run(args)
    if args.items:
        _write_items(args.items, [item for result in results for item in result.items])
    if results:
        report(results, args, sys.stdout)
    for note in notes:
        print(f"qwen2audio: {note}", file=sys.stderr)
    return 0
