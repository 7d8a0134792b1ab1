"""Whisper's English text normalizer, reproduced behaviour for behaviour as the official scorer ran it.

The official ASR scorer runs this before the basic normalizer for English. Its quirks are part of
the published WERs and are kept on purpose: "o"/"oh" read as zero (so "O'Brien" -> "0 brien"),
curly apostrophes are not contractions, "3.0" becomes "3", and so on. The British-to-American
spelling table is openai/whisper's english.json (MIT; data/LICENSE.openai-whisper).
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional, Union

from .basic import strip_symbols_and_diacritics

_NUMERIC = re.compile(r"^\d+(\.\d+)?$")
_ONES = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_MULTIPLIER_NAMES = ("hundred", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion",
                     "sextillion", "septillion", "octillion", "nonillion", "decillion")

Value = Union[int, str, None]


def _fraction(text: Union[str, int]) -> Optional[Fraction]:
    try:
        return Fraction(text)
    except ValueError:
        return None


class EnglishNumberNormalizer:
    """Spelled-out numbers to digits: "twenty five" -> 25, "one oh one" -> 101, "$20 million" kept as
    "$20000000", "five percent" -> "5%", "seventh" -> "7th"."""

    def __init__(self) -> None:
        self.zeros = {"o", "oh", "zero"}
        self.ones = {name: value for value, name in enumerate(_ONES, start=1)}
        self.ones_suffixed: dict[str, tuple[int, str]] = {}
        for name, value in self.ones.items():
            self.ones_suffixed["sixes" if name == "six" else name + "s"] = (value, "s")
        ordinals = {"zeroth": (0, "th"), "first": (1, "st"), "second": (2, "nd"), "third": (3, "rd"),
                    "fifth": (5, "th"), "twelfth": (12, "th")}
        for name, value in self.ones.items():
            if value > 3 and value not in (5, 12):
                ordinals[name + ("h" if name.endswith("t") else "th")] = (value, "th")
        self.ones_suffixed.update(ordinals)
        self.tens = {name: 20 + 10 * i for i, name in enumerate(_TENS)}
        self.tens_suffixed = {name.replace("y", "ies"): (value, "s") for name, value in self.tens.items()}
        self.tens_suffixed.update({name.replace("y", "ieth"): (value, "th") for name, value in self.tens.items()})
        self.multipliers = {"hundred": 100}
        for power, name in enumerate(_MULTIPLIER_NAMES[1:], start=1):
            self.multipliers[name] = 1000 ** power
        self.multipliers_suffixed = {name + "s": (value, "s") for name, value in self.multipliers.items()}
        self.multipliers_suffixed.update({name + "th": (value, "th") for name, value in self.multipliers.items()})
        self.decimals = set(self.ones) | set(self.tens) | self.zeros
        self.preceding_prefixers = {"minus": "-", "negative": "-", "plus": "+", "positive": "+"}
        self.following_prefixers = {"pound": "£", "pounds": "£", "euro": "€", "euros": "€", "dollar": "$",
                                    "dollars": "$", "cent": "¢", "cents": "¢"}
        self.prefixes = set(self.preceding_prefixers.values()) | set(self.following_prefixers.values())
        self.suffixers: dict[str, Union[str, dict[str, str]]] = {"per": {"cent": "%"}, "percent": "%"}
        self.specials = {"and", "double", "triple", "point"}
        self.words: set[str] = set()
        for table in (self.zeros, self.ones, self.ones_suffixed, self.tens, self.tens_suffixed, self.multipliers,
                      self.multipliers_suffixed, self.preceding_prefixers, self.following_prefixers,
                      self.suffixers, self.specials):
            self.words.update(table)

    # The state machine keeps an accumulated `value` (int while it is arithmetic, str once digits are
    # being concatenated) and an optional currency/sign `prefix`; emitting resets both.
    def process_words(self, words: list[str]) -> Iterator[str]:
        state: dict[str, Value] = {"value": None, "prefix": None}

        def emit(result: Union[str, int]) -> str:
            text = str(result)
            if state["prefix"] is not None:
                text = str(state["prefix"]) + text
            state["value"] = None
            state["prefix"] = None
            return text

        padded: list[Optional[str]] = [None, *words, None]
        skip = False
        for i in range(1, len(padded) - 1):
            prev, word, nxt = padded[i - 1], padded[i], padded[i + 1]
            assert word is not None
            if skip:
                skip = False
                continue
            value = state["value"]
            next_is_numeric = nxt is not None and _NUMERIC.match(nxt) is not None
            has_prefix = word[0] in self.prefixes
            bare = word[1:] if has_prefix else word

            if _NUMERIC.match(bare):
                fraction = _fraction(bare)
                assert fraction is not None
                if value is not None:
                    if isinstance(value, str) and value.endswith("."):
                        # decimals and dotted groups ("192.168") concatenate, prefix char included
                        state["value"] = value + word
                        continue
                    yield emit(value)
                if has_prefix:
                    state["prefix"] = word[0]
                state["value"] = fraction.numerator if fraction.denominator == 1 else bare
            elif word not in self.words:
                if value is not None:
                    yield emit(value)
                yield emit(word)
            elif word in self.zeros:
                state["value"] = str(value or "") + "0"
            elif word in self.ones:
                ones = self.ones[word]
                if value is None:
                    state["value"] = ones
                elif isinstance(value, str) or prev in self.ones:
                    if prev in self.tens and ones < 10:
                        assert str(value)[-1] == "0"
                        state["value"] = str(value)[:-1] + str(ones)
                    else:
                        state["value"] = str(value) + str(ones)
                elif ones < 10:
                    state["value"] = value + ones if value % 10 == 0 else str(value) + str(ones)
                else:
                    state["value"] = value + ones if value % 100 == 0 else str(value) + str(ones)
            elif word in self.ones_suffixed:
                ones, suffix = self.ones_suffixed[word]
                if value is None:
                    yield emit(str(ones) + suffix)
                elif isinstance(value, str) or prev in self.ones:
                    if prev in self.tens and ones < 10:
                        assert str(value)[-1] == "0"
                        yield emit(str(value)[:-1] + str(ones) + suffix)
                    else:
                        yield emit(str(value) + str(ones) + suffix)
                elif ones < 10:
                    yield emit((str(value + ones) if value % 10 == 0 else str(value) + str(ones)) + suffix)
                else:
                    yield emit((str(value + ones) if value % 100 == 0 else str(value) + str(ones)) + suffix)
                state["value"] = None
            elif word in self.tens:
                tens = self.tens[word]
                if value is None:
                    state["value"] = tens
                elif isinstance(value, str):
                    state["value"] = value + str(tens)
                else:
                    state["value"] = value + tens if value % 100 == 0 else str(value) + str(tens)
            elif word in self.tens_suffixed:
                tens, suffix = self.tens_suffixed[word]
                if value is None:
                    yield emit(str(tens) + suffix)
                elif isinstance(value, str):
                    yield emit(value + str(tens) + suffix)
                else:
                    yield emit((str(value + tens) if value % 100 == 0 else str(value) + str(tens)) + suffix)
            elif word in self.multipliers:
                multiplier = self.multipliers[word]
                if value is None:
                    state["value"] = multiplier
                elif isinstance(value, str) or value == 0:
                    fraction = _fraction(value)
                    product = fraction * multiplier if fraction is not None else None
                    if product is not None and product.denominator == 1:
                        state["value"] = product.numerator
                    else:
                        yield emit(value)
                        state["value"] = multiplier
                else:
                    state["value"] = value // 1000 * 1000 + value % 1000 * multiplier
            elif word in self.multipliers_suffixed:
                multiplier, suffix = self.multipliers_suffixed[word]
                if value is None:
                    yield emit(str(multiplier) + suffix)
                elif isinstance(value, str):
                    fraction = _fraction(value)
                    product = fraction * multiplier if fraction is not None else None
                    if product is not None and product.denominator == 1:
                        yield emit(str(product.numerator) + suffix)
                    else:
                        yield emit(value)
                        yield emit(str(multiplier) + suffix)
                else:
                    yield emit(str(value // 1000 * 1000 + value % 1000 * multiplier) + suffix)
                state["value"] = None
            elif word in self.preceding_prefixers:
                if value is not None:
                    yield emit(value)
                if nxt in self.words or next_is_numeric:
                    state["prefix"] = self.preceding_prefixers[word]
                else:
                    yield emit(word)
            elif word in self.following_prefixers:
                if value is not None:
                    state["prefix"] = self.following_prefixers[word]
                    yield emit(value)
                else:
                    yield emit(word)
            elif word in self.suffixers:
                if value is None:
                    yield emit(word)
                else:
                    suffix = self.suffixers[word]
                    if isinstance(suffix, dict):
                        if nxt in suffix:
                            yield emit(str(value) + suffix[nxt])
                            skip = True
                        else:
                            yield emit(value)
                            yield emit(word)
                    else:
                        yield emit(str(value) + suffix)
            elif word in self.specials:
                if nxt not in self.words and not next_is_numeric:
                    if value is not None:
                        yield emit(value)
                    yield emit(word)
                elif word == "and":
                    # "and" inside "one hundred and five" is swallowed
                    if prev not in self.multipliers:
                        if value is not None:
                            yield emit(value)
                        yield emit(word)
                elif word in ("double", "triple"):
                    if nxt in self.ones or nxt in self.zeros:
                        state["value"] = str(value or "") + str(self.ones.get(nxt, 0)) * (2 if word == "double" else 3)
                        skip = True
                    else:
                        if value is not None:
                            yield emit(value)
                        yield emit(word)
                elif word == "point":
                    if nxt in self.decimals or next_is_numeric:
                        state["value"] = str(value or "") + "."
                else:
                    raise ValueError(f"unexpected number word: {word}")
            else:
                raise ValueError(f"unexpected number word: {word}")
        if state["value"] is not None:
            yield emit(state["value"])

    def preprocess(self, text: str) -> str:
        # "<number> and a half" -> "<number> point five"; other "and a half" stays
        pieces = re.split(r"\band\s+a\s+half\b", text)
        kept = []
        for i, piece in enumerate(pieces):
            if not piece.strip():
                continue
            kept.append(piece)
            if i < len(pieces) - 1:
                last_word = piece.rsplit(maxsplit=2)[-1]
                number_before = last_word in self.decimals or last_word in self.multipliers
                kept.append("point five" if number_before else "and a half")
        text = " ".join(kept)
        text = re.sub(r"([a-z])([0-9])", r"\1 \2", text)
        text = re.sub(r"([0-9])([a-z])", r"\1 \2", text)
        return re.sub(r"([0-9])\s+(st|nd|rd|th|s)\b", r"\1\2", text)

    @staticmethod
    def postprocess(text: str) -> str:
        def cents_joined(match: re.Match) -> str:
            return f"{match.group(1)}{match.group(2)}.{int(match.group(3)):02d}"

        def cents_alone(match: re.Match) -> str:
            return f"¢{int(match.group(1))}"

        text = re.sub(r"([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b", cents_joined, text)
        # upstream's "." here is any character, kept as such
        text = re.sub(r"[€£$]0.([0-9]{1,2})\b", cents_alone, text)
        return re.sub(r"\b1(s?)\b", r"one\1", text)

    def __call__(self, text: str) -> str:
        text = self.preprocess(text)
        text = " ".join(self.process_words(text.split()))
        return self.postprocess(text)


@lru_cache(maxsize=1)
def spelling_table() -> dict[str, str]:
    """openai/whisper's British-to-American table (MIT, shipped with its notice)."""
    path = Path(__file__).resolve().parent.parent / "data" / "english_spelling.json"
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class EnglishSpellingNormalizer:
    def __call__(self, text: str) -> str:
        table = spelling_table()
        return " ".join(table.get(word, word) for word in text.split())


# Applied in this order, each to the whole string; titles gain a trailing space upstream, which the
# final whitespace collapse absorbs.
_REPLACEMENTS = [
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"), (r"\bain't\b", "aint"),
    (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"), (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"),
    (r"\bi'ma\b", "i am going to"), (r"\bimma\b", "i am going to"), (r"\bwoulda\b", "would have"),
    (r"\bcoulda\b", "could have"), (r"\bshoulda\b", "should have"), (r"\bma'am\b", "madam"),
    (r"\bmr\b", "mister "), (r"\bmrs\b", "missus "), (r"\bst\b", "saint "), (r"\bdr\b", "doctor "),
    (r"\bprof\b", "professor "), (r"\bcapt\b", "captain "), (r"\bgov\b", "governor "), (r"\bald\b", "alderman "),
    (r"\bgen\b", "general "), (r"\bsen\b", "senator "), (r"\brep\b", "representative "),
    (r"\bpres\b", "president "), (r"\brev\b", "reverend "), (r"\bhon\b", "honorable "),
    (r"\basst\b", "assistant "), (r"\bassoc\b", "associate "), (r"\blt\b", "lieutenant "),
    (r"\bcol\b", "colonel "), (r"\bjr\b", "junior "), (r"\bsr\b", "senior "), (r"\besq\b", "esquire "),
    (r"'d been\b", " had been"), (r"'s been\b", " has been"), (r"'d gone\b", " had gone"),
    (r"'s gone\b", " has gone"), (r"'d done\b", " had done"), (r"'s got\b", " has got"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'s\b", " is"), (r"'d\b", " would"), (r"'ll\b", " will"),
    (r"'t\b", " not"), (r"'ve\b", " have"), (r"'m\b", " am"),
]
_COMPILED_REPLACEMENTS = [(re.compile(pattern), replacement) for pattern, replacement in _REPLACEMENTS]


class EnglishTextNormalizer:
    def __init__(self) -> None:
        self.numbers = EnglishNumberNormalizer()
        self.spellings = EnglishSpellingNormalizer()

    def __call__(self, text: str) -> str:
        text = text.lower()
        text = re.sub(r"[<\[][^>\]]*[>\]]", "", text)
        text = re.sub(r"\(([^)]+?)\)", "", text)
        text = re.sub(r"\b(hmm|mm|mhm|mmm|uh|um)\b", "", text)
        text = re.sub(r"\s+'", "'", text)
        for pattern, replacement in _COMPILED_REPLACEMENTS:
            text = pattern.sub(replacement, text)
        text = re.sub(r"(\d),(\d)", r"\1\2", text)
        text = re.sub(r"\.([^0-9]|$)", r" \1", text)
        text = strip_symbols_and_diacritics(text, keep=".%$¢€£")
        text = self.numbers(text)
        text = self.spellings(text)
        # currency/decimal symbols not attached to a number go
        text = re.sub(r"[.$¢€£]([^0-9])", r" \1", text)
        text = re.sub(r"([^0-9])%", r"\1 ", text)
        return re.sub(r"\s+", " ", text)
