"""Gradient statistics of the study, from gradient logs (the `lorarank.gradlog` contract).

Per run: per-layer shares, hottest and coldest layer, max/min ratio, the share carried by the top
30% of layers, and the early-vs-late Pearson correlation of the share map (mean share over the
first vs the last `window` fraction of steps). Per non-uniform arm: Pearson and Spearman
correlation between the allocated rank of each layer and the shift of its share against the
uniform run (the study's "amplification": 0.972 random, 0.946 proportional), and the widening of
max/min against uniform. A statistic that is undefined on the data (max/min with a zero-share
layer, a correlation of a constant vector, early-vs-late with a single step) is null, with the
reason in `notes`, never a crash or a division by zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lorarank import gradlog
from lorarank.errors import UserError
from lorarank.study import arm_of


def _corr(x, y, notes: list, what: str, method: str = "pearson") -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        notes.append(f"{what}: undefined ({'fewer than 3 layers' if len(x) < 3 else 'a constant vector'})")
        return None
    if method == "spearman":
        from scipy.stats import spearmanr

        return float(spearmanr(x, y).statistic)
    return float(np.corrcoef(x, y)[0, 1])


def run_stats(df: pd.DataFrame, window: float = 0.1, top: float = 0.3) -> dict:
    notes: list[str] = []
    per_step = gradlog.step_shares(df)
    shares = per_step.mean(axis=0)
    layers = [int(l) for l in shares.index]
    s = shares.to_numpy()
    k = max(1, math.ceil(top * len(s)))
    out = {
        "steps": int(df["step"].nunique()), "informative_steps": int(len(per_step)),
        "shares": dict(zip(map(str, layers), map(float, s))),
        "hottest": {"layer": layers[int(np.argmax(s))], "share": float(s.max())},
        "coldest": {"layer": layers[int(np.argmin(s))], "share": float(s.min())},
        "max_min_ratio": float(s.max() / s.min()) if s.min() > 0 else None,
        f"top_{int(top * 100)}pct_share": float(np.sort(s)[::-1][:k].sum()),
    }
    if s.min() <= 0:
        notes.append(f"max/min: undefined, layer {out['coldest']['layer']} has a zero share")
    n = len(per_step)
    w = max(1, math.ceil(window * n))
    if n < 2:
        out["early_late_corr"] = None
        notes.append("early-vs-late: undefined with fewer than 2 informative steps")
    else:
        early, late = per_step.iloc[:w].mean(axis=0), per_step.iloc[-w:].mean(axis=0)
        out["early_late_corr"] = _corr(early, late, notes, "early-vs-late")
    out["window"] = {"fraction": window, "steps": w}
    out["notes"] = notes
    return out


def amplification(arm: dict, uniform: dict, ranks: list[int]) -> dict:
    """Correlation of allocated rank with each layer's share shift against the uniform run."""
    notes: list[str] = []
    layers = sorted(uniform["shares"], key=int)
    shift = [arm["shares"][l] - uniform["shares"][l] for l in layers]
    out = {
        "rank_vs_shift_pearson": _corr(ranks, shift, notes, "rank vs shift (Pearson)"),
        "rank_vs_shift_spearman": _corr(ranks, shift, notes, "rank vs shift (Spearman)", "spearman"),
        "ranks": dict(zip(layers, ranks)),
        "shift": dict(zip(layers, shift)),
        "max_min_widening": (arm["max_min_ratio"] / uniform["max_min_ratio"]
                             if arm["max_min_ratio"] and uniform["max_min_ratio"] else None),
    }
    out["notes"] = notes
    return out


def layer_ranks(df: pd.DataFrame) -> list[float]:
    """Allocated rank per layer as the gradient log records it (mean over modules at module granularity)."""
    lora = df[df["matrix"].isin(["A", "B"])]
    return [float(r) for r in lora.groupby("layer")["rank"].mean().sort_index()]


def read_run(grad_log: str) -> tuple[dict, pd.DataFrame]:
    """(identity, gradient log): the identity is what run.json beside the log says, never its path."""
    from lorarank.io import read_json

    record = read_json(Path(grad_log).with_name("run.json"), f"run record of {grad_log!r}")
    if "identity" not in record:
        raise UserError(f"run record beside {grad_log!r} has no identity (it predates lorarank 0.2: rerun it)")
    return record["identity"], gradlog.read(grad_log)


def analyze(grad_logs: list[str], window: float) -> tuple[dict, dict]:
    """(gradient_stats document, per-step shares per run for the heatmaps). The warm-up's log (if
    given) is the SFT side of the contrast; every LoRA run is compared with the uniform run of its seed."""
    runs, per_step, ranks, warmup = {}, {}, {}, None
    for p in grad_logs:
        ident, df = read_run(p)
        if ident["kind"] == "warmup":
            warmup = df
            continue
        key = (arm_of(ident), int(ident["seed"]))
        if key in runs:
            raise UserError(f"two gradient logs are {key[0]} seed {key[1]}: {p!r} and another")
        runs[key] = run_stats(df, window)
        per_step[key] = gradlog.step_shares(df)
        ranks[key[0]] = layer_ranks(df)
    doc = {"definition": "share = sqrt(sum of squared LoRA A/B grad norms of a layer) / sum over layers, "
                         "averaged over steps; amplification = correlation of allocated rank with share - uniform share",
           "window": window, "runs": {f"{s}/seed{seed}": v for (s, seed), v in runs.items()}, "arms": {}}
    for strategy in dict.fromkeys(s for s, _ in runs):
        seeds = sorted(seed for s, seed in runs if s == strategy)
        arm = {"seeds": seeds, "per_seed": {}}
        for seed in seeds:
            if strategy != "uniform" and ("uniform", seed) in runs:
                arm["per_seed"][str(seed)] = amplification(runs[(strategy, seed)], runs[("uniform", seed)], ranks[strategy])
        vals = [v["rank_vs_shift_pearson"] for v in arm["per_seed"].values() if v["rank_vs_shift_pearson"] is not None]
        arm["rank_vs_shift_pearson_mean"] = float(np.mean(vals)) if vals else None
        doc["arms"][strategy] = arm
    if warmup is not None:
        doc["sft"] = run_stats(warmup, window)
        per_step[("warmup", 0)] = gradlog.step_shares(warmup)
        uni = [k for k in runs if k[0] == "uniform"]
        if uni:
            g = runs[uni[0]]
            doc["sft_vs_grpo"] = {key: {"sft": doc["sft"][key], "grpo_uniform": g[key]}
                                  for key in ("top_30pct_share", "max_min_ratio", "early_late_corr")}
    else:
        doc["sft"] = None
    return doc, per_step


def configure(p) -> None:
    p.add_argument("--grad-logs", nargs="+", required=True,
                   help="grad_norms.parquet of every run (run.json beside each says what it is), the warm-up's included")
    p.add_argument("--window", type=float, default=0.1, help="early/late window, fraction of steps")
    p.add_argument("--out", required=True, help="summary directory (gradient_stats.json, figures/)")


def run(args) -> int:
    from lorarank import figures
    from lorarank.io import write_json

    if not 0 < args.window <= 0.5:
        raise UserError(f"--window {args.window} is outside (0, 0.5]")
    doc, per_step = analyze(args.grad_logs, args.window)
    out = Path(args.out)
    figs = out / "figures"
    first = {}
    for (s, seed), table in per_step.items():
        if s not in first:
            first[s] = seed
            label = "SFT warm-up" if s == "warmup" else f"GRPO, {s} arm (seed {seed})"
            figures.heatmap(table, f"Gradient share per layer over training: {label}", figs / f"heatmap_{s}.png")
    points = {}
    for s, arm in doc["arms"].items():
        if arm["per_seed"]:
            seed = next(iter(arm["per_seed"]))
            amp = arm["per_seed"][seed]
            layers = sorted(amp["shift"], key=int)
            points[s] = ([amp["ranks"][l] for l in layers], [amp["shift"][l] for l in layers], amp["rank_vs_shift_pearson"])
    figures.amplification(points, figs / "amplification.png")
    arms = {k.replace("/seed", " s"): v["shares"] for k, v in doc["runs"].items()}
    if doc["sft"]:
        arms["SFT warm-up"] = doc["sft"]["shares"]
    figures.shares(arms, figs / "shares.png")
    write_json(out / "gradient_stats.json", doc)
    u = next((v for k, v in doc["runs"].items() if k.startswith("uniform/")), None)
    if u:
        print(f"uniform: hottest layer {u['hottest']['layer']} ({u['hottest']['share']:.2%}), "
              f"max/min {u['max_min_ratio']}, top-30% {u['top_30pct_share']:.1%}")
    return 0
