"""Tokenizer throughput: qwen2audio's C++ Qwen2 tokenizer beside a pure-Python byte-level BPE.

    QWEN2AUDIO_CORE_DIR=build/<dir>/py .venv/bin/python bench/bench_tokenizer.py [--model DIR] [--mb 1.0]

The text (~1 MB by default) is built here, with no download: the llama.cpp tokenizer test inputs
plus generated prose in nine scripts (English, accented Latin, Russian, Chinese, Japanese, Korean,
Arabic, Hindi), code, numbers and emoji. Its words are drawn from the vocabulary itself with a
Zipf law, so common words repeat as in real text and rare ones stay rare.

Baseline: the textbook pure-Python BPE (the merge loop of GPT-2's encoder and of transformers'
slow Qwen2Tokenizer, with the same per-word cache) run on the words our pre-tokenizer produces.
Python has no Unicode-property regex in its standard library, so the baseline is timed on the BPE
step alone (byte-level mapping, merges, vocabulary lookup) and gets the regex and NFC for free;
ours is timed end to end. Both must give the same ids, which the script checks.

"Cold" is the first pass on a new tokenizer (empty word caches); "warm" the best of further
passes. One thread throughout; times are CPU seconds of the process, so other work on a shared
machine does not count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the extension loads OpenMP
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import qwen2audio  # noqa: E402
from qwen2audio import _core  # noqa: E402

REFERENCE = ROOT.parent / "shared" / "reference" / "tokenizer"

SCRIPTS = {  # name: (share of the bytes, code point ranges of its letters, words separated by spaces)
    "english": (0.42, [(0x61, 0x7A)], True),
    "accented_latin": (0.05, [(0x61, 0x7A), (0xE0, 0xFF)], True),
    "russian": (0.10, [(0x430, 0x44F)], True),
    "chinese": (0.14, [(0x4E00, 0x9FFF)], False),
    "japanese": (0.05, [(0x3040, 0x30FF), (0x4E00, 0x9FFF)], False),
    "korean": (0.05, [(0xAC00, 0xD7AF)], True),
    "arabic": (0.04, [(0x620, 0x64A)], True),
    "hindi": (0.04, [(0x900, 0x97F)], True),
}
CODE_SHARE = 0.06
EMOJI = ["🦙", "😀", "🚀", "✅", "👍🏽", "🎵", "😶‍🌫️", "❤️", "🇫🇷", "🤖"]
CODE_LINES = [
    "def encode(self, text: str) -> list[int]:",
    "    return [self.vocab[token] for token in self.bpe(word)]",
    "for (size_t i = 0; i < n; ++i) { sum += x[i] * w[i]; }",
    "if __name__ == \"__main__\":\n    main()",
    "const result = await fetch(`/api/v1/items?id=${id}`);",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "    \"\"\"Docstring with    irregular   spacing.\"\"\"",
    "x = np.zeros((128, 3000), dtype=np.float32)  # log-mel",
]


def script_words(core, ranges, spaced):
    """Vocabulary tokens written in one script, as words (leading space dropped). For the accented
    script, only tokens holding an accented letter."""
    words = set()
    for token_id in range(core.vocab_size):
        try:
            text = core.token_bytes(token_id).decode("utf-8")
        except (UnicodeDecodeError, ValueError):
            continue
        body = text[1:] if text.startswith(" ") else text
        if len(body) < (2 if spaced else 1):
            continue
        if not all(any(low <= ord(char) <= high for low, high in ranges) for char in body):
            continue
        if len(ranges) > 1 and ranges[0] == (0x61, 0x7A) and body.isascii():
            continue
        words.add(body)
    return sorted(words)


def hindi_words(rng, count=3000):
    """The vocabulary has few whole Devanagari words: make syllable words (consonant + vowel sign)."""
    consonants = [chr(code) for code in range(0x915, 0x93A)]
    signs = [""] + [chr(code) for code in range(0x93E, 0x94D)]
    return sorted({"".join(rng.choice(consonants) + rng.choice(signs) for _ in range(rng.randint(1, 4)))
                   for _ in range(count)})


def zipf_sampler(rng, items, exponent=1.1):
    """Draws from `items` in a random order of popularity, the k-th most popular with weight k^-exponent."""
    order = list(items)
    rng.shuffle(order)
    weights = 1.0 / np.arange(1, len(order) + 1) ** exponent
    cumulative = np.cumsum(weights / weights.sum())

    def sample():
        return order[min(int(np.searchsorted(cumulative, rng.random())), len(order) - 1)]

    return sample


def build_corpus(core, target_bytes, seed=0):
    rng = random.Random(seed)
    vectors = (REFERENCE / "llama_cpp_vectors" / "ggml-vocab-qwen2.gguf.inp").read_text(encoding="utf-8")
    pieces = [case for case in vectors.split("\n__ggml_vocab_test__\n") if case]
    size = sum(len(piece.encode()) for piece in pieces)
    sources = []
    for name, (share, ranges, spaced) in SCRIPTS.items():
        words = hindi_words(rng) if name == "hindi" else script_words(core, ranges, spaced)
        if spaced:  # longer words made of two vocabulary pieces, part of the lexicon like any other
            words += [rng.choice(words) + rng.choice(words) for _ in range(len(words) // 4)]
        sources.append((share, name, zipf_sampler(rng, words), spaced))
    sources.append((CODE_SHARE, "code", None, True))
    shares = [share for share, *_ in sources]
    while size < target_bytes:
        share, name, sample, spaced = rng.choices(sources, weights=shares)[0]
        if name == "code":
            paragraph = "\n".join(rng.choice(CODE_LINES) for _ in range(rng.randint(2, 6)))
        elif spaced:
            sentences = []
            for _ in range(rng.randint(1, 5)):
                words = []
                for _ in range(rng.randint(4, 18)):
                    words.append(sample())
                    if rng.random() < 0.03:
                        words.append(str(rng.randint(0, 100000)))
                    if rng.random() < 0.01:
                        words.append(rng.choice(EMOJI))
                sentence = " ".join(words)
                sentences.append(sentence[:1].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!", ",", ":"]))
            paragraph = " ".join(sentences)
        else:
            clauses = ["".join(sample() for _ in range(rng.randint(3, 20))) for _ in range(rng.randint(1, 6))]
            paragraph = "，".join(clauses) + "。"
            if rng.random() < 0.1:
                paragraph += rng.choice(EMOJI)
        paragraph += rng.choice(["\n\n", "\n", " "])
        pieces.append(paragraph)
        size += len(paragraph.encode())
    rng.shuffle(pieces)
    return "".join(pieces)


def bytes_to_unicode():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


class PythonBpe:
    """The textbook byte-level BPE in pure Python: each word's bytes mapped to the byte-level
    alphabet, then the adjacent pair of lowest merge rank merged (every occurrence, left to right)
    until no ranked pair is left; words are cached, as transformers' slow tokenizer caches them."""

    def __init__(self, folder: Path):
        self.vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        self.ranks = {tuple(line.split(" ")): rank for rank, line in enumerate(lines[1:]) if line}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        self.id_to_token = {token_id: token for token, token_id in self.vocab.items()}
        self.cache = {}

    def bpe(self, token: str) -> list[str]:
        word = list(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, index = [], 0
            while index < len(word):
                if index + 1 < len(word) and (word[index], word[index + 1]) == best:
                    merged.append(word[index] + word[index + 1])
                    index += 2
                else:
                    merged.append(word[index])
                    index += 1
            word = merged
        return word

    def encode_words(self, words: list[bytes]) -> list[int]:
        ids = []
        for word in words:
            cached = self.cache.get(word)
            if cached is None:
                token = "".join(self.byte_encoder[byte] for byte in word)
                cached = self.cache[word] = [self.vocab[symbol] for symbol in self.bpe(token)]
            ids.extend(cached)
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.id_to_token[token_id] for token_id in ids)
        return bytearray(self.byte_decoder[char] for char in text).decode("utf-8", errors="replace")


def timed(function, *args):
    """CPU seconds of this process (both sides run on one thread), so that other work sharing the
    machine does not count against either."""
    start = time.process_time()
    result = function(*args)
    return time.process_time() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REFERENCE, help="tokenizer folder (default: reference)")
    parser.add_argument("--mb", type=float, default=1.0, help="size of the text in MB (default 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per measurement (best is reported)")
    args = parser.parse_args()

    load_seconds, tokenizer = timed(qwen2audio.Qwen2Tokenizer.from_pretrained, args.model)
    text = build_corpus(tokenizer._core, int(args.mb * 1e6))
    megabytes = len(text.encode()) / 1e6
    print(f"text: {megabytes:.2f} MB, {len(text):,} characters; tokenizer loaded in {load_seconds:.2f} s")

    # Ours, end to end (added tokens, NFC, regex, BPE). Cold: a new tokenizer's first pass.
    cold = []
    for _ in range(args.repeats):
        fresh = qwen2audio.Qwen2Tokenizer.from_pretrained(args.model)
        seconds, ids = timed(fresh.encode, text)
        cold.append(seconds)
    warm = [timed(fresh.encode, text)[0] for _ in range(args.repeats)]
    tokens = len(ids)

    # Baseline: BPE alone on our words.
    words = tokenizer._core.pre_tokenize(text)
    baseline = PythonBpe(args.model)
    baseline_cold, baseline_ids = timed(baseline.encode_words, words)
    baseline_warm = min(timed(baseline.encode_words, words)[0] for _ in range(args.repeats))
    if baseline_ids != ids:
        first = next(index for index, (a, b) in enumerate(zip(ids, baseline_ids)) if a != b)
        raise SystemExit(f"ids differ from the pure-Python BPE at token {first}")

    decode_ours = min(timed(tokenizer.decode, ids)[0] for _ in range(args.repeats))
    decode_python, decoded = timed(baseline.decode, ids)
    if decoded != tokenizer.decode(ids) or decoded != text:
        raise SystemExit("decoded text differs")

    rows = [
        ("encode, cold (new tokenizer)", megabytes / min(cold), megabytes / baseline_cold),
        ("encode, warm (word caches full)", megabytes / min(warm), megabytes / baseline_warm),
        ("decode", megabytes / decode_ours, megabytes / decode_python),
    ]
    print(f"{tokens:,} tokens, identical ids from both; one thread; best of {args.repeats}")
    print(f"{'':34} {'qwen2audio (C++)':>17} {'pure Python':>12} {'speed-up':>9}")
    for name, ours, python in rows:
        print(f"{name:34} {ours:12.1f} MB/s {python:7.2f} MB/s {ours / python:8.0f}x")
    print("(pure Python encode: BPE step only, on our pre-tokenized words; ours: the whole pipeline)")


if __name__ == "__main__":
    main()
