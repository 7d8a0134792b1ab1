"""transformers' Auto classes for the model families this package runs.

``AutoProcessor.from_pretrained(folder)`` and ``AutoModelForCausalLM.from_pretrained(folder)`` (also
``AutoModel``, ``AutoModelForSeq2SeqLM``, ``AutoTokenizer``, ``AutoFeatureExtractor``, ``AutoConfig``) read
the folder's config.json and give this package's class for its ``model_type``: ``qwen2_audio`` (Qwen2-Audio)
or ``ultravox`` (Ultravox v0.5; model, processor and tokenizer); any other model type is a ValueError
naming it. Keyword arguments go to the class's own ``from_pretrained``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Union

from . import _core, _files

__all__ = ["AutoConfig", "AutoFeatureExtractor", "AutoModel", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM",
           "AutoProcessor", "AutoTokenizer"]

# Every model family this package runs, by config.json's model_type: its display name, the processor_class a
# processor-only folder names, and its class for each Auto kind ("module:Class" in this package; a kind it lacks is
# absent). Adding a family is one entry here.
FAMILIES: dict[str, dict[str, str]] = {
    "qwen2_audio": {
        "name": "Qwen2-Audio",
        "processor_class": "Qwen2AudioProcessor",
        "model": "modeling:Qwen2AudioForConditionalGeneration",
        "processor": "processor:Qwen2AudioProcessor",
        "tokenizer": "tokenizer:Qwen2Tokenizer",
        "feature extractor": "audio:WhisperFeatureExtractor",
        "config": "config:Qwen2AudioConfig",
    },
    "ultravox": {
        "name": "Ultravox",
        "processor_class": "UltravoxProcessor",
        "model": "ultravox:UltravoxForConditionalGeneration",
        "processor": "ultravox:UltravoxProcessor",
        # The tokenizer reads any byte-level BPE tokenizer.json (Llama 3's included).
        "tokenizer": "tokenizer:Qwen2Tokenizer",
    },
}
# The files that name a folder's architecture when config.json is absent (a processor-only folder).
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def _model_type(folder: Path, what: str) -> str:
    config = folder / "config.json"
    if config.is_file():
        document = _files.read_json(config, _core.ConfigError, max_bytes=4 << 20)
        if not isinstance(document, dict):
            raise _core.ConfigError(f"{config}: expected a JSON object")
        model_type = document.get("model_type")
        if not isinstance(model_type, str):
            raise ValueError(f"{config} has no model_type: cannot tell which {what} class it needs")
        return model_type
    for name in _PROCESSOR_FILES:
        path = folder / name
        if path.is_file():
            document = _files.read_json(path, _core.ConfigError)
            if isinstance(document, dict):
                for model_type, family in FAMILIES.items():
                    if document.get("processor_class") == family["processor_class"]:
                        return model_type
    raise ValueError(f"{folder} has no config.json: cannot tell which {what} class it needs")


def _resolve(pretrained_model_name_or_path: Union[str, os.PathLike], what: str) -> str:
    folder = _files.local_folder(pretrained_model_name_or_path, what="a checkpoint folder")
    model_type = _model_type(folder, what)
    if model_type not in FAMILIES:
        runs = " and ".join(f"{key!r} ({family['name']})" for key, family in FAMILIES.items())
        raise ValueError(f"{folder} holds a model of model_type {model_type!r}; qwen2audio runs {runs} checkpoints")
    return model_type


def family_class(model_type: str, kind: str) -> Any:
    """The class of ``kind`` ("model", "processor", "tokenizer", "feature extractor", "config") for a family."""
    family = FAMILIES[model_type]
    if kind not in family:
        raise ValueError(f"{family['name']} checkpoints have no separate {kind} class here; use AutoModel or "
                         "AutoProcessor")
    module, name = family[kind].split(":")
    return getattr(importlib.import_module(f".{module}", __package__), name)


class _AutoClass:
    _what = "model"

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(folder)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *args: Any, **kwargs: Any) -> Any:
        target = family_class(_resolve(pretrained_model_name_or_path, cls._what), cls._what)
        return target.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class AutoModelForCausalLM(_AutoClass):
    """``from_pretrained(folder, ...)``: the folder's model class (:class:`Qwen2AudioForConditionalGeneration`,
    :class:`UltravoxForConditionalGeneration`)."""


class AutoModel(AutoModelForCausalLM):
    """As :class:`AutoModelForCausalLM`."""


class AutoModelForSeq2SeqLM(AutoModelForCausalLM):
    """As :class:`AutoModelForCausalLM` (transformers registers Qwen2-Audio under several Auto classes)."""


class AutoProcessor(_AutoClass):
    """``from_pretrained(folder, ...)``: the folder's processor (:class:`Qwen2AudioProcessor`,
    :class:`UltravoxProcessor`)."""

    _what = "processor"


class AutoTokenizer(_AutoClass):
    """``from_pretrained(folder, ...)``: :class:`Qwen2Tokenizer` (it reads any byte-level BPE tokenizer.json:
    Qwen2's, Llama 3's)."""

    _what = "tokenizer"


class AutoFeatureExtractor(_AutoClass):
    """``from_pretrained(folder, ...)``: :class:`WhisperFeatureExtractor` for a Qwen2-Audio folder."""

    _what = "feature extractor"


class AutoConfig(_AutoClass):
    """``from_pretrained(folder)``: :class:`Qwen2AudioConfig` for a Qwen2-Audio folder."""

    _what = "config"
