"""Statistics for accuracies: Wilson intervals, exact McNemar, paired bootstrap, t intervals across seeds."""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% by default); (0, 1) when n = 0.

    >>> [round(x, 4) for x in wilson(132, 200)]
    [0.5919, 0.7221]
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at k = 0 (k = n) the bound is exactly 0 (1); rounding would leave it a hair inside
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def mcnemar_exact(a_correct, b_correct) -> tuple[int, int, float]:
    """Exact McNemar test on paired outcomes: (b, c, two-sided p), b = only A right, c = only B right.

    >>> mcnemar_exact([1, 1, 1, 0, 1, 1], [0, 0, 0, 0, 1, 1])
    (3, 0, 0.25)
    """
    from scipy.stats import binomtest

    b = sum(1 for x, y in zip(a_correct, b_correct) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct) if y and not x)
    p = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    return b, c, float(min(1.0, p))


def paired_bootstrap_ci(a_correct, b_correct, reps: int = 10000, seed: int = 0, level: float = 0.95):
    """Percentile CI of mean(B) - mean(A) over questions resampled in pairs (seeded)."""
    import numpy as np

    diff = np.asarray(b_correct, dtype=float) - np.asarray(a_correct, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(reps, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval across seeds; the interval is the mean itself for one value."""
    import numpy as np
    from scipy.stats import t

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control over several comparisons).

    >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03, 0.5])]
    [0.04, 0.09, 0.09, 0.5]
    """
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    m = len(pvalues)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _rowwise_pearson(x, y):
    """Pearson correlation of each row of y with x (nan where a row is constant)."""
    import numpy as np

    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum()) * np.sqrt((yc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / den


def _boot_step_means(m, reps: int, rng):
    """reps x units: mean of the rows of `m` (steps x units) over steps drawn with replacement (multinomial
    counts: one matrix product for all replicates)."""
    import numpy as np

    m = np.asarray(m, float)
    counts = rng.multinomial(len(m), np.full(len(m), 1 / len(m)), size=reps)
    return counts @ m / len(m)


def _pick_seeds(per_seed, rng):
    """reps x units: per replicate, the mean over seeds drawn with replacement of per_seed (seeds x reps x units)."""
    import numpy as np

    k, reps = per_seed.shape[:2]
    pick = rng.integers(0, k, size=(reps, k))
    return per_seed[pick, np.arange(reps)[:, None], :].mean(axis=1)


def bootstrap_top_share(steps: list, top: float = 0.3, reps: int = 1000, seed: int = 0):
    """Replicates (array of `reps`) of the share carried by the top `top` fraction of units, resampling
    steps within each seed's run and the seeds themselves."""
    import math

    import numpy as np

    rng = np.random.default_rng(seed)
    means = _pick_seeds(np.stack([_boot_step_means(s, reps, rng) for s in steps]), rng)
    k = max(1, math.ceil(top * means.shape[1]))
    return -np.sort(-means, axis=1)[:, :k].sum(axis=1)


def bootstrap_shift_corr(arm_steps: list, ref_steps: list, ranks, reps: int = 1000, seed: int = 0,
                         level: float = 0.95) -> dict:
    """Percentile CIs of the rank-vs-shift correlation (Pearson and Spearman), resampling optimizer steps
    within each run and, with several seeds, the seeds themselves.

    `arm_steps[i]` and `ref_steps[i]` are (steps x units) share matrices of seed i for the arm and its
    reference (uniform) run; the shift is the seed-averaged difference of mean shares. Each replicate draws
    seeds with replacement, then each run's steps with replacement (multinomial counts, so a replicate costs
    one matrix product). None where the correlation is undefined (fewer than 3 units, constant ranks).
    """
    import numpy as np
    from scipy.stats import rankdata

    ranks = np.asarray(ranks, float)
    if len(ranks) < 3 or np.ptp(ranks) == 0:
        return {"pearson": None, "spearman": None, "reps": reps}
    rng = np.random.default_rng(seed)
    shifts = np.stack([_boot_step_means(a, reps, rng) - _boot_step_means(r, reps, rng)
                       for a, r in zip(arm_steps, ref_steps)])  # seeds x reps x units
    shift = _pick_seeds(shifts, rng)
    tail = (1 - level) / 2
    out = {"reps": reps}
    for name, x, y in (("pearson", ranks, shift), ("spearman", rankdata(ranks), rankdata(shift, axis=1))):
        r = _rowwise_pearson(x, y)
        r = r[np.isfinite(r)]
        out[name] = [float(np.quantile(r, tail)), float(np.quantile(r, 1 - tail))] if len(r) else None
    return out
