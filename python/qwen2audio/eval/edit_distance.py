"""Levenshtein distance with unit costs over sequences of hashable items (words or characters)."""

from __future__ import annotations

from typing import Hashable, Sequence


def edit_distance(reference: Sequence[Hashable], hypothesis: Sequence[Hashable]) -> int:
    if len(reference) < len(hypothesis):
        reference, hypothesis = hypothesis, reference
    if not hypothesis:
        return len(reference)
    # one row over the shorter sequence
    row = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        diagonal, row[0] = row[0], i
        for j, hyp_item in enumerate(hypothesis, start=1):
            above = row[j]
            row[j] = min(above + 1, row[j - 1] + 1, diagonal + (ref_item != hyp_item))
            diagonal = above
    return row[-1]
