"""The evaluation datasets: the official scripts' registry (dataset key -> task, JSONL path under the
data folder, ASR language) and readers for their inputs (the JSONL records, AIR-Bench's
Foundation_meta.json / Chat_meta.json with its audio layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..annotate import json_lines

ASR, ST, SER, VSC, AIRBENCH_FOUNDATION, AIRBENCH_CHAT = "asr", "st", "ser", "vsc", "airbench_foundation", "airbench_chat"
TASK_TITLES = {
    ASR: "ASR (WER %, lower is better)",
    ST: "Speech translation (BLEU, higher is better)",
    SER: "Speech emotion recognition (accuracy)",
    VSC: "Vocal sound classification (accuracy)",
    AIRBENCH_FOUNDATION: "AIR-Bench foundation (accuracy)",
    AIRBENCH_CHAT: "AIR-Bench chat",
}

# The base model's audio prompt, prepended to each record's prompt by the official scripts.
AUDIO_PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>"
# AIR-Bench foundation's instruction (Inference_Foundation.py), then the question and the choices.
AIRBENCH_INSTRUCTION = ("Choose the most suitable answer from options A, B, C, and D to respond the question in next "
                        "line, you may only choose A or B or C or D.")
# The Instruct model's system prompt, as the official chat evaluation passes it.
SYSTEM_PROMPT = "You are a helpful assistant."
# Decoding of every official script.
GENERATION = {"max_new_tokens": 256, "min_new_tokens": 1, "do_sample": False}


@dataclass(frozen=True)
class Dataset:
    key: str
    task: str
    path: str | None  # under the data folder (upstream's ds_collections); AIR-Bench: under its root
    language: str | None = None  # ASR only: decides the normalizers

    @property
    def chat_template(self) -> bool:
        return self.task in (AIRBENCH_FOUNDATION, AIRBENCH_CHAT)


DATASETS: dict[str, Dataset] = {d.key: d for d in [
    Dataset("librispeech", ASR, "asr/librispeech_eval.jsonl", "en"),
    Dataset("aishell2", ASR, "asr/aishell2_eval.jsonl", "zh"),
    Dataset("cv15_en", ASR, "asr/cv15_asr_en_eval.jsonl", "en"),
    Dataset("cv15_zh", ASR, "asr/cv15_asr_zh_eval.jsonl", "zh"),
    Dataset("cv15_yue", ASR, "asr/cv15_asr_yue_eval.jsonl", "yue"),
    Dataset("cv15_fr", ASR, "asr/cv15_asr_fr_eval.jsonl", "fr"),
    Dataset("fluers_zh", ASR, "asr/fleurs_asr_zh_eval.jsonl", "zh"),
    Dataset("covost2", ST, "st/covost2_eval.jsonl"),
    Dataset("meld", SER, "ser/meld_eval.jsonl"),
    Dataset("vocalsound", VSC, "vsc/vocalsound_eval.jsonl"),
    Dataset("airbench_foundation", AIRBENCH_FOUNDATION, "Foundation_meta.json"),
    Dataset("airbench_chat", AIRBENCH_CHAT, "Chat_meta.json"),
]}
# upstream spells FLEURS "fluers"; both spellings are accepted
ALIASES = {"fleurs_zh": "fluers_zh"}


def check_model_family(model_type: str, chosen: list[Dataset]) -> None:
    """The base-model tasks are prompted as upstream prompts Qwen2-Audio-7B (its audio tags and task tokens such as
    ``<|en|>``, no chat template), which mean nothing to another family; AIR-Bench goes through the model's own
    chat template, so any family runs it."""
    if model_type == "qwen2_audio":
        return
    base = [data.key for data in chosen if not data.chat_template]
    if base:
        raise ValueError(f"{', '.join(base)}: prompted with Qwen2-Audio-7B's base-model prompt "
                         f"({AUDIO_PROMPT} + the record's prompt), which a {model_type!r} model was not trained on; "
                         "this model runs airbench_foundation and airbench_chat (its own chat template), and any "
                         "engine's responses can be scored with --score-only")


def dataset(name: str) -> Dataset:
    key = ALIASES.get(name, name)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted([*DATASETS, *ALIASES]))}")
    return DATASETS[key]


def custom_asr_dataset(name: str, language: str) -> Dataset:
    """An ASR dataset outside the registry, scored with the normalizers of ``language``."""
    return Dataset(name, ASR, None, language)


def read_jsonl(path: str | Path, allow_empty: bool = False) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    records = []
    with open(path, encoding="utf-8") as stream:
        for number, record in json_lines(stream, path):
            record["_line"] = number
            records.append(record)
    if not records and not allow_empty:
        raise ValueError(f"{path}: no records")
    return records


def require_fields(records: list[dict[str, Any]], fields: tuple[str, ...], path: str | Path) -> None:
    for record in records:
        missing = [name for name in fields if name not in record]
        if missing:
            raise ValueError(f"{path}:{record.get('_line', '?')}: missing field(s) {', '.join(missing)} "
                             f"(the official format has {', '.join(fields)})")
        for name in fields:
            if name != "uniq_id" and record[name] is not None and not isinstance(record[name], str):
                raise ValueError(f"{path}:{record.get('_line', '?')}: field {name!r} must be a string, "
                                 f"got {type(record[name]).__name__}")


def assign_ids(records: list[dict[str, Any]], path: str | Path) -> None:
    """Each record's ``id``: its own when every record has a unique one, else its audio path when
    those are unique, else its line number (resumable runs key their lines on it)."""
    for field in ("id", "audio"):
        values = [record.get(field) for record in records]
        if all(values) and len(set(map(str, values))) == len(values):
            for record in records:
                record["id"] = str(record[field])
            return
    for record in records:
        record["id"] = f"line-{record['_line']}"


def read_official_jsonl(path: str | Path, audio_root: str | Path | None = None) -> list[dict[str, Any]]:
    """Records of the official scripts' JSONL (``audio``, ``prompt``, ``gt``, ``source``); ``audio_path``
    is ``audio`` resolved against ``audio_root`` (default: as written, relative to the working folder,
    as upstream opens it)."""
    records = read_jsonl(path)
    require_fields(records, ("audio", "prompt", "gt", "source"), path)
    assign_ids(records, path)
    for record in records:
        audio = Path(record["audio"])
        record["audio_path"] = str(audio if audio.is_absolute() or audio_root is None else Path(audio_root) / audio)
        record["model_prompt"] = AUDIO_PROMPT + record["prompt"]
    return records


def airbench_instruction(item: dict[str, Any]) -> str:
    # absent choices print as "None", exactly as AIR-Bench's f-string writes them
    choices = (f"A. {item['choice_a']}\nB. {item['choice_b']}\nC. {item.get('choice_c', None)}\n"
               f"D. {item.get('choice_d', None)}")
    return AIRBENCH_INSTRUCTION + "\n" + item["question"] + "\n" + choices


def airbench_audio(root: str | Path, item: dict[str, Any]) -> str:
    folder = f"{item['task_name']}_{item['dataset_name']}"
    path = f"{root}/{folder}/{item['path']}"
    if item["task_name"] == "Audio_Grounding":
        path = path[:-3] + "flac"  # its meta names .wav files that ship as .flac
    return path


def read_airbench_meta(path: str | Path, chat: bool = False) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (AIR-Bench's {'Chat' if chat else 'Foundation'}_meta.json)")
    try:
        with open(path, encoding="utf-8") as stream:
            items = json.load(stream)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path}: expected a JSON list of question objects")
    fields = ("path", "question", "answer_gt", "task_name", "dataset_name", "uniq_id")
    fields += ("meta_info",) if chat else ("choice_a", "choice_b")
    for number, item in enumerate(items, start=1):
        item["_line"] = number
    require_fields(items, fields, path)
    ids = [str(item["uniq_id"]) for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: uniq_id values repeat")
    return items


def read_airbench(root: str | Path, chat: bool = False) -> list[dict[str, Any]]:
    """AIR-Bench's questions with ``id`` (uniq_id), ``audio_path`` ({root}/{task_name}_{dataset_name}/{path})
    and the model prompt (foundation: the instruction, question and choices; chat: the question)."""
    items = read_airbench_meta(Path(root) / ("Chat_meta.json" if chat else "Foundation_meta.json"), chat)
    for item in items:
        item["id"] = str(item["uniq_id"])
        item["audio_path"] = airbench_audio(root, item)
        item["model_prompt"] = item["question"] if chat else airbench_instruction(item)
    return items


def airbench_result(item: dict[str, Any], response: str, chat: bool = False) -> dict[str, Any]:
    """A line of AIR-Bench's result file (Foundation_result_modelx.jsonl / Chat_result_modelx.jsonl)."""
    if chat:
        names = ("meta_info", "question", "answer_gt", "path", "task_name", "dataset_name")
        return {**{name: item[name] for name in names}, "response": response, "uniq_id": item["uniq_id"]}
    return {"path": item["path"], "question": item["question"], "choice_a": item["choice_a"],
            "choice_b": item["choice_b"], "choice_c": item.get("choice_c"), "choice_d": item.get("choice_d"),
            "answer_gt": item["answer_gt"], "task_name": item["task_name"], "dataset_name": item["dataset_name"],
            "response": response, "uniq_id": item["uniq_id"]}


# The official data files' names, for recognising a responses file's dataset without --dataset.
_FILE_NAMES = {Path(d.path).name: d.key for d in DATASETS.values() if d.path and d.path.endswith(".jsonl")}


def guess_dataset(path: str | Path, records: list[dict[str, Any]]) -> Dataset:
    """The dataset of a responses file: AIR-Bench by its fields, else by the official file name
    (e.g. librispeech_eval.jsonl, or NAME.responses.jsonl as `qwen2audio eval` writes), else by the sources."""
    first = records[0]
    if "meta_info" in first and "task_name" in first:
        return DATASETS["airbench_chat"]
    if "task_name" in first or "answer_gt" in first or "uniq_id" in first:
        return DATASETS["airbench_foundation"]
    name = Path(path).name
    if name in _FILE_NAMES:
        return DATASETS[_FILE_NAMES[name]]
    stem = name.split(".")[0]
    if ALIASES.get(stem, stem) in DATASETS:
        return DATASETS[ALIASES.get(stem, stem)]
    sources = {str(record.get("source", "")) for record in records}
    guesses = {_dataset_of_source(source) for source in sources}
    if len(guesses) == 1 and None not in guesses:
        return DATASETS[guesses.pop()]
    raise ValueError(f"{path}: cannot tell which dataset this is (sources: {', '.join(sorted(sources))}); "
                     "give --dataset (one of " + ", ".join(sorted(DATASETS)) + "), or --language for another ASR set")


def _dataset_of_source(source: str) -> str | None:
    source = source.lower()
    for prefix, key in (("librispeech", "librispeech"), ("aishell2", "aishell2"), ("aishell_2", "aishell2"),
                        ("cv15_en", "cv15_en"), ("cv15_zh", "cv15_zh"), ("cv15_yue", "cv15_yue"),
                        ("cv15_fr", "cv15_fr"), ("fleurs_zh", "fluers_zh"), ("fluers_zh", "fluers_zh"),
                        ("covost2", "covost2"), ("meld", "meld"), ("vocalsound", "vocalsound")):
        if source.startswith(prefix):
            return key
    return None
