"""Configuration objects with Hugging Face's attribute names (``config.text_config.hidden_size``).

The C++ core parses config.json and applies transformers' defaults; these classes only give the
resolved values attribute access.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import _core, _files

# The C++ core's limit for config.json.
_MAX_CONFIG_JSON_BYTES = 4 << 20


class _Attributes:
    def __init__(self, values: dict[str, Any]):
        for key, value in values.items():
            setattr(self, key, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            key: value.to_dict() if isinstance(value, _Attributes) else value
            for key, value in vars(self).items()
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.to_dict(), indent=2)})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()


class AudioEncoderConfig(_Attributes):
    pass


class TextConfig(_Attributes):
    pass


class Qwen2AudioConfig(_Attributes):
    audio_config: AudioEncoderConfig
    text_config: TextConfig

    @classmethod
    def from_json_string(cls, text: str) -> "Qwen2AudioConfig":
        return cls._from_resolved(json.loads(_core.parse_config(text)))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "Qwen2AudioConfig":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        return cls.from_json_string(_files.read_text(path, _core.ConfigError, max_bytes=_MAX_CONFIG_JSON_BYTES))

    @classmethod
    def _from_resolved(cls, values: dict[str, Any]) -> "Qwen2AudioConfig":
        values = dict(values)
        values["audio_config"] = AudioEncoderConfig(values["audio_config"])
        values["text_config"] = TextConfig(values["text_config"])
        return cls(values)

    @property
    def audio_token_id(self) -> int:
        return self.audio_token_index


# Fields the C++ core parses and checks (cpp/io/config.h); it fills transformers' defaults for them.
_ENGINE_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "do_sample", "temperature", "top_k", "top_p",
                  "repetition_penalty", "max_new_tokens", "max_length")
# Fields only the Python layer acts on, with transformers' defaults (our output_logprobs aside).
_PYTHON_DEFAULTS: dict[str, Any] = {
    "min_new_tokens": None,
    "min_length": 0,
    "num_beams": 1,
    "stop_strings": None,
    "use_cache": True,
    "return_dict_in_generate": False,
    "output_scores": False,
    "output_logits": False,
    "output_logprobs": False,
}
GENERATION_CONFIG = "generation_config.json"


class GenerationConfig(_Attributes):
    """Generation settings with transformers' names and defaults.

    ``GenerationConfig(max_new_tokens=64, do_sample=True, temperature=0.7)`` as in transformers (a dict
    of settings works too); settings not given take transformers' defaults. Passed to ``generate(...,
    generation_config=...)``, its fields act as defaults that keyword arguments override; fields left at
    transformers' defaults take the model's own (its generation_config.json), as transformers does.
    Unknown fields are kept as attributes and ignored by generation.
    """

    def __init__(self, values: dict[str, Any] | None = None, **kwargs: Any):
        if values is not None and not isinstance(values, dict):
            raise TypeError(f"GenerationConfig takes keyword arguments (or one dict), got {type(values).__name__}")
        settings = {**(values or {}), **kwargs}
        resolved: dict[str, Any] = dict(_engine_defaults())
        resolved.update(_PYTHON_DEFAULTS)
        given = {key: value for key, value in settings.items() if key in _ENGINE_FIELDS and value is not None}
        if given:
            try:
                text = json.dumps(given)
            except TypeError:
                raise ValueError(f"GenerationConfig settings must be plain numbers, booleans and lists: {given!r}") \
                    from None
            parsed = json.loads(_core.parse_generation_config(text))
            resolved.update({key: parsed[key] for key in given})
        for key, value in settings.items():
            if key in _ENGINE_FIELDS:
                if value is None and key in ("bos_token_id", "pad_token_id", "max_new_tokens"):
                    resolved[key] = None
            elif key != "transformers_version":
                resolved[key] = value
        super().__init__(resolved)

    @classmethod
    def from_json_string(cls, text: str) -> "GenerationConfig":
        document = json.loads(text)
        if not isinstance(document, dict):
            raise _core.ConfigError("a generation config must be a JSON object")
        _core.parse_generation_config(text)  # the core's checks, with its messages
        return cls(document)

    @classmethod
    def from_pretrained(cls, pretrained_model_name: str | Path, config_file_name: str = GENERATION_CONFIG,
                        **kwargs: Any) -> "GenerationConfig":
        """Reads ``generation_config.json`` from a checkpoint folder (or that file's path), as transformers;
        ``kwargs`` override its fields. Raises :class:`qwen2audio.ConfigError` naming the file when it is
        missing or malformed."""
        _files.refuse_hub_id(pretrained_model_name, _core.ConfigError)
        path = Path(pretrained_model_name)
        if path.is_dir():
            path = path / config_file_name
        if not path.is_file():
            raise _core.ConfigError(f"{path}: no such file (GenerationConfig.from_pretrained reads a checkpoint "
                                    f"folder's {config_file_name})")
        text = _files.read_text(path, _core.ConfigError, max_bytes=_MAX_CONFIG_JSON_BYTES)
        try:
            config = cls.from_json_string(text)
        except (ValueError, json.JSONDecodeError) as error:
            raise _core.ConfigError(f"{path}: {error}") from None
        for key, value in kwargs.items():
            setattr(config, key, value)
        return config

    def save_pretrained(self, save_directory: str | Path, config_file_name: str = GENERATION_CONFIG) -> Path:
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / config_file_name
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target

    @classmethod
    def _for_model(cls, resolved: dict[str, Any], directory: str | Path | None) -> "GenerationConfig":
        """The model's config: the core's resolved fields plus the Python-only ones its file sets."""
        values = dict(resolved)
        path = Path(directory) / GENERATION_CONFIG if directory is not None else None
        if path is not None and path.is_file():
            document = _files.read_json(path, _core.ConfigError, max_bytes=_MAX_CONFIG_JSON_BYTES)
            if isinstance(document, dict):
                values.update({key: value for key, value in document.items() if key in _PYTHON_DEFAULTS})
        return cls(values)


_ENGINE_DEFAULTS: dict[str, Any] | None = None


def _engine_defaults() -> dict[str, Any]:
    global _ENGINE_DEFAULTS
    if _ENGINE_DEFAULTS is None:
        _ENGINE_DEFAULTS = json.loads(_core.parse_generation_config("{}"))
    return _ENGINE_DEFAULTS


def generation_defaults() -> GenerationConfig:
    """transformers' global defaults (``GenerationConfig()``)."""
    return GenerationConfig()
