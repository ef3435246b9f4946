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


def seed_level(diffs, level: float = 0.95) -> dict:
    """Run-level inference on per-seed paired differences: {mean, low, high, p, sd, k}, a Student t interval
    with k − 1 df and a two-sided one-sample t-test of mean 0. The unit is the seed, so the between-run
    variance (what another seed would change) enters; a question-level test sees one run's noise only.
    low/high/p are None for one seed (no between-seed variance to estimate) and where the seeds agree
    exactly: a zero spread from a few discrete accuracies is a tie, not a measured variance of zero.

    >>> {k: round(v, 3) for k, v in seed_level([0.02, 0.04, 0.03]).items()}
    {'mean': 0.03, 'low': 0.005, 'high': 0.055, 'p': 0.035, 'sd': 0.01, 'k': 3}
    """
    import numpy as np
    from scipy.stats import t

    d = np.asarray(diffs, dtype=float)
    out = {"mean": float(d.mean()) if len(d) else None, "low": None, "high": None, "p": None, "sd": None, "k": len(d)}
    if len(d) < 2:
        return out
    out["sd"] = sd = float(d.std(ddof=1))
    if sd <= 1e-12:
        return out
    _, low, high = mean_ci(d, level)  # the t interval the accuracy table uses across seeds
    se = sd / np.sqrt(len(d))
    return out | {"low": low, "high": high, "p": float(2 * t.sf(abs(out["mean"]) / se, len(d) - 1))}


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


# Gradient statistics (`lorarank.report.analysis`). The unit of replication is the run (seed): a statistic is
# computed per seed and its interval is taken across seeds. Within one run, the optimizer steps are a serially
# dependent series, not independent draws; their resampling (a block bootstrap, arm and reference at the same
# steps) measures only how precisely the run's own statistic is measured, and is labelled measurement noise.

R_CLIP = 1 - 1e-7  # |r| = 1 (a perfect fit on a few layers) would give z = inf; clipped it is large but finite


def t_ci(values, level: float = 0.95) -> list[float] | None:
    """Student t interval of the mean across seeds (k - 1 df); None with fewer than two: one run cannot say
    what another seed would change."""
    if len(values) < 2:
        return None
    _, low, high = mean_ci(values, level)
    return [low, high]


def fisher_ci(rs, level: float = 0.95) -> tuple[float, list[float] | None]:
    """Per-seed correlations combined: (tanh of the mean Fisher z = atanh r, the t interval of the per-seed z
    across seeds (k - 1 df) back-transformed; None with one seed). On z the sampling distribution of r is
    close to normal with a spread that does not depend on the true value (r's own is skewed near +-1), so a
    t interval on z keeps its coverage (tests/unit/test_gradient_calibration.py).

    >>> round(fisher_ci([0.5, 0.7, 0.6])[0], 4)  # tanh(mean(atanh r)), not mean(r) = 0.6
    0.6064
    """
    import numpy as np

    z = np.arctanh(np.clip(np.asarray(rs, float), -R_CLIP, R_CLIP))
    ci = t_ci(z, level)
    return float(np.tanh(z.mean())), None if ci is None else [float(np.tanh(ci[0])), float(np.tanh(ci[1]))]


def welch_ci(a, b, level: float = 0.95) -> list[float] | None:
    """Welch t interval of mean(a) - mean(b), two independent sets of seeds (unequal variances, Welch-
    Satterthwaite df); None if either has fewer than two seeds."""
    import numpy as np
    from scipy.stats import t

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    d = float(a.mean() - b.mean())
    if va + vb == 0:
        return [d, d]
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb))
    return [d - half, d + half]


def normal_ci(point, replicates, level: float = 0.95) -> list[float] | None:
    """point +- z * SD of the bootstrap replicates (None without a point or two finite replicates). Centred on
    the estimate, the bootstrap gives only the spread: percentiles of resampled correlations (or top-k shares)
    are pulled off-centre by the resampling itself (added noise shrinks |r|), so a percentile interval can
    exclude its own estimate ("+0.69 [+0.52, +0.69]")."""
    import numpy as np
    from scipy.stats import norm

    rep = np.asarray(replicates, float)
    rep = rep[np.isfinite(rep)]
    if point is None or len(rep) < 2:
        return None
    half = float(norm.ppf(0.5 + level / 2) * rep.std(ddof=1))
    return [float(point) - half, float(point) + half]


def block_length(n: int) -> int:
    """Block length of the bootstrap over n optimizer steps: round(n^(1/3)). Consecutive steps are dependent
    (each starts from the last one's weights, the learning rate drifts), so single-step resampling understates
    the variance of a mean over steps; blocks keep the dependence within them. For a variance, the MSE-optimal
    block length grows as n^(1/3) (Hall, Horowitz & Jing 1995; Lahiri 2003): long enough for short-range
    dependence, short enough to leave many blocks to draw."""
    return max(1, round(n ** (1 / 3)))


def block_counts(n: int, reps: int, rng, block: int | None = None):
    """reps x n: how often each of n consecutive steps is drawn by a circular block bootstrap (ceil(n/b) blocks
    of b steps from uniform starts, wrapping past the end, cut to n draws). Circular, so that every step is
    drawn equally often on average (a moving-block bootstrap under-draws the first and last b - 1 steps)."""
    import numpy as np

    b = block or block_length(n)
    starts = rng.integers(0, n, size=(reps, -(-n // b)))
    idx = ((starts[:, :, None] + np.arange(b)) % n).reshape(reps, -1)[:, :n]
    flat = (idx + n * np.arange(reps)[:, None]).ravel()
    return np.bincount(flat, minlength=reps * n).reshape(reps, n)


def block_means(runs: list, reps: int = 1000, seed: int = 0, block: int | None = None) -> list:
    """Per run (a steps x units DataFrame of shares indexed by optimizer step), reps x units replicates of its
    mean over steps, every run drawn at the SAME steps: an arm and its reference of one seed see the same
    batches at the same step, so their step noise is resampled together and cancels in their difference as it
    does in the data. The steps are those from the first to the last informative step of any run; a run's mean
    is over its own informative steps among the drawn ones (nan where none was drawn)."""
    import numpy as np

    first = min(int(r.index.min()) for r in runs)
    n = max(int(r.index.max()) for r in runs) - first + 1
    counts = block_counts(n, reps, np.random.default_rng(seed), block)
    out = []
    for r in runs:
        c = counts[:, np.asarray(r.index, int) - first].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(c @ r.to_numpy(float) / c.sum(axis=1, keepdims=True))
    return out


def _rowwise_pearson(x, y):
    """Pearson correlation of each row of y with x (nan where a row is constant)."""
    import numpy as np

    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum()) * np.sqrt((yc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / den


def bootstrap_top_share(steps, top: float = 0.3, reps: int = 1000, seed: int = 0):
    """Replicates (array of `reps`) of the share carried by the top `top` fraction of units in one run
    (steps x units DataFrame): the measurement noise of its mean share map (block bootstrap over steps)."""
    import numpy as np

    means = block_means([steps], reps, seed)[0]
    k = max(1, math.ceil(top * means.shape[1]))
    return -np.sort(-means, axis=1)[:, :k].sum(axis=1)


def bootstrap_shift_corr(arm_steps, ref_steps, ranks, reps: int = 1000, seed: int = 0) -> dict:
    """Fisher-z replicates of the rank-vs-shift correlation of one seed: {"pearson": array, "spearman": array}
    of `reps` (nan where a replicate's shift is constant). `arm_steps` and `ref_steps` are the (steps x units)
    share DataFrames of the arm and its reference run of that seed, resampled at the same steps (`block_means`);
    `ranks` the arm's rank per unit. None for both where the correlation is undefined (fewer than 3 units,
    constant ranks)."""
    import numpy as np
    from scipy.stats import rankdata

    ranks = np.asarray(ranks, float)
    if len(ranks) < 3 or np.ptp(ranks) == 0:
        return {"pearson": None, "spearman": None}
    arm, ref = block_means([arm_steps[ref_steps.columns], ref_steps], reps, seed)
    shift = arm - ref
    out = {}
    for name, x, y in (("pearson", ranks, shift), ("spearman", rankdata(ranks), rankdata(shift, axis=1))):
        r = _rowwise_pearson(x, y)
        out[name] = np.arctanh(np.clip(r, -R_CLIP, R_CLIP))
    return out


def fisher_measurement_ci(rs: list, z_reps: list, level: float = 0.95) -> list[float] | None:
    """Measurement-noise interval of the Fisher-combined correlation of `rs` (one per seed): each replicate
    combines the seeds' bootstrap z (`bootstrap_shift_corr`, independent runs) as the estimate combines
    theirs; the estimate +- z * SD of those replicates, on z, back-transformed."""
    import numpy as np

    if not rs:
        return None
    z = float(np.arctanh(np.clip(np.asarray(rs, float), -R_CLIP, R_CLIP)).mean())
    ci = normal_ci(z, np.mean(np.stack(z_reps), axis=0), level)  # a replicate undefined on any seed is dropped
    return None if ci is None else [float(np.tanh(ci[0])), float(np.tanh(ci[1]))]
