"""Weight-only quantization arguments and saving quantized checkpoints.

The quantization itself runs in C++ at load (``cpp/model/quantization.h`` says which layers and
how); this module checks the Python arguments and writes the folder that ``save_pretrained``
produces: the packed weights as the model holds them, ``quantization_config`` in config.json, and
the source folder's other files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import numpy as np

from .safetensors_writer import save_file

__all__ = ["QUANTIZATION_FORMATS", "DEFAULT_GROUP_SIZE", "check_quantization_arguments", "save_pretrained"]

QUANTIZATION_FORMATS = ("int8", "int4")
DEFAULT_GROUP_SIZE = 128
# Files of a checkpoint folder that save_pretrained writes itself rather than copies.
_WRITTEN = {"config.json", "model.safetensors.index.json"}


def check_quantization_arguments(quantization: Any, group_size: Any) -> Tuple[str, int]:
    """Returns the engine's spelling of the arguments; ValueError names a bad one."""
    if quantization is None:
        if group_size is not None:
            raise ValueError("quantization_group_size was given without quantization='int8' or 'int4'")
        return "none", DEFAULT_GROUP_SIZE
    if not isinstance(quantization, str) or quantization not in QUANTIZATION_FORMATS:
        raise ValueError(f"quantization must be None, 'int8' or 'int4', got {quantization!r}")
    if group_size is None:
        return quantization, DEFAULT_GROUP_SIZE
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size <= 0 \
            or group_size % 32 != 0:
        raise ValueError(f"quantization_group_size must be a positive multiple of 32, got {group_size!r}")
    return quantization, int(group_size)


def _source_folder(model: Any) -> Path:
    source = Path(model.name_or_path)
    return source.parent if source.is_file() else source


def save_pretrained(model: Any, save_directory: Union[str, os.PathLike]) -> None:
    from .checkpoint import Checkpoint

    source = _source_folder(model)
    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise ValueError(f"save_pretrained needs a folder, and {str(target)!r} is a file")
    if target.exists() and target.resolve() == source.resolve():
        raise ValueError(f"save_pretrained would overwrite {str(source)!r}, which the model reads its weights from "
                         "(memory-mapped); choose another folder")
    target.mkdir(parents=True, exist_ok=True)

    checkpoint = Checkpoint(model.name_or_path)
    quantized = {prefix: (codes, scales) for prefix, _, codes, scales in model._core.quantized_layers}
    tensors: dict[str, np.ndarray] = {}
    bf16: set[str] = set()
    for name in checkpoint.tensor_names():
        if name.endswith(".weight") and name[: -len(".weight")] in quantized:
            continue  # replaced by its packed form below
        tensors[name] = checkpoint.view(name)
        if checkpoint.dtype(name) == "BF16":
            bf16.add(name)
    for prefix, (codes, scales) in quantized.items():
        tensors[prefix + ".qweight"] = codes
        tensors[prefix + ".scales"] = scales
    # Widest elements first, so every tensor starts aligned to its element size and the loader can use
    # each one in place from the memory map.
    ordered = dict(sorted(tensors.items(), key=lambda item: (-item[1].dtype.itemsize, item[0])))
    save_file(ordered, target / "model.safetensors", metadata={"format": "pt"}, bf16=bf16)
    for stale in target.glob("model-*.safetensors"):
        stale.unlink()  # shards of an earlier save into this folder would contradict the new file
    (target / "model.safetensors.index.json").unlink(missing_ok=True)

    config = json.loads((source / "config.json").read_text())
    quantization_config: Optional[dict] = model.quantization_config
    if quantization_config is None:
        config.pop("quantization_config", None)
    else:
        config["quantization_config"] = quantization_config
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for item in source.iterdir():
        if item.is_file() and item.name not in _WRITTEN and not item.name.endswith(".safetensors"):
            shutil.copy2(item, target / item.name)
