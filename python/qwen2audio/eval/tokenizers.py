"""The tokenizers the official scorers use, behaving as sacrebleu 1.5.1's: ``13a`` (mteval-v13a),
``zh`` (CJK characters split, the rest 13a-style), ``ja-mecab`` (MeCab with the IPA dictionary,
from Debian's python3-mecab and mecab-ipadic-utf8), and the ASR scorer's evaluation tokenizer."""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from typing import Callable

_MTEVAL_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # ASCII symbols stand alone
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),                # period/comma split unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),                # ... or before one
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),                     # dash after a digit
    (re.compile(r"\s+"), " "),
]


def _mteval_split(line: str) -> str:
    for pattern, replacement in _MTEVAL_RULES:
        line = pattern.sub(replacement, line)
    return line.strip()


def tokenize_13a(line: str) -> str:
    for entity, char in (("<skipped>", ""), ("-\n", ""), ("\n", " "), ("&quot;", '"'), ("&amp;", "&"),
                         ("&lt;", "<"), ("&gt;", ">")):
        line = line.replace(entity, char)
    return _mteval_split(f" {line} ")


# sacrebleu's table of "Chinese" code point ranges. Two of its entries were written as five-hex-digit
# \u escapes, which Python reads as a four-digit code point plus a digit; compared as strings against
# one character they cover U+2001..U+2A6D and U+2F81..U+2FA1 instead of the intended supplementary
# planes. The scores depend on it (e.g. "—" and "…" fall in the first), so the effective ranges are
# what is listed here, and supplementary-plane ideographs are not split.
_CHINESE_RANGES = [
    (0x3400, 0x4DB5), (0x4E00, 0x9FA5), (0x9FA6, 0x9FBB), (0xF900, 0xFA2D), (0xFA30, 0xFA6A), (0xFA70, 0xFAD9),
    (0x2001, 0x2A6D), (0x2F81, 0x2FA1), (0xFF00, 0xFFEF), (0x2E80, 0x2EFF), (0x3000, 0x303F), (0x31C0, 0x31EF),
    (0x2F00, 0x2FDF), (0x2FF0, 0x2FFF), (0x3100, 0x312F), (0x31A0, 0x31BF), (0xFE10, 0xFE1F), (0xFE30, 0xFE4F),
    (0x2600, 0x26FF), (0x2700, 0x27BF), (0x3200, 0x32FF), (0x3300, 0x33FF),
]


def is_chinese_char(char: str) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in _CHINESE_RANGES)


def tokenize_zh(line: str) -> str:
    line = line.strip()
    spaced = "".join(f" {c} " if is_chinese_char(c) else c for c in line)
    return _mteval_split(spaced)


_DEBIAN_IPADIC = "/var/lib/mecab/dic/ipadic-utf8"


class MecabUnavailable(RuntimeError):
    pass


@lru_cache(maxsize=1)
def _mecab():
    try:
        import MeCab  # Debian python3-mecab
    except ImportError:
        raise MecabUnavailable("Japanese BLEU (ja-mecab) needs MeCab with the IPA dictionary: "
                               "apt-get install python3-mecab mecab-ipadic-utf8") from None
    # Debian's IPA dictionary by its own path, so another default dictionary (mecab-jumandic, unidic)
    # cannot silently change the tokens
    arguments = "-Owakati"
    if os.path.isdir(_DEBIAN_IPADIC):
        arguments += f" -d {_DEBIAN_IPADIC}"
    try:
        tagger = MeCab.Tagger(arguments)
    except RuntimeError as error:
        raise MecabUnavailable(f"MeCab could not start ({error}); install mecab-ipadic-utf8") from None
    # the stock IPA dictionary has 392126 entries; Debian's adds one (令和)
    size = tagger.dictionary_info().size
    if size not in (392126, 392127):
        raise MecabUnavailable(f"MeCab's dictionary has {size} entries, not the IPA dictionary's 392126 "
                               "(install mecab-ipadic-utf8)")
    return tagger


def tokenize_ja_mecab(line: str) -> str:
    return _mecab().parse(line.strip()).strip()


def ja_mecab_signature() -> str:
    return "ja-mecab-" + _mecab().version() + "-IPA"


TOKENIZERS: dict[str, Callable[[str], str]] = {
    "none": lambda line: line,
    "13a": tokenize_13a,
    "zh": tokenize_zh,
    "ja-mecab": tokenize_ja_mecab,
}


def tokenizer_signature(name: str) -> str:
    return ja_mecab_signature() if name == "ja-mecab" else name


def is_punctuation_token(token: str) -> bool:
    """True for a token made only of Unicode punctuation; also for the empty token, as upstream's all()."""
    return all(unicodedata.category(c)[0] == "P" for c in token)


class EvaluationTokenizer:
    """The ASR scorer's tokenizer as it is configured there: sacrebleu tokenizer ``none``, then
    punctuation-only tokens dropped (between single spaces, so "a  b" loses an empty token), then
    lowercase."""

    def __init__(self, tokenizer_type: str = "none", lowercase: bool = True, punctuation_removal: bool = True):
        if tokenizer_type not in TOKENIZERS:
            raise ValueError(f"unknown tokenizer {tokenizer_type!r}; known: {', '.join(TOKENIZERS)}")
        self._tokenize = TOKENIZERS[tokenizer_type]
        self.lowercase = lowercase
        self.punctuation_removal = punctuation_removal

    def tokenize(self, text: str) -> str:
        text = self._tokenize(text)
        if self.punctuation_removal:
            text = " ".join(t for t in text.split(" ") if not is_punctuation_token(t))
        return text.lower() if self.lowercase else text
