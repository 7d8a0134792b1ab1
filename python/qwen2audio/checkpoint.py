"""Inspection of a Hugging Face checkpoint folder (Qwen2-Audio or Ultravox), without loading the model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from . import _core
from .config import GenerationConfig, Qwen2AudioConfig


class Checkpoint:
    """A checkpoint folder (``config.json`` + ``model.safetensors`` or a sharded index), memory-mapped.

    Tensors come back as zero-copy, read-only NumPy views into the mapping. BF16 has no NumPy dtype:
    its views are ``uint16`` holding the raw bits; :meth:`to_float32` converts.
    """

    def __init__(self, path: str | os.PathLike):
        self._core = _core.Checkpoint(Path(path))
        self.config = (
            Qwen2AudioConfig._from_resolved(json.loads(self._core.config_json)) if self._core.has_config else None
        )
        self.generation_config = (
            GenerationConfig(json.loads(self._core.generation_config_json)) if self._core.has_config or
            self._core.has_generation_config else None
        )

    @property
    def model_type(self) -> str:
        """config.json's ``model_type`` ("qwen2_audio", "ultravox"), empty without a config.json."""
        return self._core.model_type

    @property
    def directory(self) -> str:
        return self._core.directory

    @property
    def files(self) -> list[str]:
        return self._core.files

    @property
    def total_bytes(self) -> int:
        return self._core.total_bytes

    def tensor_names(self) -> list[str]:
        return self._core.tensor_names()

    def keys(self) -> list[str]:
        return self.tensor_names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensor_names())

    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._core

    def dtype(self, name: str) -> str:
        """The safetensors dtype name, e.g. ``"BF16"``."""
        return self._core.dtype(name)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._core.shape(name))

    def file_of(self, name: str) -> str:
        return self._core.file_of(name)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._core.view(name)

    def view(self, name: str) -> np.ndarray:
        return self._core.view(name)

    def to_float32(self, name: str) -> np.ndarray:
        """A float32 copy of the tensor, whatever its stored dtype."""
        raw = self._core.view(name)
        if self.dtype(name) == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return raw.astype(np.float32)

    def check_weights(self) -> dict[str, list[str]]:
        """Missing, unexpected, wrong-shape and unsupported-dtype tensors against ``config.json`` (the tensors its
        model family, Qwen2-Audio or Ultravox, needs)."""
        return self._core.check_weights()

    def require_weights(self) -> None:
        """Raise :class:`CheckpointError` listing every mismatch between the tensors and the config."""
        self._core.require_weights()

    def __repr__(self) -> str:
        return f"Checkpoint({self.directory!r}, {len(self)} tensors, {self.total_bytes / 2**20:.1f} MiB)"
