"""qwen2audio: a fast, faithful inference engine for Qwen2-Audio with a C++ core."""

import importlib as _importlib
import os as _os

# Developers building out of tree (one build folder per task) point this at the folder holding
# their _core extension; an installed package never needs it.
_core_dir = _os.environ.get("QWEN2AUDIO_CORE_DIR")
if _core_dir:
    __path__.insert(0, _os.path.abspath(_core_dir))

from . import _core  # noqa: E402
from ._core import CheckpointError, ConfigError, DeviceError  # noqa: E402
from .checkpoint import Checkpoint  # noqa: E402
from .config import GenerationConfig, Qwen2AudioConfig  # noqa: E402

__version__ = "0.1.0"

# Public names from the heavier modules load on first use, so `import qwen2audio` stays quick.
_LAZY = {
    "load_audio": "audio",
    "split_audio": "audio",
    "AudioTruncatedWarning": "audio",
    "MissingSamplingRateWarning": "audio",
    "WhisperFeatureExtractor": "audio",
    "Qwen2Tokenizer": "tokenizer",
    "Qwen2AudioProcessor": "processor",
    "BatchFeature": "processor",
    "AudioCausalLM": "modeling",
    "Qwen2AudioForConditionalGeneration": "modeling",
    "GenerateDecoderOnlyOutput": "modeling",
    "UltravoxForConditionalGeneration": "ultravox",
    "UltravoxProcessor": "ultravox",
    "TextStreamer": "streamers",
    "TextIteratorStreamer": "streamers",
    "BaseStreamer": "streamers",
    # transformers' Auto classes, resolved from config.json's model_type
    "AutoConfig": "auto",
    "AutoFeatureExtractor": "auto",
    "AutoModel": "auto",
    "AutoModelForCausalLM": "auto",
    "AutoModelForSeq2SeqLM": "auto",
    "AutoProcessor": "auto",
    "AutoTokenizer": "auto",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qwen2audio' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Checkpoint", "CheckpointError", "ConfigError", "DeviceError", "GenerationConfig", "Qwen2AudioConfig", *_LAZY]
