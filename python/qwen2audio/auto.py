"""transformers' Auto classes for the model families this package runs.

``AutoProcessor.from_pretrained(folder)`` and ``AutoModelForCausalLM.from_pretrained(folder)`` (also
``AutoModel``, ``AutoModelForSeq2SeqLM``, ``AutoTokenizer``, ``AutoFeatureExtractor``, ``AutoConfig``) read
the folder's config.json and give this package's class for its ``model_type``: ``qwen2_audio`` (Qwen2-Audio)
or ``ultravox`` (Ultravox v0.5; model, processor and tokenizer); any other model type is a ValueError
naming it. Keyword arguments go to the class's own ``from_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from . import _core, _files

__all__ = ["AutoConfig", "AutoFeatureExtractor", "AutoModel", "AutoModelForCausalLM", "AutoModelForSeq2SeqLM",
           "AutoProcessor", "AutoTokenizer"]

SUPPORTED_MODEL_TYPE = "qwen2_audio"
ULTRAVOX_MODEL_TYPE = "ultravox"
SUPPORTED_MODEL_TYPES = (SUPPORTED_MODEL_TYPE, ULTRAVOX_MODEL_TYPE)
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
            if isinstance(document, dict) and document.get("processor_class") == "Qwen2AudioProcessor":
                return SUPPORTED_MODEL_TYPE
            if isinstance(document, dict) and document.get("processor_class") == "UltravoxProcessor":
                return ULTRAVOX_MODEL_TYPE
    raise ValueError(f"{folder} has no config.json: cannot tell which {what} class it needs")


def _resolve(pretrained_model_name_or_path: Union[str, os.PathLike], what: str) -> str:
    folder = _files.local_folder(pretrained_model_name_or_path, what="a checkpoint folder")
    model_type = _model_type(folder, what)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"{folder} holds a model of model_type {model_type!r}; qwen2audio runs "
                         f"{SUPPORTED_MODEL_TYPE!r} (Qwen2-Audio) and {ULTRAVOX_MODEL_TYPE!r} (Ultravox) checkpoints")
    return model_type


class _AutoClass:
    _what = "model"

    def __init__(self, *args: Any, **kwargs: Any):
        raise TypeError(f"{type(self).__name__} is not instantiated: use {type(self).__name__}.from_pretrained(folder)")

    @classmethod
    def _target(cls) -> Any:
        raise NotImplementedError

    @classmethod
    def _ultravox_target(cls) -> Any:
        raise ValueError(f"Ultravox checkpoints have no separate {cls._what} class here; use AutoModel or "
                         "AutoProcessor")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *args: Any, **kwargs: Any) -> Any:
        model_type = _resolve(pretrained_model_name_or_path, cls._what)
        target = cls._ultravox_target() if model_type == ULTRAVOX_MODEL_TYPE else cls._target()
        return target.from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class AutoModelForCausalLM(_AutoClass):
    """``from_pretrained(folder, ...)``: :class:`Qwen2AudioForConditionalGeneration` for a Qwen2-Audio folder."""

    @classmethod
    def _target(cls) -> Any:
        from .modeling import Qwen2AudioForConditionalGeneration

        return Qwen2AudioForConditionalGeneration

    @classmethod
    def _ultravox_target(cls) -> Any:
        from .ultravox import UltravoxForConditionalGeneration

        return UltravoxForConditionalGeneration


class AutoModel(AutoModelForCausalLM):
    """As :class:`AutoModelForCausalLM`."""


class AutoModelForSeq2SeqLM(AutoModelForCausalLM):
    """As :class:`AutoModelForCausalLM` (transformers registers Qwen2-Audio under several Auto classes)."""


class AutoProcessor(_AutoClass):
    """``from_pretrained(folder, ...)``: :class:`Qwen2AudioProcessor` for a Qwen2-Audio folder."""

    _what = "processor"

    @classmethod
    def _target(cls) -> Any:
        from .processor import Qwen2AudioProcessor

        return Qwen2AudioProcessor

    @classmethod
    def _ultravox_target(cls) -> Any:
        from .ultravox import UltravoxProcessor

        return UltravoxProcessor


class AutoTokenizer(_AutoClass):
    """``from_pretrained(folder, ...)``: :class:`Qwen2Tokenizer` for a Qwen2-Audio folder."""

    _what = "tokenizer"

    @classmethod
    def _target(cls) -> Any:
        from .tokenizer import Qwen2Tokenizer

        return Qwen2Tokenizer

    @classmethod
    def _ultravox_target(cls) -> Any:
        # The tokenizer reads any byte-level BPE tokenizer.json (Llama 3's included).
        return cls._target()


class AutoFeatureExtractor(_AutoClass):
    """``from_pretrained(folder, ...)``: :class:`WhisperFeatureExtractor` for a Qwen2-Audio folder."""

    _what = "feature extractor"

    @classmethod
    def _target(cls) -> Any:
        from .audio import WhisperFeatureExtractor

        return WhisperFeatureExtractor


class AutoConfig(_AutoClass):
    """``from_pretrained(folder)``: :class:`Qwen2AudioConfig` for a Qwen2-Audio folder."""

    _what = "config"

    @classmethod
    def _target(cls) -> Any:
        from .config import Qwen2AudioConfig

        return Qwen2AudioConfig
