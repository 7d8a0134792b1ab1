"""Whisper's language-independent text normalizer, as the official Qwen2-Audio ASR scorer runs it.

Every non-Chinese language goes through it (English after the English normalizer), so its exact
Unicode-category rules decide which characters survive into the WER.
"""

from __future__ import annotations

import re
import unicodedata

# Letters that NFKD does not decompose into base + combining mark, spelled out by hand upstream.
_FOLDED_LETTERS = {
    "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "th", "ł": "l", "Ł": "L",
}

_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")
_PARENTHESIZED = re.compile(r"\(([^)]+?)\)")
_WHITESPACE = re.compile(r"\s+")


def strip_symbols_and_diacritics(text: str, keep: str = "") -> str:
    """NFKD, then: characters in `keep` stay, the hand-folded letters fold, nonspacing marks vanish,
    any other mark/symbol/punctuation becomes a space."""
    out = []
    for char in unicodedata.normalize("NFKD", text):
        if char in keep:
            out.append(char)
        elif char in _FOLDED_LETTERS:
            out.append(_FOLDED_LETTERS[char])
        else:
            category = unicodedata.category(char)
            if category == "Mn":
                continue
            out.append(" " if category[0] in "MSP" else char)
    return "".join(out)


def strip_symbols(text: str) -> str:
    """NFKC, then every mark/symbol/punctuation character becomes a space (diacritics survive NFKC composed)."""
    return "".join(" " if unicodedata.category(c)[0] in "MSP" else c for c in unicodedata.normalize("NFKC", text))


def drop_bracketed(text: str) -> str:
    """Drops `<...>`/`[...]` spans (either closer ends either opener, as upstream) and non-empty `(...)` spans."""
    return _PARENTHESIZED.sub("", _BRACKETED.sub("", text))


class BasicTextNormalizer:
    """Lowercase, drop bracketed spans, symbols to spaces, collapse whitespace (not stripped at the ends)."""

    def __init__(self, remove_diacritics: bool = False):
        self._clean = strip_symbols_and_diacritics if remove_diacritics else strip_symbols

    def __call__(self, text: str) -> str:
        text = drop_bracketed(text.lower())
        text = self._clean(text).lower()
        return _WHITESPACE.sub(" ", text)
