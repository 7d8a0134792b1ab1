"""Reading the small text files of a checkpoint folder (JSON configs, chat templates) with the limits
the C++ core applies to the files it reads: a size cap checked before reading, and every way a file
can be malformed (bad UTF-8, bad JSON, nesting deep enough to exhaust Python's recursion limit)
reported as one ValueError subclass naming the file."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

# The C++ tokenizer's limit for tokenizer_config.json and added_tokens.json; real files are a few KB
# (a chat template included).
MAX_CONFIG_BYTES = 64 << 20


def read_text(path: Path, error: type[ValueError] = ValueError, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # reading a FIFO would wait for a writer forever
        raise error(f"{path}: not a regular file")
    size = info.st_size
    if size > max_bytes:
        raise error(f"{path}: file is {size} bytes, over the {max_bytes}-byte limit for this kind of file")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not valid UTF-8 ({problem})") from None


def read_json(path: Path, error: type[ValueError] = ValueError, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    text = read_text(path, error, max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{path}: not valid JSON: {problem}") from None
    except RecursionError:
        raise error(f"{path}: not valid JSON: nested too deeply") from None



def refuse_hub_id(name_or_path: Any, error: type[ValueError] = ValueError) -> None:
    """A Hub id (``"Qwen/Qwen2-Audio-7B-Instruct"``) that is not a local path gets an error saying how to
    fetch it: this package never downloads."""
    text = str(name_or_path)
    if not Path(text).exists() and text.count("/") == 1 and not text.startswith((".", "/", "~")) \
            and all(part for part in text.split("/")):
        raise error(
            f"{text!r} is not a local folder, and this package does not download from the Hugging Face Hub: "
            f"download it with `huggingface-cli download {text} --local-dir DIR`, then pass the folder")


def local_folder(name_or_path: Any, error: type[ValueError] = ValueError, what: str = "a checkpoint folder") -> Path:
    """``name_or_path`` as an existing local folder, or an error naming what is wrong with it."""
    refuse_hub_id(name_or_path, error)
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{path} is not a folder: from_pretrained takes {what}")
    raise error(f"{path}: no such folder (from_pretrained takes {what})")
