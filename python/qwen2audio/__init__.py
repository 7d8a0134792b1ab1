"""qwen2audio: a fast, faithful inference engine for Qwen2-Audio with a C++ core."""

import os as _os

# Developers building out of tree (one build folder per task) point this at the folder holding
# their _core extension; an installed package never needs it.
_core_dir = _os.environ.get("QWEN2AUDIO_CORE_DIR")
if _core_dir:
    __path__.insert(0, _os.path.abspath(_core_dir))

from . import _core  # noqa: E402
from ._core import CheckpointError, ConfigError  # noqa: E402
from .checkpoint import Checkpoint  # noqa: E402
from .config import GenerationConfig, Qwen2AudioConfig  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "GenerationConfig",
    "Qwen2AudioConfig",
]
