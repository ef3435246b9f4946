"""Water-filling and largest-remainder rounding: exact sums, clamps, deterministic ties."""

from fractions import Fraction

import numpy as np
import pytest

from lorarank.allocation.rounding import apportion, largest_remainder, water_fill
from lorarank.errors import UserError


@pytest.mark.parametrize("seed", range(25))
def test_sum_is_exact_and_bounds_hold(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    weights = rng.random(n) ** 3  # skewed, so clamps bind
    lo = int(rng.integers(1, 8))
    hi = int(rng.integers(lo + 1, 80))
    total = int(rng.integers(n * lo, n * hi + 1))
    ranks = apportion(list(weights), total, lo, hi)
    assert sum(ranks) == total
    assert all(lo <= r <= hi for r in ranks)
    # each integer rank is within 1 of its exact real share
    real = water_fill([Fraction(float(w)) for w in weights], total, lo, hi)
    assert all(abs(r - x) < 1 for r, x in zip(ranks, real))


def test_proportional_without_clamps_is_exact_when_it_divides():
    assert apportion([1, 2, 3, 2], 64) == [8, 16, 24, 16]


def test_ties_go_to_the_lower_index():
    assert apportion([1, 1, 1], 4) == [2, 1, 1]
    assert apportion([1, 1, 1], 5) == [2, 2, 1]
    assert largest_remainder([Fraction(1, 2)] * 4, 2) == [1, 1, 0, 0]


def test_larger_remainder_wins_over_lower_index():
    # exact 3.2, 3.4, 3.4 -> floors 3,3,3, one unit left: goes to index 1 (remainder .4, lowest index of the tie)
    assert largest_remainder([Fraction(16, 5), Fraction(17, 5), Fraction(17, 5)], 10) == [3, 4, 3]


def test_clamped_excess_is_redistributed_by_weight():
    # 100:1:1:1 over 40 with max 20 -> the big one is capped at 20, the other 20 split 7/7/6
    assert apportion([100, 1, 1, 1], 40, lo=2, hi=20) == [20, 7, 7, 6]
    # min clamp: tiny weights are raised to lo and the big ones pay for it in proportion
    assert apportion([0.001, 5, 15], 40, lo=4) == [4, 9, 27]


def test_real_solution_is_proportional_among_free_units():
    w = [Fraction(x) for x in (1, 2, 4, 50)]
    real = water_fill(w, 30, 2, 12)
    assert real[3] == 12  # capped
    free = real[:3]
    assert free[1] / free[0] == 2 and free[2] / free[0] == 4
    assert sum(real) == 30


def test_zero_weights_get_the_minimum():
    assert apportion([0, 0, 1, 1], 20, lo=2) == [2, 2, 8, 8]


def test_all_zero_weights_fall_back_to_equal():
    assert apportion([0, 0, 0, 0], 8) == [2, 2, 2, 2]


@pytest.mark.parametrize("total,lo,hi", [(3, 1, None), (100, 1, 20), (7, 2, 5)])
def test_infeasible_budget_is_refused(total, lo, hi):
    with pytest.raises(UserError, match="cannot be split"):
        apportion([1, 2, 3, 4], total, lo, hi)


def test_deterministic_and_permutation_equivariant_without_ties():
    w = [0.13, 0.31, 0.07, 0.29, 0.2]
    a = apportion(w, 50)
    assert a == apportion(w, 50)
    perm = [4, 2, 0, 3, 1]
    assert apportion([w[i] for i in perm], 50) == [a[i] for i in perm]


def _shares_by_bisection(weights, total, lo, hi):
    """The real ranks clamp(lambda * w, lo, hi) summing to `total`, by float bisection on lambda: a reference that
    shares nothing with water_fill's exact breakpoint search."""
    hi_ = float("inf") if hi is None else hi
    if not any(weights):  # every weight zero: equal shares (the documented fallback)
        weights = [1] * len(weights)

    def shares(lam):
        return [min(max(lam * w, lo), hi_) for w in weights]

    a, b = 0.0, 1.0
    while sum(shares(b)) < total:  # (reachable: the caller leaves out what only a zero weight could reach)
        b *= 2
    for _ in range(200):
        m = (a + b) / 2
        a, b = (m, b) if sum(shares(m)) < total else (a, m)
    return shares(b)


def _splits(n, total, lo, hi):
    """Every integer vector in [lo, hi]^n summing to `total`."""
    if n == 1:
        yield from [(total,)] if lo <= total <= hi else []
        return
    for first in range(lo, min(hi, total - (n - 1) * lo) + 1):
        for rest in _splits(n - 1, total - first, lo, hi):
            yield (first, *rest)


@pytest.mark.parametrize("seed", range(40))
def test_apportion_is_the_closest_integer_split_found_by_brute_force(seed):
    """Against every integer vector in [lo, hi]^n with the right sum: apportion's is one closest (squared error)
    to the real shares, and of equally close ones the one that favours lower indices (lexicographically
    largest). Exhaustive, so n and the budget are small."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5))
    weights = [int(w) for w in rng.integers(0, 7, n)]
    lo = int(rng.integers(1, 3))
    hi = None if seed % 3 == 0 else int(rng.integers(lo + 1, 9))
    total = int(rng.integers(n * lo, n * (hi or 10) + 1))
    top = hi or total
    real = water_fill([Fraction(w) for w in weights], total, lo, hi)
    assert sum(real) == total and all(lo <= x <= top for x in real)
    if not (hi is not None and 0 in weights and any(weights)):  # (the bisection cannot raise a zero weight)
        assert real == pytest.approx(_shares_by_bisection(weights, total, lo, hi), abs=1e-9)
    candidates = list(_splits(n, total, lo, top))
    cost = {v: round(sum((r - x) ** 2 for r, x in zip(v, real)), 9) for v in candidates}
    best = min(cost.values())
    expected = max(v for v in candidates if cost[v] == best)
    assert tuple(apportion(weights, total, lo, hi)) == expected, (weights, total, lo, hi, real)
