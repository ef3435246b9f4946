"""The gradient log contract (`grad_norms.parquet`) and the share statistics derived from it.

Long format, one row per (step, layer, module, matrix): step int32, layer int16, module str,
matrix, rank int16, grad_norm float32 (pre-clip L2 norm of that matrix's gradient). Matrices:
  'A', 'B'  a LoRA adapter's matrices (rank = the module's r); 'E' AdaLoRA's singular values;
  'G'       the full-weight gradient dL/dW of a LoRA-adapted projection (rank = its r), logged on the
            steps `--weight-grad-every` samples (`lorarank.training.weightgrad`);
  'W'       a full-parameter run's weight gradient (rank 0), e.g. the tiny model's SFT warm-up.

The metrics (`lorarank.training.gradmetrics`: lora, lora_normalised, weight) each read some of these matrices.
The norm of a unit (a layer, or a (layer, module) pair) at a step is sqrt(sum of squared norms over
the unit's matrices of the metric); its share is that norm divided by the sum over all units at that
step, averaged over steps. Steps whose gradients are all zero (or, for `weight`, not sampled) carry
no information about shares and are skipped; step 1's A gradients are exactly 0 because B starts at
zero, which is fine: B's norms still carry that step.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from lorarank.errors import UserError
from lorarank.io import read_parquet, typed
from lorarank.training.gradmetrics import METRICS, readable

MATRICES = ("A", "B", "E", "G", "W")
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
    df = typed(df, SCHEMA, f"gradient log {name!r}")
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
    return readable(df["matrix"].unique())


def select(df: pd.DataFrame, metric: str = "lora", alpha_policy: dict | None = None, name: str = "gradient log"):
    """The rows of `metric`, each norm divided by the metric's normaliser where it has one."""
    if metric not in METRICS:
        raise UserError(f"gradient metric {metric!r} is unknown (allowed: {', '.join(METRICS)})")
    spec = METRICS[metric]
    rows = df[df["matrix"].isin(spec.matrices)]
    if rows.empty:
        raise UserError(f"{name} has no {spec.lacks}: the {metric} metric cannot be computed from it")
    if spec.normaliser is not None:
        if alpha_policy is None:
            raise UserError(f"the {metric} metric of {name} needs the run's alpha policy")
        factor = {int(r): spec.normaliser(alpha_policy, int(r)) for r in rows["rank"].unique()}
        rows = rows.assign(grad_norm=rows["grad_norm"].astype(np.float64) / rows["rank"].map(factor).astype(np.float64))
    return rows


def unit_norms(df: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Norm per step (rows) and unit (columns): sqrt of summed squared norms (of the rows given:
    `select` them by metric first)."""
    keys = ["layer"] if by == "layer" else ["layer", "module"]
    sq = df.assign(sq=df["grad_norm"].astype(np.float64) ** 2)
    table = sq.pivot_table(index="step", columns=keys, values="sq", aggfunc="sum", fill_value=0.0)
    return np.sqrt(table.sort_index(axis=0).sort_index(axis=1))


def step_shares(df: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Share per unit (columns) at every step that has any gradient at all (rows)."""
    norms = unit_norms(df, by)
    totals = norms.sum(axis=1)
    informative = totals > 0
    return norms[informative].div(totals[informative], axis=0)


def shares(df: pd.DataFrame, by: str = "layer") -> pd.Series:
    """Per-unit share of the summed norms, averaged over the steps that have any gradient at all."""
    per_step = step_shares(df, by)
    if per_step.empty:
        raise UserError("gradient log has all-zero gradients at every step: no share can be computed")
    return per_step.mean(axis=0)
