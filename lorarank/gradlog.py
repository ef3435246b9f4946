"""The gradient log contract (`grad_norms.parquet`) and the share statistics derived from it.

Long format, one row per (step, layer, module, matrix): step int32, layer int16, module str,
matrix, rank int16, grad_norm float32 (pre-clip L2 norm of that matrix's gradient). Matrices:
  'A', 'B'  a LoRA adapter's matrices (rank = the module's r); 'E' AdaLoRA's singular values;
  'G'       the full-weight gradient dL/dW of a LoRA-adapted projection (rank = its r), logged on the
            steps `--weight-grad-every` samples (`lorarank.weightgrad`);
  'W'       a full-parameter run's weight gradient (rank 0), e.g. the tiny model's SFT warm-up.

Three importance metrics (DESIGN.md, "The instrument's blind spot"):
  lora             the study's: the A/B (and E) norms as logged. They carry a factor ~ s sqrt(r) (s the
                   LoRA scaling) whatever the loss wants: sqrt(r) under alpha = k r, 1/sqrt(r) under a
                   constant alpha, flat under rsLoRA.
  lora_normalised  each A/B/E norm divided by that mechanical factor s sqrt(r) (needs the alpha policy).
  weight           the norm of G (or W): rank-neutral, what the loss asks of the weights themselves.
Importance of a unit (a layer, or a (layer, module) pair) at a step is sqrt(sum of squared norms over
the unit's matrices of the metric); its share is importance divided by the sum over all units at that
step, averaged over steps. Steps whose gradients are all zero (or, for `weight`, not sampled) carry
no information about shares and are skipped; step 1's A gradients are exactly 0 because B starts at
zero, which is fine: B's norms still carry that step.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from lorarank.errors import UserError
from lorarank.io import read_parquet

MATRICES = ("A", "B", "E", "G", "W")
METRICS = ("lora", "lora_normalised", "weight")
METRIC_MATRICES = {"lora": ("A", "B", "E"), "lora_normalised": ("A", "B", "E"), "weight": ("G", "W")}
SCHEMA = {
    "step": "int32",
    "layer": "int16",
    "module": "object",
    "matrix": "object",
    "rank": "int16",
    "grad_norm": "float32",
}


def read(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a gradient log; any violation is a one-line UserError naming it."""
    return validate(read_parquet(path, "gradient log"), str(path))


def validate(df: pd.DataFrame, name: str = "gradient log") -> pd.DataFrame:
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise UserError(f"gradient log {name!r} lacks column(s) {', '.join(missing)} (required: {', '.join(SCHEMA)})")
    if df.empty:
        raise UserError(f"gradient log {name!r} has no rows")
    bad = set(df["matrix"].unique()) - set(MATRICES)
    if bad:
        raise UserError(f"gradient log {name!r} has matrix value(s) {sorted(map(str, bad))} "
                        f"(allowed: {', '.join(repr(m) for m in MATRICES)})")
    norms = df["grad_norm"].to_numpy(dtype=np.float64)
    if not np.isfinite(norms).all():
        row = df.iloc[int(np.flatnonzero(~np.isfinite(norms))[0])]
        raise UserError(
            f"gradient log {name!r} has a non-finite grad_norm ({row['grad_norm']}) at step {row['step']}, "
            f"layer {row['layer']}, module {row['module']}, matrix {row['matrix']} (norms must be finite)"
        )
    if (norms < 0).any():
        raise UserError(f"gradient log {name!r} has negative grad_norm values (norms are >= 0)")
    return df.astype(SCHEMA)


def num_layers(df: pd.DataFrame) -> int:
    """Number of layers the log covers; the layers present must be exactly 0..N-1."""
    layers = sorted(int(x) for x in df["layer"].unique())
    if layers != list(range(len(layers))):
        raise UserError(f"gradient log has layers {layers[:5]}... that are not 0..N-1 without gaps")
    return len(layers)


def metrics(df: pd.DataFrame) -> list[str]:
    """The metrics this log can give (a full-weight run only `weight`; a LoRA run without G rows no `weight`)."""
    have = set(df["matrix"].unique())
    return [m for m in METRICS if have & set(METRIC_MATRICES[m])]


def select(df: pd.DataFrame, metric: str = "lora", alpha_policy: dict | None = None, name: str = "gradient log"):
    """The rows of `metric`, with lora_normalised norms divided by s sqrt(r)."""
    if metric not in METRICS:
        raise UserError(f"importance metric {metric!r} is unknown (allowed: {', '.join(METRICS)})")
    rows = df[df["matrix"].isin(METRIC_MATRICES[metric])]
    if rows.empty:
        need = "'G' rows (a LoRA run profiled with --weight-grad-every)" if metric == "weight" else "'A'/'B' rows"
        raise UserError(f"{name} has no {need}: the {metric} metric cannot be computed from it")
    if metric == "lora_normalised":
        from lorarank.study import scaling

        if alpha_policy is None:
            raise UserError(f"the lora_normalised metric of {name} needs the run's alpha policy")
        factor = {int(r): scaling(alpha_policy, int(r)) * np.sqrt(int(r)) for r in rows["rank"].unique()}
        rows = rows.assign(grad_norm=rows["grad_norm"].astype(np.float64) / rows["rank"].map(factor).astype(np.float64))
    return rows


def importance(df: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Importance per step (rows) and unit (columns): sqrt of summed squared norms (of the rows given:
    `select` them by metric first)."""
    keys = ["layer"] if by == "layer" else ["layer", "module"]
    sq = df.assign(sq=df["grad_norm"].astype(np.float64) ** 2)
    table = sq.pivot_table(index="step", columns=keys, values="sq", aggfunc="sum", fill_value=0.0)
    return np.sqrt(table.sort_index(axis=0).sort_index(axis=1))


def step_shares(df: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Share per unit (columns) at every step that has any gradient at all (rows)."""
    imp = importance(df, by)
    totals = imp.sum(axis=1)
    informative = totals > 0
    return imp[informative].div(totals[informative], axis=0)


def shares(df: pd.DataFrame, by: str = "layer") -> pd.Series:
    """Per-unit share of importance, averaged over the steps that have any gradient at all."""
    per_step = step_shares(df, by)
    if per_step.empty:
        raise UserError("gradient log has all-zero gradients at every step: no share can be computed")
    return per_step.mean(axis=0)
