"""Batch annotation of audio files into a resumable JSONL file.

Each output line is one file::

    {"id", "path", "prompt", "answer", "tokens", "finish_reason", "duration_s", "truncated", "seconds", "key"}

or ``{"id", "path", "prompt", "error", ..., "key"}`` when the file could not be processed. ``finish_reason`` is
``"stop"`` when an end-of-turn token ended the answer and ``"length"`` when ``max_new_tokens`` did;
``truncated`` says the clip was longer than the model's 30 s window and only its start was heard
(``long_audio="chunk"`` keeps all of it); ``seconds`` is the file's share of its batch's wall time.

``key`` fingerprints what decides the answer: the prompt, the generation settings, ``long_audio``, dtype,
quantization and the model (its folder and config files). Lines are flushed as they are written, so an
interrupted run loses nothing; a rerun skips the files whose line has the same key, refuses (with a message
saying what changed) when lines of the files it would annotate were made with other settings, and with
``retry_errors=True`` redoes the files whose line is an error (the file is rewritten atomically without
those lines first, then their new lines are appended).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .audio import FFMPEG_EXTENSIONS

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au") + FFMPEG_EXTENSIONS


@dataclass(frozen=True)
class AnnotationItem:
    id: str
    path: str
    prompt: str | None = None  # overrides the run's prompt when the manifest gives one


def read_manifest(source: str | os.PathLike) -> list[AnnotationItem]:
    """A folder (every audio file under it, sorted; id = path relative to the folder), a CSV with a
    ``path`` column (optional ``id`` and ``prompt``), or a JSONL file of objects with the same keys.
    Relative paths are taken relative to the manifest's folder. An empty folder or manifest is an error."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise ValueError(f"{source}: no audio files in this folder or below (accepted extensions: "
                             f"{', '.join(AUDIO_EXTENSIONS)}; {', '.join(FFMPEG_EXTENSIONS)} need ffmpeg)")
        items = [AnnotationItem(id=str(p.relative_to(source)), path=str(p)) for p in files]
    elif source.is_file():
        rows = _read_rows(source)
        items = []
        for number, row in enumerate(rows, start=1):
            path = row.get("path") or row.get("audio") or row.get("file")
            if not path:
                raise ValueError(f"{source}: entry {number} has no 'path' (or 'audio'/'file') field: {row!r}")
            path = str(path)
            remote = "://" in path  # kept as written: loading it says that URLs are not fetched
            resolved = path if remote or Path(path).is_absolute() else str(source.parent / path)
            items.append(AnnotationItem(id=str(row.get("id") or path), path=resolved, prompt=row.get("prompt") or None))
        if not items:
            raise ValueError(f"{source}: the manifest lists no files")
    else:
        raise ValueError(f"{source}: no such manifest file or folder")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{source}: id {item.id!r} appears twice; ids must be unique for resumable output")
        seen.add(item.id)
    return items


def check_prompts(items: Sequence[AnnotationItem], prompt: str | None) -> None:
    """Without a run-wide prompt every item must carry its own (a manifest's ``prompt`` column)."""
    if prompt:
        return
    missing = [item.id for item in items if not item.prompt]
    if missing:
        shown = ", ".join(repr(name) for name in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} of {len(items)} files have no prompt ({shown}): give --prompt, or a "
                         "'prompt' value on every manifest row")


def json_lines(stream, path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON Lines stream; a line that is not a JSON
    object raises ValueError naming the file and line."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON: {error}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: each line must be a JSON object")
        yield number, row


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    with open(path, newline="", encoding="utf-8") as stream:
        if suffix == ".csv":
            return list(csv.DictReader(stream))
        if suffix in (".jsonl", ".ndjson", ".json"):
            return [row for _, row in json_lines(stream, path)]
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


@dataclass(frozen=True)
class _Row:
    """What a rerun needs to know of a line already written."""

    key: str | None
    prompt: str | None
    error: bool


class ResultWriter:
    """Appends one JSON line per finished file, flushed at once. On open it reads the lines already
    written (``rows``: id -> key, prompt, error) and cuts off a torn last line left by an interrupt."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.rows: dict[str, _Row] = {}
        if self.path.exists():
            self._recover()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stream = open(self.path, "a", encoding="utf-8")

    @property
    def done(self) -> set[str]:
        return set(self.rows)

    def _recover(self) -> None:
        data = self.path.read_bytes()
        valid_end = 0
        position = 0
        for line in data.splitlines(keepends=True):
            position += len(line)
            if not line.endswith(b"\n"):
                break  # torn write: the process died mid-line
            try:
                self._remember(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                break
            valid_end = position
        if valid_end != len(data):
            with open(self.path, "r+b") as stream:
                stream.truncate(valid_end)

    def _remember(self, record: dict[str, Any]) -> None:
        self.rows[str(record["id"])] = _Row(record.get("key"), record.get("prompt"), "error" in record)

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._stream.flush()
        self._remember(record)

    def remove(self, ids: set[str]) -> None:
        """Drops the lines of ``ids``: the file is rewritten to a temporary file beside it, synced, and
        renamed over the original, so a crash leaves either the old file or the new one."""
        if not ids:
            return
        self._stream.close()
        kept = [line for line in self.path.read_bytes().splitlines(keepends=True)
                if str(json.loads(line)["id"]) not in ids]
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        try:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError:
            pass  # not every file system syncs folders
        for name in ids:
            self.rows.pop(name, None)
        self._stream = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def row_key(settings: dict[str, Any], prompt: str) -> str:
    """The fingerprint stored in each line: a hash of the run's settings and the file's prompt."""
    text = json.dumps({"settings": settings, "prompt": prompt}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class SettingsChangedError(ValueError):
    """The output already holds lines for these files made with another prompt or other settings."""


def plan(writer: ResultWriter, items: Sequence[AnnotationItem], prompt: str | None, settings: dict[str, Any],
         retry_errors: bool = False) -> list[AnnotationItem]:
    """The items still to annotate. Files whose line has this run's key are done; with ``retry_errors``
    files whose line is an error are redone (their lines are removed first). Lines without a key (written
    by versions before keys) count as done when their prompt matches. Any other line of a file of this run
    was made with other settings: rather than skip it silently, this raises SettingsChangedError."""
    pending: list[AnnotationItem] = []
    redo: set[str] = set()
    prompt_changes: list[tuple[str, Any, str]] = []
    setting_changes: list[str] = []
    for item in items:
        row = writer.rows.get(item.id)
        if row is None:
            pending.append(item)
            continue
        wanted = item.prompt or prompt or ""
        if row.error and retry_errors:
            redo.add(item.id)
            pending.append(item)
        elif row.key is None:
            if row.prompt is not None and row.prompt != wanted:
                prompt_changes.append((item.id, row.prompt, wanted))
        elif row.key != row_key(settings, wanted):
            if row.prompt != wanted:
                prompt_changes.append((item.id, row.prompt, wanted))
            else:
                setting_changes.append(item.id)
    changed = len(prompt_changes) + len(setting_changes)
    if changed:
        if prompt_changes:
            name, old, new = prompt_changes[0]
            detail = f"the prompt differs (e.g. {name!r}: {old!r} there, {new!r} now)"
        else:
            detail = (f"the generation settings, --long-audio, dtype, quantization or the model differ (e.g. "
                      f"{setting_changes[0]!r})")
        raise SettingsChangedError(
            f"{writer.path} already has lines for {changed} of these {len(items)} files made with other settings: "
            f"{detail}. Lines are keyed on prompt, generation settings and model (their 'key' field), and this run "
            "will not skip them as if done: write to a new --output file, or move this one away.")
    writer.remove(redo)
    return pending


def batched(items: Sequence[AnnotationItem], size: int) -> Iterator[list[AnnotationItem]]:
    if size < 1:
        raise ValueError("batch size must be at least 1")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# Files sorted by length within windows of this many batches: a batch's prompts are left-padded to its
# longest, so files of similar length waste little prefill, while the run still moves through the
# manifest in order, window by window.
GROUPING_WINDOW_BATCHES = 16


def _size(item: AnnotationItem) -> int:
    try:
        return os.path.getsize(item.path)
    except OSError:
        return 0  # reported by its own error line when loaded


def grouped(items: Sequence[AnnotationItem], size: int) -> Iterator[list[AnnotationItem]]:
    """Batches of ``size`` files of similar length: each window of GROUPING_WINDOW_BATCHES batches is
    sorted by file size (which follows duration within a format) before it is cut into batches."""
    window = size * GROUPING_WINDOW_BATCHES
    for start in range(0, len(items), window):
        yield from batched(sorted(items[start : start + window], key=_size), size)


# Batch sizes choose_batch_size() measures, and how much faster per file a larger batch must be to win:
# the decode step of a memory-bound model costs nearly the same for a few rows as for one, while
# larger batches hold more KV cache and pad more.
BATCH_SIZE_CANDIDATES = (1, 2, 4, 8)
BATCH_SIZE_MIN_GAIN = 1.10


def choose_batch_size(model: Any, limit: int | None = None, steps: int = 3,
                      clock: Callable[[], float] = time.perf_counter) -> int:
    """The batch size with the fastest decode per file on this model and machine, from a short
    measurement: ``steps`` decode steps of a 16-token prompt at each of BATCH_SIZE_CANDIDATES (up to
    ``limit``). A larger batch is taken only when it is BATCH_SIZE_MIN_GAIN times faster per file."""
    import numpy as np

    rng = np.random.default_rng(0)
    vocab = min(int(model.config.text_config.vocab_size), 150000)  # ordinary text ids, below the special ones
    best, best_rate = 1, 0.0
    for size in BATCH_SIZE_CANDIDATES:
        if limit is not None and size > max(1, limit):
            break
        session = model.start_session(size)
        session.append(rng.integers(0, vocab, size=(size, 16)))
        session.generate(max_new_tokens=2, eos_token_id=[])  # warm: thread team, per-shape primitives
        started = clock()
        session.generate(max_new_tokens=steps, eos_token_id=[])
        rate = size * steps / (clock() - started)
        if size == 1 or rate >= best_rate * BATCH_SIZE_MIN_GAIN:
            best, best_rate = size, max(rate, best_rate)
    return best


@dataclass
class Annotator:
    """Runs one batch of files through a model; used in-process and on Dask workers alike.

    ``long_audio``: ``"truncate"`` (the model hears the first 30 s, as transformers does; the line says
    ``"truncated": true``) or ``"chunk"`` (consecutive 30 s windows, all heard). ``logprobs``: each line
    also carries ``logprobs``, the log-probability of every answer token under the model (annotators use
    it as confidence), and their mean, ``mean_logprob``."""

    model: Any
    processor: Any
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    long_audio: str = "truncate"
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.long_audio not in ("truncate", "chunk"):
            raise ValueError(f"long_audio must be 'truncate' or 'chunk', got {self.long_audio!r}")

    def settings(self) -> dict[str, Any]:
        """What besides the prompt decides an answer; each line's ``key`` is a hash of this and its prompt."""
        quantization = getattr(self.model, "quantization_config", None)
        return {
            "model": _model_identity(getattr(self.model, "name_or_path", None)),
            "dtype": getattr(self.model, "dtype", None),
            "quantization": quantization,
            "generation": {name: self.generation_kwargs[name] for name in sorted(self.generation_kwargs)},
            "long_audio": self.long_audio,
            "logprobs": self.logprobs,
        }

    def run_batch(self, items: Sequence[AnnotationItem], default_prompt: str | None) -> list[dict[str, Any]]:
        from .audio import load_audio

        settings = self.settings()
        extractor = self.processor.feature_extractor
        rate, window = extractor.sampling_rate, extractor.n_samples
        records: list[dict[str, Any]] = []
        loaded: list[tuple[AnnotationItem, Any, dict[str, Any]]] = []
        for item in items:
            prompt = item.prompt or default_prompt or ""
            try:
                audio = load_audio(item.path, sampling_rate=rate)
            except Exception as error:  # noqa: BLE001 - a bad file is recorded, the run goes on
                records.append(_error_record(item, prompt, error, {}, settings))
                continue
            truncated = self.long_audio == "truncate" and audio.size > window
            facts = {"duration_s": round(audio.size / rate, 3), "truncated": truncated}
            # The feature extractor keeps the first `window` samples of a longer clip; cutting it here gives
            # the same features without its warning (the line says "truncated" instead).
            loaded.append((item, audio[:window] if truncated else audio, facts))
        if len(loaded) > 1:
            try:
                generated = []
                for group in self._padding_groups(loaded):
                    generated += self._generate(group, default_prompt, settings)
                return records + generated
            except KeyboardInterrupt:
                raise
            except Exception:  # noqa: BLE001 - retried one file at a time below, to find the culprit
                pass
        for entry in loaded:
            try:
                records.extend(self._generate([entry], default_prompt, settings))
            except KeyboardInterrupt:
                raise
            except Exception as error:  # noqa: BLE001
                item, _, facts = entry
                records.append(_error_record(item, item.prompt or default_prompt or "", error, facts, settings))
        return records

    def _padding_groups(self, loaded: list[tuple[AnnotationItem, Any, dict[str, Any]]]
                        ) -> list[list[tuple[AnnotationItem, Any, dict[str, Any]]]]:
        """The batch split where the model family's answers depend on the padding a clip gets from longer
        neighbours (Ultravox: the processor's batch_group), so a file's answer never depends on its batch."""
        group_of = getattr(self.processor, "batch_group", None)
        if group_of is None:
            return [loaded]
        groups: dict[Any, list[tuple[AnnotationItem, Any, dict[str, Any]]]] = {}
        for entry in loaded:
            groups.setdefault(group_of(len(entry[1])), []).append(entry)
        return list(groups.values())

    def _generate(self, loaded: list[tuple[AnnotationItem, Any, dict[str, Any]]], default_prompt: str | None,
                  settings: dict[str, Any]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        prompts = [item.prompt or default_prompt or "" for item, _, _ in loaded]
        conversations = [
            [{"role": "user", "content": [{"type": "audio", "audio": audio}, {"type": "text", "text": prompt}]}]
            for (item, audio, _), prompt in zip(loaded, prompts)
        ]
        inputs = self.processor.apply_chat_template(
            conversations, add_generation_prompt=True, tokenize=True, return_dict=True, padding=True,
            sampling_rate=16000, long_audio=self.long_audio,
        )
        logprobs = None
        if self.logprobs:
            output = self.model.generate(**inputs, **self.generation_kwargs, return_dict_in_generate=True,
                                         output_logprobs=True)
            sequences, logprobs = output.sequences, output.logprobs
        else:
            sequences = self.model.generate(**inputs, **self.generation_kwargs)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = sequences[:, prompt_length:]
        pad = getattr(self.processor.tokenizer, "pad_token_id", None)
        eos = set(_eos_ids(self.model, self.generation_kwargs))
        seconds = (time.perf_counter() - started) / len(loaded)
        records = []
        for index, ((item, _, facts), prompt, row) in enumerate(zip(loaded, prompts, new_tokens)):
            tokens = row.tolist()
            count = 0
            for token in tokens:
                if token in eos or token == pad:
                    break
                count += 1
            finish_reason = "stop" if any(token in eos for token in tokens) else "length"
            answer = self.processor.decode(row[:count], skip_special_tokens=True)  # the answer up to its end
            record = {"id": item.id, "path": item.path, "prompt": prompt, "answer": answer.strip(),
                      "tokens": count, "finish_reason": finish_reason, **facts, "seconds": round(seconds, 4),
                      "key": row_key(settings, prompt)}
            if logprobs is not None:
                values = [round(float(value), 5) for value in logprobs[index, :count]]
                record["logprobs"] = values
                record["mean_logprob"] = round(sum(values) / len(values), 5) if values else None
            records.append(record)
        return records


def _eos_ids(model: Any, generation: dict[str, Any]) -> list[int]:
    eos = generation.get("eos_token_id")
    if eos is None:
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) or not hasattr(eos, "__iter__") else [int(token) for token in eos]


def _model_identity(path: Any) -> Any:
    """The model in a line's key: its folder (resolved) and a hash of its config files."""
    if path is None:
        return None
    folder = Path(os.fspath(path))
    digest = hashlib.sha256()
    for name in ("config.json", "generation_config.json"):
        try:
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
        except OSError:
            digest.update(name.encode() + b"\0-")
    return {"path": str(folder.resolve()), "config_sha256": digest.hexdigest()[:16]}


def _error_record(item: AnnotationItem, prompt: str, error: BaseException, facts: dict[str, Any],
                  settings: dict[str, Any]) -> dict[str, Any]:
    return {"id": item.id, "path": item.path, "prompt": prompt, "error": f"{type(error).__name__}: {error}",
            **facts, "key": row_key(settings, prompt)}


def annotate(
    annotator: Annotator,
    items: Sequence[AnnotationItem],
    prompt: str | None,
    output: str | os.PathLike,
    batch_size: int | None = 1,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    retry_errors: bool = False,
) -> dict[str, int]:
    """Annotate the ``items`` that ``output`` does not hold yet (see :func:`plan`); returns counts of
    written, failed and skipped files (and the batch size used). ``prompt`` may be None when every item
    has its own. ``batch_size`` None: chosen by :func:`choose_batch_size`. Files go through in batches of
    similar length (:func:`grouped`)."""
    check_prompts(items, prompt)
    with ResultWriter(output) as writer:
        pending = plan(writer, items, prompt, annotator.settings(), retry_errors)
        counts = {"written": 0, "failed": 0, "skipped": len(items) - len(pending)}
        if batch_size is None:
            batch_size = choose_batch_size(annotator.model, limit=len(pending)) if pending else 1
        counts["batch_size"] = batch_size
        bar = _progress_bar(len(pending), progress)
        try:
            for batch in grouped(pending, batch_size):
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
