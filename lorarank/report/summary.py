"""`lorarank summarize`: the study's tables, with the uncertainty the study lacked.

    python -m lorarank summarize --eval results/x/eval/base/seed0/{metrics.json,predictions.parquet} \
        --eval results/x/eval/grpo/uniform/ratio/seed0/{metrics.json,predictions.parquet} ... \
        --gradient-stats results/x/summary/gradient_stats.json --out results/x/summary

Inputs follow the file contracts, each named on the command line: per evaluation its `metrics.json` and
its `predictions.parquet` (`--eval`). What was evaluated
(regime, strategy, alpha policy, seed; its ranks and trainable parameters) is what metrics.json records,
never its path. One table per training regime: per arm the rank range, trainable parameters, accuracy
(strict and flexible) with a Wilson 95% CI (one seed) or a t interval across seeds, and against that
regime's uniform arm (same alpha policy) the paired difference on the same questions with an exact
McNemar p-value (Holm-adjusted within the regime) and a paired-bootstrap 95% CI, seed by seed and
pooled over seeds. The base model is compared with each regime's uniform arm, pooled over its seeds.
Arms evaluated on different questions are refused: a paired test needs the same questions.
With --gradient-stats, results.md also gets the gradient findings (`lorarank.report.findings`).
Outputs: results.csv, results.md (which says in words whether any gap is significant), figures/accuracy.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lorarank.allocation.strategies import DYNAMIC, FROZEN_DYNAMIC
from lorarank.errors import UserError
from lorarank.io import atomic_path, read_json
from lorarank.report.stats import holm, mcnemar_exact, mean_ci, paired_bootstrap_ci, wilson
from lorarank.study import Arm, arm_key
from lorarank.training.regimes import BASE, title

MODES = ("strict", "flexible")


def load_runs(evaluations: list[list[str]]) -> tuple[dict, dict]:
    """((arm, seed) -> predictions, arm -> what metrics.json says about the adapter), from each evaluation's
    [metrics.json, predictions.parquet] (`--eval`)."""
    runs, info = {}, {}
    for files in evaluations:
        if len(files) != 2:
            raise UserError(f"--eval {' '.join(files)}: give an evaluation's metrics.json and predictions.parquet "
                            f"({len(files)} files given)")
        p, preds_path = files
        metrics = read_json(p, "metrics file")
        if "identity" not in metrics:
            raise UserError(f"metrics file {p!r} has no identity (written before lorarank 0.2: rerun the evaluation)")
        ident = metrics["identity"]
        if not Path(preds_path).is_file():
            raise UserError(f"--eval: {preds_path!r} does not exist (the predictions of {p!r})")
        key = arm_key(ident)
        seed = int(ident["seed"] if ident["seed"] is not None else metrics["seed"])
        if (key, seed) in runs:
            raise UserError(f"two metrics files are {key.name} seed {seed}: {p!r} and another")
        runs[(key, seed)] = pd.read_parquet(preds_path).sort_values("idx").reset_index(drop=True)
        info[key] = metrics.get("adapter_info") or {}
    questions = {k: tuple(v["idx"]) for k, v in runs.items()}
    ref_key, ref = next(iter(questions.items()))
    for k, q in questions.items():
        if q != ref:
            raise UserError(f"{k[0].name} seed {k[1]} was evaluated on other questions than "
                            f"{ref_key[0].name} seed {ref_key[1]}: paired tests need the same questions "
                            f"(same evaluation n, seed and test split)")
    return runs, info


def seeds_of(runs, key) -> list[int]:
    return sorted(seed for k, seed in runs if k == key)


def paired_vs(runs, key, ref) -> dict:
    """Paired comparison with the reference arm on the same seeds, pooled; an arm with one evaluation (the
    base model) is paired with every seed of the reference."""
    empty = {f"{k}_{m}": None for m in MODES for k in ("diff", "diff_low", "diff_high", "p_mcnemar")}
    seeds, ref_seeds = seeds_of(runs, key), seeds_of(runs, ref)
    if key == ref or not ref_seeds:
        return empty | {"versus": None}
    if key.regime == BASE:  # one evaluation, no training seed: against every seed of the reference, pooled
        pairs = [(seeds[0], r) for r in ref_seeds]
    else:
        pairs = [(s, s) for s in seeds if s in ref_seeds] or [(seeds[0], r) for r in ref_seeds]
    out = {"versus": ref.name}
    for mode in MODES:
        a = pd.concat([runs[(ref, r)][f"correct_{mode}"] for _, r in pairs]).to_numpy()
        b = pd.concat([runs[(key, s)][f"correct_{mode}"] for s, _ in pairs]).to_numpy()
        _, _, p = mcnemar_exact(a, b)
        lo, hi = paired_bootstrap_ci(a, b)
        out.update({f"diff_{mode}": float(b.mean() - a.mean()), f"diff_low_{mode}": lo, f"diff_high_{mode}": hi,
                    f"p_mcnemar_{mode}": p})
    return out


def arm_row(runs, info, key, regime, ref) -> dict:
    seeds = seeds_of(runs, key)
    ai = info.get(key, {})
    row = {"regime": regime, "arm": key.name, "strategy": key.strategy or key.regime, "alpha_policy": key.policy,
           "seeds": len(seeds), "rank_min": ai.get("rank_min"), "rank_max": ai.get("rank_max"),
           "trainable_params": ai.get("trainable_params", 0),
           # AdaLoRA starts above the budget and prunes: what its adapter holds at the end
           "effective_params": ai.get("effective_params_final", ai.get("trainable_params", 0)),
           "n": len(runs[(key, seeds[0])])}
    for mode in MODES:
        accs = [runs[(key, s)][f"correct_{mode}"].mean() for s in seeds]
        if len(seeds) == 1:
            lo, hi = wilson(int(runs[(key, seeds[0])][f"correct_{mode}"].sum()), row["n"])
            mean = accs[0]
        else:
            mean, lo, hi = mean_ci(accs)
            lo, hi = max(0.0, lo), min(1.0, hi)  # an accuracy lies in [0, 1], whatever a t interval says
        row.update({f"acc_{mode}": mean, f"ci_low_{mode}": lo, f"ci_high_{mode}": hi})
    return row | paired_vs(runs, key, ref)


def table(runs, info) -> pd.DataFrame:
    """One block of rows per regime: the base model, then the regime's arms, each against its uniform arm."""
    keys = list(dict.fromkeys(k for k, _ in runs))
    base = [k for k in keys if k.regime == BASE]
    blocks = []
    for regime in dict.fromkeys(k.regime for k in keys if k.regime != BASE):
        arms = [k for k in keys if k.regime == regime]
        uniform = [k for k in arms if k.strategy == "uniform"]
        rows = [arm_row(runs, info, k, regime, uniform[0] if uniform else None) for k in base]
        rows += [arm_row(runs, info, k, regime, k.reference()) for k in arms]
        block = pd.DataFrame(rows)
        for mode in MODES:  # several arms against their reference: Holm-adjust within the regime and grading
            col = block[f"p_mcnemar_{mode}"]
            tested = col.notna()
            block[f"p_holm_{mode}"] = None
            if tested.any():
                block.loc[tested, f"p_holm_{mode}"] = holm([float(x) for x in col[tested]])
        blocks.append(block)
    if not blocks:  # only the base model was evaluated
        blocks = [pd.DataFrame([arm_row(runs, info, k, BASE, None) for k in base])]
        blocks[0]["p_holm_strict"] = blocks[0]["p_holm_flexible"] = None
    return pd.concat(blocks, ignore_index=True)


def pct(x) -> str:
    return "—" if x is None or pd.isna(x) else f"{100 * x:.1f}"


def missing(x) -> bool:
    return x is None or pd.isna(x)


def regime_markdown(df: pd.DataFrame, alpha: float = 0.05) -> str:
    lines = ["| arm | seeds | ranks | trainable params (AdaLoRA: start → end) | strict acc % [95% CI] | flexible acc % [95% CI] "
             "| Δ strict vs uniform [95% CI] | McNemar p | Holm p |", "|" + "---|" * 9]
    for r in df.itertuples():
        ranks = "—" if missing(r.rank_min) else (f"{int(r.rank_min)}" if r.rank_min == r.rank_max
                                                 else f"{int(r.rank_min)}–{int(r.rank_max)}")
        diff = "—" if missing(r.diff_strict) else \
            f"{100 * r.diff_strict:+.1f} [{100 * r.diff_low_strict:+.1f}, {100 * r.diff_high_strict:+.1f}]"
        p = "—" if missing(r.p_mcnemar_strict) else f"{r.p_mcnemar_strict:.3g}"
        ph = "—" if missing(r.p_holm_strict) else f"{float(r.p_holm_strict):.3g}"
        params = f"{int(r.trainable_params or 0):,}"
        if not missing(r.effective_params) and r.effective_params != r.trainable_params:
            params += f" → {int(r.effective_params):,}"
        lines.append(f"| {r.arm} | {r.seeds} | {ranks} | {params} | "
                     f"{pct(r.acc_strict)} [{pct(r.ci_low_strict)}, {pct(r.ci_high_strict)}] | "
                     f"{pct(r.acc_flexible)} [{pct(r.ci_low_flexible)}, {pct(r.ci_high_flexible)}] | {diff} | {p} | {ph} |")
    tested = df[df["p_mcnemar_strict"].notna()]
    sig = tested[tested["p_holm_strict"].astype(float) < alpha]
    nominal = tested[(tested["p_mcnemar_strict"].astype(float) < alpha) & ~tested.index.isin(sig.index)]
    n = int(df["n"].iloc[0])
    if tested.empty:
        verdict = "No arm was compared with uniform (uniform was not evaluated)."
    elif sig.empty:
        verdict = (f"No arm differs significantly from uniform (exact McNemar on n = {n} paired questions per seed, "
                   f"strict grading, Holm-adjusted over {len(tested)} comparisons, α = {alpha}): the gaps in this "
                   f"table are within noise.")
    else:
        named = ", ".join(f"{r.arm} ({100 * r.diff_strict:+.1f} points vs {r.versus}, Holm p = "
                          f"{float(r.p_holm_strict):.3g})" for r in sig.itertuples())
        verdict = (f"Significantly different from uniform (exact McNemar, strict grading, Holm-adjusted over "
                   f"{len(tested)} comparisons, α = {alpha}): {named}. Every other gap is within noise.")
    if not nominal.empty:
        verdict += (" Nominally p < 0.05 but not after the correction: "
                    + ", ".join(f"{r.arm} (p = {r.p_mcnemar_strict:.3g})" for r in nominal.itertuples()) + ".")
    return "\n".join(lines) + f"\n\n{verdict}\n"


def markdown(df: pd.DataFrame, alpha: float = 0.05) -> str:
    parts = []
    for regime, block in df.groupby("regime", sort=False):
        parts.append(f"### {title(regime)} arms\n\n" + regime_markdown(block, alpha))
    seeds = int(df["seeds"].max())
    note = ("One training seed per arm: the CIs cover question sampling only, not training noise; "
            "add seeds to see it." if seeds == 1 else
            f"{seeds} seeds per arm: accuracy CIs are t intervals across seeds; paired tests pool the seeds.")
    return "\n".join(parts) + f"\n{note}\n"


def dynamic_vs_frozen(runs) -> str:
    """Each adalora arm against its own frozen result (adalora-final, same regime and policy), paired on the
    same questions and seeds: does the process matter, beyond the allocation it ends with?"""
    lines = []
    for key in dict.fromkeys(k for k, _ in runs if k.strategy == DYNAMIC):
        frozen = Arm(key.regime, FROZEN_DYNAMIC, key.policy)
        if not seeds_of(runs, frozen):
            continue
        d = paired_vs(runs, key, frozen)
        lines.append(f"| {key.name} − {frozen.name} | {100 * d['diff_strict']:+.1f} "
                     f"[{100 * d['diff_low_strict']:+.1f}, {100 * d['diff_high_strict']:+.1f}] | "
                     f"{d['p_mcnemar_strict']:.3g} | {100 * d['diff_flexible']:+.1f} | {d['p_mcnemar_flexible']:.3g} |")
    if not lines:
        return ""
    return ("\n### Dynamic vs its frozen result\n\nThe adalora arm against adalora-final, which trains the ranks "
            "AdaLoRA ended with from scratch, as a static arm (paired, pooled over seeds, exact McNemar, not "
            "adjusted): a gap says the process matters beyond the final allocation.\n\n"
            "| comparison | Δ strict [95% CI] | McNemar p | Δ flexible | McNemar p |\n|---|---|---|---|---|\n"
            + "\n".join(lines) + "\n")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", nargs=2, action="append", required=True, metavar=("METRICS", "PREDICTIONS"),
                   dest="evaluations", help="one evaluation's metrics.json (what was evaluated) and its "
                                            "predictions.parquet; once per evaluation")
    p.add_argument("--gradient-stats", help="gradient_stats.json (`lorarank analyze`): adds the gradient findings")
    p.add_argument("--out", required=True, help="summary directory")


def run(args) -> int:
    runs, info = load_runs(args.evaluations)
    df = table(runs, info)
    text = "## Accuracy\n\n" + markdown(df)
    if args.gradient_stats:
        from lorarank.report.findings import contrast_markdown, dynamic_markdown, gradient_markdown, training_markdown

        grads = read_json(args.gradient_stats, "gradient statistics")
        text += "\n" + training_markdown(grads) + "\n" + contrast_markdown(grads, df) + "\n" + gradient_markdown(grads)
        dynamic = dynamic_markdown(grads)
        text += "\n" + dynamic + dynamic_vs_frozen(runs) if dynamic else ""
    out = Path(args.out)
    with atomic_path(out / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    from lorarank.report.figures import accuracies

    accuracies(df, out / "figures" / "accuracy.png")
    print(json.dumps({f"{r.regime}:{r.arm}": round(r.acc_strict, 4) for r in df.itertuples()}))
    return 0
