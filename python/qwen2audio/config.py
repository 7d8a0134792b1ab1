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


class GenerationConfig(_Attributes):
    @classmethod
    def from_json_string(cls, text: str) -> "GenerationConfig":
        return cls(json.loads(_core.parse_generation_config(text)))
