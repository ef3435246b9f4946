"""The rank log contract (`ranks.parquet`): the rank of every adapted matrix over training.

Long format, one row per (step, layer, module): step int32, layer int16, module str, rank int16,
budget int32 (the sum of ranks the allocation aimed at when the row was written). Step 0 is the
adapter as built. A static LoRA arm has step 0 only: its ranks never move. An AdaLoRA run
(`lorarank.training.adalora`) adds the live ranks (the singular values its allocator keeps) at every
reallocation, the last one at `total_step - tfinal`, after which they are frozen; its budget column
follows AdaLoRA's cubic schedule from init_r x matrices down to the target.
"""

from __future__ import annotations

import os

import pandas as pd

from lorarank.errors import UserError
from lorarank.io import read_parquet, sha256_file, typed

SCHEMA = {"step": "int32", "layer": "int16", "module": "object", "rank": "int16", "budget": "int32"}


def frame(rows: list[tuple]) -> pd.DataFrame:
    """rows of (step, layer, module, rank, budget) -> the contract's frame."""
    return pd.DataFrame(rows, columns=list(SCHEMA)).astype(SCHEMA)


def static(lora_doc: dict) -> pd.DataFrame:
    """A static adapter's log: its ranks at step 0, from the verified LoRA config."""
    total = sum(m["r"] for m in lora_doc["modules"])
    return frame([(0, m["layer"], m["module"], m["r"], total) for m in lora_doc["modules"]])


def read(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a rank log; a violation is one UserError line naming it."""
    df = read_parquet(path, "rank log")
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise UserError(f"rank log {str(path)!r} lacks column(s) {', '.join(missing)} (required: {', '.join(SCHEMA)})")
    if df.empty:
        raise UserError(f"rank log {str(path)!r} has no rows")
    df = typed(df, SCHEMA, f"rank log {str(path)!r}")
    if (df["rank"] < 0).any():
        raise UserError(f"rank log {str(path)!r} has negative ranks")
    return df


def final(df: pd.DataFrame) -> tuple[int, dict[tuple[int, str], int]]:
    """(last step, {(layer, module): rank at that step})."""
    step = int(df["step"].max())
    last = df[df["step"] == step]
    return step, {(int(r.layer), str(r.module)): int(r.rank) for r in last.itertuples()}


def final_ranks(path: str, units: list[tuple[int, str]]) -> tuple[list[int], dict]:
    """An adalora run's ranks at its last logged step, one per (layer, module) unit, and the record an
    allocation keeps of the log (the adalora-final strategy reads this)."""
    df = read(path)
    step, ranks = final(df)
    lacking = [u for u in units if u not in ranks]
    if lacking:
        raise UserError(f"rank log {path!r} has no rank for layer {lacking[0][0]} {lacking[0][1]} at its last step {step} "
                        f"(it must come from an adalora run on this model and these modules)")
    extra = sorted(set(ranks) - set(units))
    if extra:
        raise UserError(f"rank log {path!r} has ranks for layer {extra[0][0]} {extra[0][1]}, which this allocation "
                        f"does not adapt")
    if step == 0:
        raise UserError(f"rank log {path!r} holds only step 0: it is not from a finished adalora run")
    return [ranks[u] for u in units], {"path": str(path), "sha256": sha256_file(path), "step": step,
                                       "rank_total": sum(ranks.values())}


def per_layer(df: pd.DataFrame) -> pd.DataFrame:
    """Steps (rows) x layers (columns): the mean rank of the layer's matrices."""
    return df.pivot_table(index="step", columns="layer", values="rank", aggfunc="mean").sort_index()
