"""Inference for the evaluation, on the annotate machinery (resumable JSONL, ``--shard I/N``, batches of
similar length, Dask, progress bar), prompted and decoded as the official scripts do.

Base-model tasks: the text is ``<|audio_bos|><|AUDIO|><|audio_eos|>`` + the record's prompt, without a
chat template (Qwen2-Audio only: another family is refused before its model loads). AIR-Bench: the model's
own chat template (Qwen2-Audio-Instruct's, Ultravox's Llama 3.2 one) with the system prompt "You are a
helpful assistant." and the audio then the instruction in the user turn. Greedy, 256 new tokens at most, at
least 1, left-padded batches; the response is the decoded text with special tokens skipped and
nothing stripped (the scorers strip what the official ones strip).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from ..annotate import AnnotationItem, Annotator, _eos_ids, annotate, row_key, select_shard
from . import tasks


@dataclass
class EvalAnnotator(Annotator):
    chat: bool = False

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "eval_prompting": "chat" if self.chat else "base",
                "system": tasks.SYSTEM_PROMPT if self.chat else None}

    def _generate(self, loaded: list[tuple[AnnotationItem, Any, dict[str, Any]]], default_prompt: str | None,
                  settings: dict[str, Any]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        prompts = [item.prompt or default_prompt or "" for item, _, _ in loaded]
        audios = [audio for _, audio, _ in loaded]
        rate = self.processor.feature_extractor.sampling_rate
        if self.chat:
            conversations = [[{"role": "system", "content": tasks.SYSTEM_PROMPT},
                              {"role": "user", "content": [{"type": "audio", "audio": audio},
                                                           {"type": "text", "text": prompt}]}]
                             for audio, prompt in zip(audios, prompts)]
            inputs = self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True, padding=True, sampling_rate=rate,
                                                        long_audio=self.long_audio)
        else:
            from ..modeling import Qwen2AudioForConditionalGeneration

            if not isinstance(self.model, Qwen2AudioForConditionalGeneration):
                raise ValueError(f"the base-model tasks use Qwen2-Audio-7B's prompt; {type(self.model).__name__} "
                                 "runs the AIR-Bench tasks (its chat template)")
            inputs = self.processor(text=prompts, audio=audios, sampling_rate=rate, padding=True,
                                    long_audio=self.long_audio)
        sequences = self.model.generate(**inputs, **self.generation_kwargs)
        new_tokens = sequences[:, inputs["input_ids"].shape[1]:]
        pad = getattr(self.processor.tokenizer, "pad_token_id", None)
        eos = set(_eos_ids(self.model, self.generation_kwargs))
        seconds = (time.perf_counter() - started) / len(loaded)
        records = []
        for (item, _, facts), prompt, row in zip(loaded, prompts, new_tokens):
            tokens = row.tolist()
            count = next((i for i, token in enumerate(tokens) if token in eos or token == pad), len(tokens))
            response = self.processor.batch_decode([tokens[:count]], skip_special_tokens=True,
                                                   clean_up_tokenization_spaces=False)[0]
            records.append({"id": item.id, "path": item.path, "prompt": prompt, "response": response,
                            "tokens": count, "finish_reason": "stop" if count < len(tokens) else "length",
                            **facts, "seconds": round(seconds, 4), "key": row_key(settings, prompt)})
        return records


def file_stem(data: tasks.Dataset, shard: tuple[int, int] | None) -> str:
    return data.key + (f".shard-{shard[0]}-of-{shard[1]}" if shard else "")


def run_dataset(model: Any, processor: Any, data: tasks.Dataset, records: list[dict[str, Any]], output_dir: Path,
                generation: dict[str, Any], batch_size: int | None, shard: tuple[int, int] | None,
                long_audio: str = "truncate", progress: bool = True, retry_errors: bool = False,
                dask: tuple[Any, str, dict[str, Any]] | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, int], Path]:
    """Generates the responses of ``records`` (this shard's) into ``{output_dir}/{stem}.generations.jsonl``
    (resumable), then writes ``{stem}.responses.jsonl``: each record of the dataset's input with its
    ``response``, in input order, in the official result shape (AIR-Bench: its result-file lines).
    Returns the records with responses, the counts, and the responses file. ``dask``: (client, model folder,
    model kwargs) to generate on a Dask cluster instead of ``model``/``processor`` (None then)."""
    items = [AnnotationItem(id=record["id"], path=record["audio_path"], prompt=record["model_prompt"])
             for record in records]
    if shard:
        items = select_shard(items, *shard)
    wanted = {item.id for item in items}
    stem = file_stem(data, shard)
    generations = output_dir / f"{stem}.generations.jsonl"
    if dask is not None:
        from ..distributed import annotate_distributed

        client, model_dir, model_kwargs = dask
        counts = annotate_distributed(client, model_dir, items, None, generations, batch_size=batch_size or 4,
                                      model_kwargs=model_kwargs, generation_kwargs=dict(generation),
                                      progress=progress, long_audio=long_audio, retry_errors=retry_errors,
                                      annotator_factory=partial(EvalAnnotator, chat=data.chat_template))
    else:
        annotator = EvalAnnotator(model, processor, dict(generation), long_audio, chat=data.chat_template)
        counts = annotate(annotator, items, None, generations, batch_size=batch_size, progress=progress,
                          retry_errors=retry_errors)
    lines: dict[str, dict[str, Any]] = {}
    for line in Path(generations).read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by an interrupt; annotate's writer cuts it on the next run
        lines[str(entry["id"])] = entry
    answered = []
    errors = 0
    responses_path = output_dir / f"{stem}.responses.jsonl"
    with open(responses_path, "w", encoding="utf-8") as out:
        for record in records:
            if record["id"] not in wanted:
                continue
            entry = lines.get(record["id"])
            if entry is None or "response" not in entry:
                errors += entry is not None
                continue
            if data.task in (tasks.AIRBENCH_FOUNDATION, tasks.AIRBENCH_CHAT):
                line = tasks.airbench_result(record, entry["response"], chat=data.task == tasks.AIRBENCH_CHAT)
            else:
                line = {key: value for key, value in record.items()
                        if not key.startswith("_") and key not in ("audio_path", "model_prompt")}
                line["response"] = entry["response"]
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            answered.append({**record, **line})
    counts["errors"] = errors
    counts["missing"] = len(wanted) - len(answered) - errors
    return answered, counts, responses_path


def load_records(data: tasks.Dataset, data_dir: Path | None, audio_root: Path | None, airbench_root: Path | None,
                 jsonl: Path | None = None) -> list[dict[str, Any]]:
    if data.task in (tasks.AIRBENCH_FOUNDATION, tasks.AIRBENCH_CHAT):
        if airbench_root is None:
            raise ValueError(f"{data.key} needs --airbench-root (the folder with "
                             f"{'Chat' if data.task == tasks.AIRBENCH_CHAT else 'Foundation'}_meta.json and the "
                             "{task_name}_{dataset_name}/ audio folders)")
        items = tasks.read_airbench(airbench_root, chat=data.task == tasks.AIRBENCH_CHAT)
        return items
    path = jsonl if jsonl is not None else (data_dir or Path(".")) / str(data.path)
    return tasks.read_official_jsonl(path, audio_root)


def missing_audio(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if not Path(record["audio_path"]).exists()]
