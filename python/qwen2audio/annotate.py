"""Batch annotation of audio files into a resumable JSONL file.

Each output line is one file: ``{"id", "path", "prompt", "answer", "tokens", "seconds"}``, or
``{"id", "path", "prompt", "error"}`` when the file could not be processed. Lines are flushed as they
are written, so an interrupted run loses nothing, and a rerun skips the ids already present.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au")


@dataclass(frozen=True)
class AnnotationItem:
    id: str
    path: str
    prompt: str | None = None  # overrides the run's prompt when the manifest gives one


def read_manifest(source: str | os.PathLike) -> list[AnnotationItem]:
    """A folder (every audio file under it, sorted; id = path relative to the folder), a CSV with a
    ``path`` column (optional ``id`` and ``prompt``), or a JSONL file of objects with the same keys.
    Relative paths are taken relative to the manifest's folder."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        items = [AnnotationItem(id=str(p.relative_to(source)), path=str(p)) for p in files]
    elif source.is_file():
        rows = _read_rows(source)
        items = []
        for number, row in enumerate(rows, start=1):
            path = row.get("path") or row.get("audio") or row.get("file")
            if not path:
                raise ValueError(f"{source}: entry {number} has no 'path' (or 'audio'/'file') field: {row!r}")
            resolved = Path(path) if Path(path).is_absolute() else source.parent / path
            items.append(AnnotationItem(id=str(row.get("id") or path), path=str(resolved), prompt=row.get("prompt") or None))
    else:
        raise ValueError(f"{source}: no such manifest file or folder")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{source}: id {item.id!r} appears twice; ids must be unique for resumable output")
        seen.add(item.id)
    return items


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    with open(path, newline="", encoding="utf-8") as stream:
        if suffix == ".csv":
            return list(csv.DictReader(stream))
        if suffix in (".jsonl", ".ndjson", ".json"):
            rows = []
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON: {error}") from error
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: each line must be a JSON object")
                rows.append(row)
            return rows
    raise ValueError(f"{path}: manifest must be a folder, a .csv or a .jsonl file")


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based) -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {text}: need 1 <= I <= N")
    return index, count


def select_shard(items: Sequence[AnnotationItem], index: int, count: int) -> list[AnnotationItem]:
    """The items of shard ``index`` of ``count``: decided by a hash of the id alone, so every job of an
    array (Slurm, Ray, Kubernetes) agrees without coordination and each file lands in exactly one shard,
    whatever the manifest's order."""
    def shard_of(item: AnnotationItem) -> int:
        digest = hashlib.sha256(item.id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "little") % count + 1

    return [item for item in items if shard_of(item) == index]


class ResultWriter:
    """Appends one JSON line per finished file, flushed at once. On open it reads the ids already
    written and cuts off a torn last line left by an interrupt."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.exists():
            self._recover()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.path, "a", encoding="utf-8")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        valid_end = 0
        position = 0
        for line in data.splitlines(keepends=True):
            position += len(line)
            if not line.endswith(b"\n"):
                break  # torn write: the process died mid-line
            try:
                record = json.loads(line)
                self.done.add(str(record["id"]))
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                break
            valid_end = position
        if valid_end != len(data):
            with open(self.path, "r+b") as stream:
                stream.truncate(valid_end)

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._stream.flush()
        self.done.add(str(record["id"]))

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batched(items: Sequence[AnnotationItem], size: int) -> Iterator[list[AnnotationItem]]:
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class Annotator:
    """Runs one batch of files through a model; used in-process and on Dask workers alike."""

    model: Any
    processor: Any
    generation_kwargs: dict[str, Any] = field(default_factory=dict)

    def run_batch(self, items: Sequence[AnnotationItem], default_prompt: str) -> list[dict[str, Any]]:
        from .audio import load_audio

        records: list[dict[str, Any]] = []
        loaded: list[tuple[AnnotationItem, Any]] = []
        for item in items:
            try:
                loaded.append((item, load_audio(item.path, sampling_rate=16000)))
            except Exception as error:  # noqa: BLE001 - a bad file is recorded, the run goes on
                records.append(_error_record(item, default_prompt, error))
        if len(loaded) > 1:
            try:
                return records + self._generate(loaded, default_prompt)
            except KeyboardInterrupt:
                raise
            except Exception:  # noqa: BLE001 - retried one file at a time below, to find the culprit
                pass
        for pair in loaded:
            try:
                records.extend(self._generate([pair], default_prompt))
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001
                records.append(_error_record(pair[0], default_prompt, error))
        return records

    def _generate(self, loaded: list[tuple[AnnotationItem, Any]], default_prompt: str) -> list[dict[str, Any]]:
        started = time.perf_counter()
        prompts = [item.prompt or default_prompt for item, _ in loaded]
        conversations = [
            [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": prompt}]}]
            for (item, audio), prompt in zip(loaded, prompts)
        ]
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, padding=True,
            sampling_rate=16000,
        )
        sequences = self.model.generate(**inputs, **self.generation_kwargs)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = sequences[:, prompt_length:]
        answers = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        pad = getattr(self.processor.tokenizer, "pad_token_id", None)
        eos = set(getattr(self.model.generation_config, "eos_token_id", None) or [])
        seconds = (time.perf_counter() - started) / len(loaded)
        records = []
        for (item, _), prompt, answer, row in zip(loaded, prompts, answers, new_tokens):
            count = 0
            for token in row.tolist():
                if token in eos or token == pad:
                    break
                count += 1
            records.append({"id": item.id, "path": item.path, "prompt": prompt, "answer": answer.strip(),
                            "tokens": count, "seconds": round(seconds, 4)})
        return records


def _error_record(item: AnnotationItem, prompt: str, error: BaseException) -> dict[str, Any]:
    return {"id": item.id, "path": item.path, "prompt": item.prompt or prompt, "error": f"{type(error).__name__}: {error}"}


def annotate(
    annotator: Annotator,
    items: Sequence[AnnotationItem],
    prompt: str,
    output: str | os.PathLike,
    batch_size: int = 1,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, int]:
    """Annotate ``items`` not yet in ``output``; returns counts of written, failed and skipped files."""
    with ResultWriter(output) as writer:
        pending = [item for item in items if item.id not in writer.done]
        counts = {"written": 0, "failed": 0, "skipped": len(items) - len(pending)}
        bar = _progress_bar(len(pending), progress)
        try:
            for batch in batched(pending, batch_size):
                for record in annotator.run_batch(batch, prompt):
                    writer.write(record)
                    counts["failed" if "error" in record else "written"] += 1
                    if on_record:
                        on_record(record)
                bar.update(len(batch))
        finally:
            bar.close()
    return counts


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoProgress()
    return tqdm(total=total, unit="file", desc="annotate", dynamic_ncols=True)
