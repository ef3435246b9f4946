"""`lorarank summarize`: the study's table, with the uncertainty the study lacked.

    python -m lorarank summarize --metrics results/x/eval/*/seed*/metrics.json --lora results/x/lora/*.json \
        --out results/x/summary

Inputs follow the file contracts: `metrics.json` with `predictions.parquet` beside it (what was
evaluated is the identity metrics.json records, never its path), and the `lora.json` of each arm. Per arm: rank range, trainable
parameters, accuracy (strict and flexible) with a Wilson 95% CI (one seed) or a t interval across
seeds, and against uniform the paired difference on the same questions with an exact McNemar
p-value (Holm-adjusted over the arms) and a paired-bootstrap 95% CI (seed by seed, pooled over
seeds). Arms evaluated on
different questions are refused: a paired test needs the same questions.
Outputs: results.csv, results.md (which says in words whether any gap is significant) and
figures/accuracy.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lorarank.errors import UserError
from lorarank.io import atomic_path, read_json
from lorarank.stats import holm, mcnemar_exact, mean_ci, paired_bootstrap_ci, wilson
from lorarank.study import arm_of

MODES = ("strict", "flexible")


def load_runs(metrics_paths: list[str]) -> dict[tuple[str, int], pd.DataFrame]:
    """(arm, seed) -> predictions, for every metrics.json (the base model's seed is its question draw's)."""
    runs = {}
    for p in metrics_paths:
        metrics = read_json(p, "metrics file")
        if "identity" not in metrics:
            raise UserError(f"metrics file {p!r} has no identity (it predates lorarank 0.2: rerun the evaluation)")
        ident = metrics["identity"]
        preds_path = Path(p).with_name("predictions.parquet")
        if not preds_path.is_file():
            raise UserError(f"{str(preds_path)!r} is missing (it belongs beside {p!r})")
        key = (arm_of(ident), int(ident["seed"] if ident["seed"] is not None else metrics["seed"]))
        if key in runs:
            raise UserError(f"two metrics files are {key[0]} seed {key[1]}: {p!r} and another")
        runs[key] = pd.read_parquet(preds_path).sort_values("idx").reset_index(drop=True)
    questions = {k: tuple(v["idx"]) for k, v in runs.items()}
    ref_key, ref = next(iter(questions.items()))
    for k, q in questions.items():
        if q != ref:
            raise UserError(f"{k[0]} seed {k[1]} was evaluated on other questions than {ref_key[0]} seed {ref_key[1]}: "
                            f"paired tests need the same questions (same evaluation n, seed and test split)")
    return runs


def lora_info(paths: list[str]) -> dict[str, dict]:
    info = {}
    for p in paths:
        doc = read_json(p, "LoRA config")
        ranks = [m["r"] for m in doc["modules"]]
        strategy = doc.get("allocation", {}).get("strategy") or Path(p).stem
        info[strategy] = {"rank_min": min(ranks), "rank_max": max(ranks),
                          "trainable_params": doc["expected_trainable_params"]}
    return info


def table(runs, lora) -> pd.DataFrame:
    strategies = list(dict.fromkeys(s for s, _ in runs))
    rows = []
    for s in strategies:
        seeds = sorted(seed for st, seed in runs if st == s)
        li = lora.get(s, {"rank_min": None, "rank_max": None, "trainable_params": 0})
        row = {"strategy": s, "seeds": len(seeds), "rank_min": li["rank_min"], "rank_max": li["rank_max"],
               "trainable_params": li["trainable_params"], "n": len(runs[(s, seeds[0])])}
        for mode in MODES:
            accs = [runs[(s, seed)][f"correct_{mode}"].mean() for seed in seeds]
            if len(seeds) == 1:
                k = int(runs[(s, seeds[0])][f"correct_{mode}"].sum())
                lo, hi = wilson(k, row["n"])
                mean = accs[0]
            else:
                mean, lo, hi = mean_ci(accs)
            row.update({f"acc_{mode}": mean, f"ci_low_{mode}": lo, f"ci_high_{mode}": hi})
        rows.append(row | paired_vs(runs, s, seeds))
    df = pd.DataFrame(rows)
    for mode in MODES:  # several arms against one reference: Holm-adjust within each grading
        col = df[f"p_mcnemar_{mode}"]
        tested = col.notna()
        df[f"p_holm_{mode}"] = None
        if tested.any():
            df.loc[tested, f"p_holm_{mode}"] = holm([float(x) for x in col[tested]])
    return df


def paired_vs(runs, s: str, seeds: list[int], ref: str = "uniform") -> dict:
    """Paired comparison with the uniform arm on the same seeds (base: against uniform's first seed)."""
    out = {}
    ref_seeds = sorted(seed for st, seed in runs if st == ref)
    if s == ref or not ref_seeds:
        return {f"{k}_{m}": None for m in MODES for k in ("diff", "diff_low", "diff_high", "p_mcnemar")}
    pairs = [(seed, seed) for seed in seeds if seed in ref_seeds] or [(seeds[0], ref_seeds[0])]
    for mode in MODES:
        a = pd.concat([runs[(ref, r)][f"correct_{mode}"] for _, r in pairs]).to_numpy()
        b = pd.concat([runs[(s, x)][f"correct_{mode}"] for x, _ in pairs]).to_numpy()
        _, _, p = mcnemar_exact(a, b)
        lo, hi = paired_bootstrap_ci(a, b)
        out.update({f"diff_{mode}": float(b.mean() - a.mean()), f"diff_low_{mode}": lo, f"diff_high_{mode}": hi,
                    f"p_mcnemar_{mode}": p})
    return out


def pct(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{100 * x:.1f}"


def markdown(df: pd.DataFrame, alpha: float = 0.05) -> str:
    lines = ["| strategy | seeds | ranks | trainable params | strict acc % [95% CI] | flexible acc % [95% CI] "
             "| Δ strict vs uniform [95% CI] | McNemar p | Holm p |", "|" + "---|" * 9]
    for r in df.itertuples():
        ranks = "—" if pd.isna(r.rank_min) else (f"{int(r.rank_min)}" if r.rank_min == r.rank_max
                                                 else f"{int(r.rank_min)}–{int(r.rank_max)}")
        diff = "—" if r.diff_strict is None or pd.isna(r.diff_strict) else \
            f"{100 * r.diff_strict:+.1f} [{100 * r.diff_low_strict:+.1f}, {100 * r.diff_high_strict:+.1f}]"
        p = "—" if r.p_mcnemar_strict is None or pd.isna(r.p_mcnemar_strict) else f"{r.p_mcnemar_strict:.3g}"
        ph = "—" if r.p_holm_strict is None or pd.isna(r.p_holm_strict) else f"{r.p_holm_strict:.3g}"
        lines.append(f"| {r.strategy} | {r.seeds} | {ranks} | {int(r.trainable_params):,} | "
                     f"{pct(r.acc_strict)} [{pct(r.ci_low_strict)}, {pct(r.ci_high_strict)}] | "
                     f"{pct(r.acc_flexible)} [{pct(r.ci_low_flexible)}, {pct(r.ci_high_flexible)}] | {diff} | {p} | {ph} |")
    tested = df[df["p_mcnemar_strict"].notna()]
    sig = tested[tested["p_holm_strict"].astype(float) < alpha]
    nominal = tested[(tested["p_mcnemar_strict"] < alpha) & ~tested.index.isin(sig.index)]
    n = int(df["n"].iloc[0])
    if tested.empty:
        verdict = "No arm was compared with uniform (uniform was not evaluated)."
    elif sig.empty:
        verdict = (f"No arm differs significantly from uniform (exact McNemar on n = {n} paired questions, strict "
                   f"grading, Holm-adjusted over {len(tested)} comparisons, α = {alpha}): the gaps in this table "
                   f"are within noise.")
    else:
        named = ", ".join(f"{r.strategy} ({100 * r.diff_strict:+.1f} points, Holm p = {float(r.p_holm_strict):.3g})"
                          for r in sig.itertuples())
        verdict = (f"Significantly different from uniform (exact McNemar, strict grading, Holm-adjusted over "
                   f"{len(tested)} comparisons, α = {alpha}): {named}. Every other gap is within noise.")
    if not nominal.empty:
        verdict += (" Nominally p < 0.05 but not after the correction: "
                    + ", ".join(f"{r.strategy} (p = {r.p_mcnemar_strict:.3g})" for r in nominal.itertuples()) + ".")
    seeds = int(df["seeds"].max())
    note = ("One training seed per arm: the CIs cover question sampling only, not training noise; "
            "add seeds to see it." if seeds == 1 else f"{seeds} seeds per arm: accuracy CIs are t intervals across seeds.")
    return "\n".join(lines) + f"\n\n{verdict}\n\n{note}\n"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="+", required=True, help="eval/<strategy>/seed<N>/metrics.json files")
    p.add_argument("--lora", nargs="*", default=[], help="lora/<strategy>.json files (rank range, parameters)")
    p.add_argument("--out", required=True, help="summary directory")


def run(args) -> int:
    df = table(load_runs(args.metrics), lora_info(args.lora))
    out = Path(args.out)
    with atomic_path(out / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(markdown(df))
    from lorarank.figures import accuracies

    accuracies(df, out / "figures" / "accuracy.png")
    print(json.dumps({r.strategy: round(r.acc_strict, 4) for r in df.itertuples()}))
    return 0
