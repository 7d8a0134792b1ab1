"""Corpus BLEU as sacrebleu 1.5.1's ``corpus_bleu`` computes it with the options the official
speech-translation scorer leaves at their defaults: one reference, case-sensitive, exponential
smoothing, no effective order, only trailing whitespace removed before tokenization."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from .tokenizers import TOKENIZERS, tokenizer_signature

MAX_ORDER = 4
SACREBLEU_VERSION = "1.5.1"
# what sacrebleu 1.5.1 uses for log(0), so a missing n-gram order zeroes the score
_LOG_ZERO = -9999999999


def _log(value: float) -> float:
    return _LOG_ZERO if value == 0.0 else math.log(value)


def _ngrams(tokens: list[str]) -> Counter:
    counts: Counter = Counter()
    for n in range(1, MAX_ORDER + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


@dataclass
class BleuResult:
    score: float
    counts: list[int]
    totals: list[int]
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    tokenize: str
    signature: str
    hyp_tokenized: list[str] = field(default_factory=list)
    ref_tokenized: list[str] = field(default_factory=list)

    def format(self, width: int = 2) -> str:
        """sacrebleu's printout of the score object ("BLEU = 62.12 94.3/76.6/61.0/45.7 (BP = ...)")."""
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.{width}f} {precisions} (BP = {self.bp:.3f} ratio = "
                f"{self.sys_len / self.ref_len:.3f} hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})")


def signature(tokenize: str) -> str:
    """The signature of sacrebleu 1.5.1's compatibility API, whose arguments carry no reference count."""
    return f"case.mixed+numrefs.?+smooth.exp+tok.{tokenizer_signature(tokenize)}+version.{SACREBLEU_VERSION}"


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> BleuResult:
    if tokenize not in TOKENIZERS:
        raise ValueError(f"unknown BLEU tokenizer {tokenize!r}; known: {', '.join(TOKENIZERS)}")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    tokenizer = TOKENIZERS[tokenize]
    correct = [0] * MAX_ORDER
    total = [0] * MAX_ORDER
    sys_len = ref_len = 0
    hyp_out, ref_out = [], []
    for index, (hypothesis, reference) in enumerate(zip(hypotheses, references)):
        if hypothesis is None:
            raise ValueError(f"hypothesis {index} is missing")
        if reference is None or reference == "":
            raise ValueError(f"reference {index} is empty; BLEU needs a reference for every segment")
        hyp = tokenizer(hypothesis.rstrip())
        ref = tokenizer(reference.rstrip())
        hyp_out.append(hyp)
        ref_out.append(ref)
        hyp_tokens, ref_tokens = hyp.split(), ref.split()
        sys_len += len(hyp_tokens)
        ref_len += len(ref_tokens)
        ref_counts = _ngrams(ref_tokens)
        for ngram, count in _ngrams(hyp_tokens).items():
            correct[len(ngram) - 1] += min(count, ref_counts.get(ngram, 0))
            total[len(ngram) - 1] += count
    precisions = [0.0] * MAX_ORDER
    smooth = 1.0
    for n in range(MAX_ORDER):
        if total[n] == 0:
            break
        if correct[n] == 0:
            smooth *= 2
            precisions[n] = 100.0 / (smooth * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    else:
        bp = 1.0
    score = bp * math.exp(sum(map(_log, precisions)) / MAX_ORDER)
    return BleuResult(score, correct, total, precisions, bp, sys_len, ref_len, tokenize, signature(tokenize),
                      hyp_out, ref_out)
