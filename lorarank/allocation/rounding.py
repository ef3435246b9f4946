"""Rounding, one rule for every strategy: real-valued ranks are rank_i = clamp(lambda * w_i, min_rank,
max_rank) with lambda chosen so they sum to the budget (water-filling: clamped units give their excess to
the rest in proportion to weight); then largest remainder: floor all, hand the missing units one each to
the largest fractional parts, ties to the lower index. Exact rational arithmetic, so the result does not
depend on float summation order.

>>> apportion([1, 2, 3, 2], 64)
[8, 16, 24, 16]
"""

from __future__ import annotations

import math
from fractions import Fraction

from lorarank.errors import UserError


def water_fill(weights: list[Fraction], total: int, lo: int, hi: int | None) -> list[Fraction]:
    """Real ranks clamp(lambda * w, lo, hi) summing exactly to `total` (lambda found exactly)."""
    n = len(weights)
    if total < n * lo or (hi is not None and total > n * hi):
        raise UserError(f"budget {total} cannot be split over {n} units with ranks in [{lo}, {hi or 'inf'}]")
    if all(w == 0 for w in weights):
        weights = [Fraction(1)] * n

    def clamped(lam: Fraction) -> list[Fraction]:
        out = []
        for w in weights:
            x = max(lam * w, Fraction(lo))
            out.append(x if hi is None else min(x, Fraction(hi)))
        return out

    # sum(clamped(lam)) is piecewise linear and non-decreasing in lam, with kinks where a unit
    # enters or leaves its bounds; find the segment that reaches `total` and solve it exactly.
    kinks = sorted({Fraction(b) / w for w in weights if w > 0 for b in ((lo, hi) if hi is not None else (lo,))})
    left = Fraction(0)
    for right in kinks + [None]:
        if right is not None and sum(clamped(right)) < total:
            left = right
            continue
        probe = left + 1 if right is None else (left + right) / 2
        free = sum(w for w, x in zip(weights, clamped(probe)) if x != lo and (hi is None or x != hi))
        if free == 0:  # flat segment: the total is reached at its left end already, or never
            out = clamped(left)
            short = total - sum(out)
            if short:  # every weighted unit at hi: the zero weights (at lo) take the rest equally
                zeros = [i for i, w in enumerate(weights) if w == 0]  # some, or n * hi >= total was reached
                for i in zeros:
                    out[i] += Fraction(short, len(zeros))
            return out
        lam = left + (total - sum(clamped(left))) / free
        return clamped(lam)
    raise AssertionError("unreachable: feasibility was checked above")


def largest_remainder(values: list[Fraction], total: int) -> list[int]:
    """Floor every value, then give the missing units to the largest remainders (ties: lower index)."""
    floors = [math.floor(v) for v in values]
    missing = total - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-(values[i] - floors[i]), i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def apportion(weights, total: int, lo: int = 1, hi: int | None = None) -> list[int]:
    """Integer ranks proportional to `weights`, each in [lo, hi], summing exactly to `total`."""
    fr = [Fraction(w) for w in weights]  # exact, also for floats: no summation-order effects
    if any(w < 0 for w in fr):
        raise UserError("weights must be >= 0")
    return largest_remainder(water_fill(fr, total, lo, hi), total)
