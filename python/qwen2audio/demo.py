"""The built-in demo checkpoint: a deterministic tiny random Qwen2-Audio in exact HF layout.

Real weights cannot be downloaded on every machine, yet the main job must run end to end; this
gives it a model with the real architecture, names and tokenizer vocabulary size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .safetensors_writer import float32_to_bf16_bits, save_file

DEMO_CONFIG = {
    "architectures": ["Qwen2AudioForConditionalGeneration"],
    "model_type": "qwen2_audio",
    "audio_token_index": 151646,
    "ignore_index": -100,
    "vocab_size": 151649,
    "audio_config": {
        "model_type": "qwen2_audio_encoder",
        "num_mel_bins": 128,
        "max_source_positions": 1500,
        "d_model": 64,
        "encoder_layers": 2,
        "encoder_attention_heads": 4,
        "encoder_ffn_dim": 128,
    },
    "text_config": {
        "model_type": "qwen2",
        "vocab_size": 151649,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "torch_dtype": "bfloat16",
}

DEMO_GENERATION_CONFIG = {
    "bos_token_id": 151643,
    "eos_token_id": [151645, 151643],
    "pad_token_id": 151643,
    "do_sample": False,
}


def default_demo_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "qwen2audio" / "demo-tiny"


def write_random_checkpoint(directory: Path, config: dict, seed: int = 0, bf16: bool = True) -> Path:
    """Random weights for every tensor ``config`` implies, with HF's names and shapes."""
    from . import _core

    directory.mkdir(parents=True, exist_ok=True)
    config_text = json.dumps(config, indent=1)
    expected = _core.expected_tensors(config_text)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected:
        if name.endswith("norm.weight") or name.endswith("layer_norm.weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            values = 0.05 * rng.standard_normal(shape)
        tensors[name] = values.astype(np.float32)
    if bf16:
        stored = {name: float32_to_bf16_bits(values) for name, values in tensors.items()}
        save_file(stored, directory / "model.safetensors", {"format": "pt"}, bf16=set(stored))
    else:
        save_file(tensors, directory / "model.safetensors", {"format": "pt"})
    (directory / "config.json").write_text(config_text)
    (directory / "generation_config.json").write_text(json.dumps(DEMO_GENERATION_CONFIG, indent=1))
    return directory


def demo_checkpoint(directory: Path | None = None) -> Path:
    """Create (once) and return the demo checkpoint folder."""
    directory = Path(directory) if directory else default_demo_dir()
    marker = directory / ".complete"
    if not marker.exists():
        write_random_checkpoint(directory, DEMO_CONFIG)
        marker.write_text("1")
    return directory
