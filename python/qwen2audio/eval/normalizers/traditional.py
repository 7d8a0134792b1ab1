"""Traditional to simplified Chinese through Debian's OpenCC library (libopencc1.1, configuration
t2s), loaded with ctypes. The official scorer uses zhconv's zh-cn conversion for Cantonese; OpenCC's
t2s gives the same text on every reference string (Debian 12 has no Python binding for OpenCC)."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from functools import lru_cache

_LIBRARY_NAMES = ("libopencc.so.1.1", "libopencc.so.1", "libopencc.so")


class OpenCCUnavailable(RuntimeError):
    pass


class _OpenCC:
    def __init__(self, config: str):
        library = None
        for name in (*_LIBRARY_NAMES, ctypes.util.find_library("opencc")):
            if not name:
                continue
            try:
                library = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if library is None:
            raise OpenCCUnavailable("Cantonese (yue) scoring needs OpenCC: apt-get install libopencc1.1")
        library.opencc_open.restype = ctypes.c_void_p
        library.opencc_open.argtypes = [ctypes.c_char_p]
        library.opencc_convert_utf8.restype = ctypes.c_void_p
        library.opencc_convert_utf8.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        library.opencc_convert_utf8_free.argtypes = [ctypes.c_void_p]
        library.opencc_error.restype = ctypes.c_char_p
        handle = library.opencc_open(config.encode())
        # opencc_open signals failure with (opencc_t) -1
        if handle is None or handle == ctypes.c_void_p(-1).value:
            raise OpenCCUnavailable(f"OpenCC could not open {config}: {library.opencc_error().decode(errors='replace')}"
                                    " (apt-get install libopencc-data)")
        self._library = library
        self._handle = handle
        self._lock = threading.Lock()

    def convert(self, text: str) -> str:
        data = text.encode("utf-8")
        with self._lock:
            pointer = self._library.opencc_convert_utf8(self._handle, data, len(data))
            if not pointer:
                raise RuntimeError(f"OpenCC failed on {text!r}: {self._library.opencc_error().decode(errors='replace')}")
            try:
                return ctypes.string_at(pointer).decode("utf-8")
            finally:
                self._library.opencc_convert_utf8_free(pointer)


@lru_cache(maxsize=None)
def _converter(config: str) -> _OpenCC:
    return _OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional characters to simplified (OpenCC t2s)."""
    return _converter("t2s.json").convert(text)
