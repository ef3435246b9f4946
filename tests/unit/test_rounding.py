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
