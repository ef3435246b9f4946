"""The gradient log contract (`grad_norms.parquet`) and the share statistics derived from it.

Long format, one row per (step, layer, module, matrix): step int32, layer int16, module str,
matrix 'A'|'B', rank int16, grad_norm float32 (pre-clip L2 norm of that LoRA matrix's gradient).
Full-parameter runs (the tiny model's SFT warm-up) log the projection's whole weight as matrix 'W'
with rank 0, so the same share statistics apply to them.

Importance of a unit (a layer, or a (layer, module) pair) at a step is
sqrt(sum of squared grad_norm over the unit's matrices); its share is importance divided by the
sum over all units at that step, averaged over steps. Steps whose gradients are all zero carry
no information about shares and are skipped (they would divide by zero); step 1's A gradients are
exactly 0 because B starts at zero, which is fine: B's norms still carry that step.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from lorarank.errors import UserError

MATRICES = ("A", "B", "W")
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
    if not os.path.isfile(path):
        raise UserError(f"gradient log {str(path)!r} does not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a non-parquet file
        raise UserError(f"gradient log {str(path)!r} is not a readable parquet file: {e}") from None
    return validate(df, str(path))


def validate(df: pd.DataFrame, name: str = "gradient log") -> pd.DataFrame:
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise UserError(f"gradient log {name!r} lacks column(s) {', '.join(missing)} (required: {', '.join(SCHEMA)})")
    if df.empty:
        raise UserError(f"gradient log {name!r} has no rows")
    bad = set(df["matrix"].unique()) - set(MATRICES)
    if bad:
        raise UserError(f"gradient log {name!r} has matrix value(s) {sorted(map(str, bad))} (allowed: 'A', 'B', 'W')")
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


def importance(df: pd.DataFrame, by: str = "layer") -> pd.DataFrame:
    """Importance per step (rows) and unit (columns): sqrt of summed squared norms."""
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
