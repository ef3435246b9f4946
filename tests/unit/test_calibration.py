"""Calibration of the accuracy test between arms: simulated studies with no true difference but real
between-run variance (issue 25, "Must show").

Model: question i has difficulty q_i ~ N(0, 1), shared by every run of a study (the same test questions);
run r (one arm, one seed) has a random effect u_r ~ N(0, sigma^2) on the logit (what another training
seed changes); P(correct) = sigmoid(mu + q_i + u_r). Both arms have the same mu: any rejection is a false
positive. n = 200 questions, k = 2 and 3 seeds per arm, as the study runs.
"""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from lorarank.report.stats import mcnemar_exact, seed_level
from lorarank.report.summary import paired_vs
from lorarank.study import Arm

N, ALPHA, SIGMA = 200, 0.05, 0.2  # sigma 0.2 on the logit: ~5 points of accuracy between seeds near 50%


def simulate(rng, studies: int, k: int, sigma: float = SIGMA, delta: float = 0.0):
    """(reference, arm) correctness, each studies x k seeds x N questions; the arm's logit is shifted by delta."""
    q = rng.normal(0, 1, size=(studies, 1, N))
    ref = rng.random((studies, k, N)) < expit(q + rng.normal(0, sigma, (studies, k, 1)))
    arm = rng.random((studies, k, N)) < expit(delta + q + rng.normal(0, sigma, (studies, k, 1)))
    return ref, arm


def pooled_mcnemar_rejects(ref, arm) -> float:
    """The old summary's test: the seeds concatenated as if they were more questions, one exact McNemar."""
    return float(np.mean([mcnemar_exact(r.ravel(), a.ravel())[2] < ALPHA for r, a in zip(ref, arm)]))


def seed_level_rejects(ref, arm) -> float:
    """The summary's run-level test on the per-seed paired differences (no p: not rejected)."""
    ps = [seed_level(d)["p"] for d in arm.mean(axis=2) - ref.mean(axis=2)]
    return float(np.mean([p is not None and p < ALPHA for p in ps]))


@pytest.mark.parametrize("k", [2, 3])
def test_pooled_mcnemar_is_anticonservative_when_seeds_vary(k):
    ref, arm = simulate(np.random.default_rng(k), 1000, k)
    # the old test counts each question once per seed and never sees the between-seed variance: at sigma 0.2
    # it rejects a true null about 21% of the time (Monte-Carlo sd at 1000 studies: ~0.013)
    assert pooled_mcnemar_rejects(ref, arm) > 0.10


@pytest.mark.parametrize("k", [2, 3])
def test_seed_level_test_holds_its_level(k):
    ref, arm = simulate(np.random.default_rng(100 + k), 4000, k)
    # A calibrated test rejects 5% of true nulls; at 4000 studies the Monte-Carlo sd of that rate is
    # sqrt(0.05 * 0.95 / 4000) = 0.0034, so 0.06 is ~3 sd above 0.05: a calibrated test passes whatever the
    # seed, a test at 7% or more (the pooled one is at ~20%) fails. With k = 2 the test is conservative
    # (~3.5%): two seeds that agree exactly give no t interval and are not rejected.
    assert seed_level_rejects(ref, arm) <= 0.06


def test_seed_level_test_has_power():
    """Not a test that never rejects: with a real difference (0.5 on the logit, ~10 points) it rejects far more
    often than at zero."""
    rng = np.random.default_rng(7)
    null = seed_level_rejects(*simulate(rng, 1000, 3))
    real = seed_level_rejects(*simulate(rng, 1000, 3, delta=0.5))
    assert real > null + 0.15


def test_the_summary_uses_the_seed_level_test():
    """paired_vs's run-level columns are seed_level on the per-seed differences, not a pooled test."""
    ref, arm = simulate(np.random.default_rng(11), 1, 3)
    uni, prop = Arm("grpo", "uniform", "ratio"), Arm("grpo", "proportional", "ratio")
    runs = {(key, s): pd.DataFrame({"idx": range(N), "correct_strict": x[0, s], "correct_flexible": x[0, s]})
            for key, x in ((uni, ref), (prop, arm)) for s in range(3)}
    got = paired_vs(runs, prop, uni)
    want = seed_level(arm[0].mean(axis=1) - ref[0].mean(axis=1))
    assert got["p_seed_strict"] == pytest.approx(want["p"]) and got["diff_low_strict"] == pytest.approx(want["low"])
    assert got["p_seed_strict"] != pytest.approx(mcnemar_exact(ref[0].ravel(), arm[0].ravel())[2])
    assert got["seeds_paired"] == 3 and got["per_seed_diff_strict"].count(";") == 2
