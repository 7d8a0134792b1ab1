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
