"""`lorarank summarize`: the study's tables, with uncertainty at the level of runs, and its verdicts.

    python -m lorarank summarize --eval results/x/eval/test/base/seed0/{metrics.json,predictions.parquet} \
        --eval results/x/eval/test/grpo/uniform/ratio/lr0.001/seed0/{metrics.json,predictions.parquet} ... \
        --selection results/x/selection/grpo/uniform/ratio.json ... \
        --gradient-stats results/x/summary/gradient_stats.json --out results/x/summary [--alpha 0.05 ...]

Inputs follow the file contracts, each named on the command line: per evaluation its `metrics.json` and
its `predictions.parquet` (`--eval`). What was evaluated (regime, strategy, alpha policy, seed; its ranks
and trainable parameters; the split) is what metrics.json records, never its path. One table per training
regime: per arm the rank range, trainable parameters, accuracy (strict and flexible) with a Wilson 95% CI
(one seed) or a t interval across seeds, and against that regime's uniform arm (same alpha policy):
- run level (the headline): per seed the paired difference on the same questions, their mean with a t
  interval and a one-sample t-test across seeds (the unit is the seed), Holm-adjusted within the regime;
  with one seed there is no run-level interval, and the report says so;
- within run (labelled as such): per seed an exact McNemar p and a paired question-bootstrap 95% CI, which
  see one run's question-level noise only.
The base model is compared with each seed of the regime's uniform arm. Arms evaluated on different
questions or splits are refused: a paired test needs the same questions. With --selection, results.md shows
each arm's validation curve and chosen rate (`lorarank.report.selection`); with --gradient-stats, the
gradient findings (`lorarank.report.findings`). The claims are judged by one declared rule
(`lorarank.report.verdicts`, flags --alpha --min-accuracy --min-share --min-correlation --power).
Outputs: results.csv, results.md, verdicts.json (each claim's per-seed values and verdict), figures/accuracy.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from lorarank.allocation.strategies import DYNAMIC, FROZEN_DYNAMIC
from lorarank.errors import UserError
from lorarank.io import atomic_path, read_json, read_parquet
from lorarank.options import add_arguments, from_args
from lorarank.report.stats import holm, mcnemar_exact, mean_ci, paired_bootstrap_ci, seed_level, wilson
from lorarank.report.verdicts import VerdictSettings, parse_per_seed, per_seed_text
from lorarank.study import Arm, arm_key, read_record
from lorarank.training.regimes import BASE, title

MODES = ("strict", "flexible")


def split_of(metrics: dict) -> str | None:
    """The split an evaluation read: as metrics.json names it, else its data file's name (test.parquet: test)."""
    if metrics.get("split"):
        return str(metrics["split"])
    path = (metrics.get("data") or {}).get("path")
    return Path(path).stem if path else None


def read_predictions(path: str) -> pd.DataFrame:
    """An evaluation's predictions.parquet, sorted by question, checked for what the tests read: a unique
    integer `idx` and boolean `correct_strict`, `correct_flexible` (one UserError line otherwise)."""
    df = read_parquet(path, "predictions")
    need = ["idx", "correct_strict", "correct_flexible"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise UserError(f"predictions {path!r} lack column(s) {', '.join(missing)} (written by `lorarank evaluate`)")
    if not pd.api.types.is_integer_dtype(df["idx"]) or df["idx"].duplicated().any():
        raise UserError(f"predictions {path!r}: idx must be whole numbers, each question once")
    for c in need[1:]:
        if not pd.api.types.is_bool_dtype(df[c]):
            raise UserError(f"predictions {path!r}: {c} holds {df[c].dtype} values (allowed: true/false)")
    return df.sort_values("idx").reset_index(drop=True)


def load_runs(evaluations: list[list[str]]) -> tuple[dict, dict, str | None]:
    """((arm, seed) -> predictions, arm -> what metrics.json says about the adapter, the split evaluated),
    from each evaluation's [metrics.json, predictions.parquet] (`--eval`)."""
    runs, info, splits = {}, {}, {}
    for files in evaluations:
        if len(files) != 2:
            raise UserError(f"--eval {' '.join(files)}: give an evaluation's metrics.json and predictions.parquet "
                            f"({len(files)} files given)")
        p, preds_path = files
        metrics = read_record(p, "metrics file")
        ident = metrics["identity"]
        if not Path(preds_path).is_file():
            raise UserError(f"--eval: {preds_path!r} does not exist (the predictions of {p!r})")
        key = arm_key(ident)
        seed = ident["seed"] if ident["seed"] is not None else metrics.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise UserError(f"metrics file {p!r} names no seed (its identity's or its own)")
        if (key, seed) in runs:
            raise UserError(f"two metrics files are {key.name} seed {seed}: {p!r} and another")
        runs[(key, seed)] = read_predictions(preds_path)
        info[key] = metrics.get("adapter_info") or {}
        if not isinstance(info[key], dict) or not isinstance(metrics.get("data") or {}, dict):
            raise UserError(f"metrics file {p!r} is malformed: its adapter_info and data must be objects")
        splits.setdefault(split_of(metrics), p)
    if len(splits) > 1:  # idx is a position within a split: two splits can share it without sharing questions
        (a, pa), (b, pb) = list(splits.items())[:2]
        raise UserError(f"--eval: {pa!r} evaluated the {a} split and {pb!r} the {b} split: one summary compares "
                        f"arms on one split")
    questions = {k: tuple(v["idx"]) for k, v in runs.items()}
    ref_key, ref = next(iter(questions.items()))
    for k, q in questions.items():
        if q != ref:
            raise UserError(f"{k[0].name} seed {k[1]} was evaluated on other questions than "
                            f"{ref_key[0].name} seed {ref_key[1]}: paired tests need the same questions "
                            f"(same evaluation n, seed and test split)")
    return runs, info, next(iter(splits))


def seeds_of(runs, key) -> list[int]:
    return sorted(seed for k, seed in runs if k == key)


def pairs_of(runs, key, ref) -> list[tuple[int, int]]:
    """(arm seed, reference seed) pairs: the same seeds; an arm with one evaluation (the base model, or an arm
    sharing no seed with its reference) against every seed of the reference."""
    seeds, ref_seeds = seeds_of(runs, key), seeds_of(runs, ref)
    if key.regime == BASE:
        return [(seeds[0], r) for r in ref_seeds]
    return [(s, s) for s in seeds if s in ref_seeds] or [(seeds[0], r) for r in ref_seeds]


def paired_vs(runs, key, ref) -> dict:
    """Against the reference arm on the same questions, per grading mode. Run level: d_s = acc(arm) −
    acc(reference) per seed s, their mean with a t interval and t-test p across seeds (`diff_*`, `p_seed_*`;
    None with one seed). Within run: per seed d_s, an exact McNemar p and a question-bootstrap CI, as
    'seed=value;...' text (`per_seed_diff_*`, `p_mcnemar_*`, `boot_ci_*`)."""
    cols = ("diff", "diff_low", "diff_high", "p_seed", "per_seed_diff", "p_mcnemar", "boot_ci")
    empty = {f"{k}_{m}": None for m in MODES for k in cols} | {"versus": None, "seeds_paired": 0}
    if ref is None or key == ref or not seeds_of(runs, ref):
        return empty
    pairs = pairs_of(runs, key, ref)
    out = {"versus": ref.name, "seeds_paired": len(pairs)}
    for mode in MODES:
        diffs, ps, cis = {}, {}, {}
        for s, r in pairs:  # keyed by the reference's seed: unique, and the arm's own seed where they pair
            a = runs[(ref, r)][f"correct_{mode}"].to_numpy()
            b = runs[(key, s)][f"correct_{mode}"].to_numpy()
            diffs[r] = float(b.mean() - a.mean())
            ps[r] = mcnemar_exact(a, b)[2]
            cis[r] = paired_bootstrap_ci(a, b)
        sl = seed_level(list(diffs.values()))
        out.update({f"diff_{mode}": sl["mean"], f"diff_low_{mode}": sl["low"], f"diff_high_{mode}": sl["high"],
                    f"p_seed_{mode}": sl["p"], f"per_seed_diff_{mode}": per_seed_text(diffs),
                    f"p_mcnemar_{mode}": per_seed_text(ps, "{:.4g}"),
                    f"boot_ci_{mode}": ";".join(f"{s}={lo:+.4f}..{hi:+.4f}" for s, (lo, hi) in cis.items())})
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
        for mode in MODES:  # several arms against their reference: Holm-adjust the run-level p within the regime
            col = block[f"p_seed_{mode}"]
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
    return "—" if missing(x) else f"{100 * x:.1f}"


def missing(x) -> bool:
    return x is None or (not isinstance(x, str) and pd.isna(x))


def within_run(per_seed_diff, p_mcnemar) -> str:
    """The within-run view of one comparison: per seed, Δ (McNemar p)."""
    d, p = parse_per_seed(per_seed_diff), parse_per_seed(p_mcnemar)
    return "; ".join(f"s{s} {100 * v:+.1f} (p {p[s]:.3g})" for s, v in d.items()) or "—"


def run_level(diff, low, high, seeds) -> str:
    """The run-level Δ: seed mean [t interval], or why there is no interval."""
    if missing(diff):
        return "—"
    if missing(low):
        why = "one seed: no run-level interval" if seeds < 2 else "seeds agree exactly: no t interval"
        return f"{100 * diff:+.1f} ({why})"
    return f"{100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def regime_verdict(df: pd.DataFrame, alpha: float) -> str:
    """The table's sentence: which arms differ from uniform by the run-level test, Holm-adjusted."""
    compared = df[df["seeds_paired"].fillna(0).astype(int) > 0]
    tested = compared[compared["p_seed_strict"].notna()]
    single = compared[compared["seeds_paired"].astype(int) < 2]
    sig = tested[tested["p_holm_strict"].astype(float) < alpha]
    nominal = tested[(tested["p_seed_strict"].astype(float) < alpha) & ~tested.index.isin(sig.index)]
    if compared.empty:
        return "No arm was compared with uniform (uniform was not evaluated)."
    if tested.empty and len(single) == len(compared):
        return ("One seed: no run-level interval, so no arm is tested against uniform across runs (add seeds: "
                "config `seeds`). The within-run column is one run's question-level view (exact McNemar per seed): "
                "it leaves out what another training seed would change.")
    how = (f"one-sample t-test on the per-seed paired differences, unit: the seed, strict grading, Holm-adjusted "
           f"over {len(tested)} comparisons, α = {alpha}")
    if tested.empty:
        verdict = "No arm could be tested against uniform across runs (no spread between seeds)."
    elif sig.empty:
        verdict = f"No arm differs significantly from uniform ({how}): the gaps in this table are within run-to-run noise."
    else:
        named = ", ".join(f"{r.arm} ({100 * r.diff_strict:+.1f} points vs {r.versus}, Holm p = "
                          f"{float(r.p_holm_strict):.3g})" for r in sig.itertuples())
        verdict = f"Significantly different from uniform ({how}): {named}. Every other gap is within run-to-run noise."
    if not nominal.empty:
        verdict += (" Nominally p < 0.05 but not after the correction: "
                    + ", ".join(f"{r.arm} (p = {r.p_seed_strict:.3g})" for r in nominal.itertuples()) + ".")
    if not single.empty:
        verdict += " One seed, no run-level interval: " + ", ".join(single["arm"]) + "."
    return verdict


def regime_markdown(df: pd.DataFrame, alpha: float = 0.05) -> str:
    lines = ["| arm | seeds | ranks | trainable params (AdaLoRA: start → end) | strict acc % [95% CI] | flexible acc % [95% CI] "
             "| Δ strict vs uniform, seed mean [95% t CI] | t-test p (seeds) | Holm p | within run, per seed: Δ "
             "(McNemar p) |", "|" + "---|" * 10]
    for r in df.itertuples():
        ranks = "—" if missing(r.rank_min) else (f"{int(r.rank_min)}" if r.rank_min == r.rank_max
                                                 else f"{int(r.rank_min)}–{int(r.rank_max)}")
        diff = run_level(r.diff_strict, r.diff_low_strict, r.diff_high_strict, int(r.seeds_paired or 0))
        p = "—" if missing(r.p_seed_strict) else f"{r.p_seed_strict:.3g}"
        ph = "—" if missing(r.p_holm_strict) else f"{float(r.p_holm_strict):.3g}"
        params = f"{int(r.trainable_params or 0):,}"
        if not missing(r.effective_params) and r.effective_params != r.trainable_params:
            params += f" → {int(r.effective_params):,}"
        lines.append(f"| {r.arm} | {r.seeds} | {ranks} | {params} | "
                     f"{pct(r.acc_strict)} [{pct(r.ci_low_strict)}, {pct(r.ci_high_strict)}] | "
                     f"{pct(r.acc_flexible)} [{pct(r.ci_low_flexible)}, {pct(r.ci_high_flexible)}] | {diff} | {p} | "
                     f"{ph} | {within_run(r.per_seed_diff_strict, r.p_mcnemar_strict)} |")
    return "\n".join(lines) + f"\n\n{regime_verdict(df, alpha)}\n"


def markdown(df: pd.DataFrame, alpha: float = 0.05, split: str | None = "test") -> str:
    n = int(df["n"].iloc[0])
    head = (f"Accuracy on the {split or 'evaluation (split not recorded)'} split: n = {n} questions, the same for "
            "every arm and seed. Accuracy CIs: Wilson (one seed) or a t interval across seeds. Δ vs uniform, run "
            "level: per seed the paired difference on the same questions; the seed mean with a 95% t interval and a "
            "one-sample t-test across seeds (the unit is the seed: between-run variance included), Holm-adjusted "
            "within the regime. Within run: per seed an exact McNemar p (the unit is the question; one run's view, "
            "no between-run variance); results.csv also has each seed's paired question-bootstrap 95% CI (`boot_ci_*`).\n")
    parts = [f"### {title(regime)} arms\n\n" + regime_markdown(block, alpha) for regime, block in df.groupby("regime", sort=False)]
    seeds = int(df["seeds"].max())
    note = ("One training seed per arm: the CIs cover question sampling only, not training noise, and no difference "
            "has a run-level interval; add seeds to see it." if seeds == 1 else
            f"{seeds} seeds per arm: accuracy CIs are t intervals across seeds; differences are tested across seeds "
            "(the unit is the run).")
    return head + "\n" + "\n".join(parts) + f"\n{note}\n"


def frozen_comparisons(runs) -> dict[str, dict]:
    """Each adalora arm against its own frozen result (adalora-final, same regime and policy): adalora arm name ->
    its paired comparison (`paired_vs`)."""
    out = {}
    for key in dict.fromkeys(k for k, _ in runs if k.strategy == DYNAMIC):
        frozen = Arm(key.regime, FROZEN_DYNAMIC, key.policy)
        if seeds_of(runs, frozen):
            out[key.name] = paired_vs(runs, key, frozen)
    return out


def dynamic_vs_frozen(comparisons: dict[str, dict]) -> str:
    """Does the process matter, beyond the allocation it ends with? (markdown)"""
    lines = [f"| {name} − {d['versus']} | "
             f"{run_level(d['diff_strict'], d['diff_low_strict'], d['diff_high_strict'], d['seeds_paired'])} | "
             f"{'—' if d['p_seed_strict'] is None else format(d['p_seed_strict'], '.3g')} | "
             f"{within_run(d['per_seed_diff_strict'], d['p_mcnemar_strict'])} | "
             f"{run_level(d['diff_flexible'], d['diff_low_flexible'], d['diff_high_flexible'], d['seeds_paired'])} |"
             for name, d in comparisons.items()]
    if not lines:
        return ""
    return ("\n### Dynamic vs its frozen result\n\nThe adalora arm against adalora-final, which trains the ranks "
            "AdaLoRA ended with from scratch, as a static arm (paired per seed on the same questions; run level: seed "
            "mean, t interval and t-test across seeds, not adjusted; within run: per seed exact McNemar): a gap says "
            "the process matters beyond the final allocation.\n\n"
            "| comparison | Δ strict, seed mean [95% t CI] | t-test p (seeds) | within run, per seed: Δ strict "
            "(McNemar p) | Δ flexible, seed mean [95% t CI] |\n|---|---|---|---|---|\n" + "\n".join(lines) + "\n")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", nargs=2, action="append", required=True, metavar=("METRICS", "PREDICTIONS"),
                   dest="evaluations", help="one evaluation's metrics.json (what was evaluated) and its "
                                            "predictions.parquet; once per evaluation")
    p.add_argument("--gradient-stats", help="gradient_stats.json (`lorarank analyze`): adds the gradient findings")
    p.add_argument("--selection", action="append", default=[], dest="selections", metavar="JSON",
                   help="an arm's rate selection (`lorarank select-rate`): adds its validation curve; once per arm")
    p.add_argument("--out", required=True, help="summary directory")
    add_arguments(p, VerdictSettings)


def run(args) -> int:
    from lorarank.report import selection, verdicts

    settings = from_args(VerdictSettings, args)
    settings.check()
    selections = [selection.read(p) for p in args.selections]
    runs, info, split = load_runs(args.evaluations)
    df = table(runs, info)
    frozen = frozen_comparisons(runs)
    grads = read_json(args.gradient_stats, "gradient statistics") if args.gradient_stats else None
    policy = ((grads or {}).get("contrast") or {}).get("alpha_policy") or next(
        (r.alpha_policy for r in df.itertuples() if r.strategy == "uniform"), None)
    claims = verdicts.claims(df.to_dict("records"), frozen, grads, policy, settings)
    rows, m = verdicts.judge(claims, settings)
    text = verdicts.markdown(rows, m, settings) + "\n## Accuracy\n\n" + markdown(df, settings.alpha, split)
    text += "\n" + selection.markdown(selections) if selections else ""
    if grads is not None:
        from lorarank.report.findings import contrast_markdown, dynamic_markdown, gradient_markdown, training_markdown

        text += "\n" + training_markdown(grads) + "\n" + contrast_markdown(grads, df) + "\n" + gradient_markdown(grads)
        dynamic = dynamic_markdown(grads)
        text += "\n" + dynamic + dynamic_vs_frozen(frozen) if dynamic else ""
    out = Path(args.out)
    with atomic_path(out / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "verdicts.json") as tmp:  # what `combine-bases` judges across base models
        tmp.write_text(json.dumps(verdicts.record(claims, rows, m, settings), indent=1, default=float) + "\n")
    from lorarank.report.figures import accuracies, rate_curves

    accuracies(df, out / "figures" / "accuracy.png")
    if selections:
        rate_curves(selections, out / "figures" / "selection.png")
    print(json.dumps({f"{r.regime}:{r.arm}": round(r.acc_strict, 4) for r in df.itertuples()}))
    print(json.dumps({r["claim"]: r["verdict"] for r in rows}))
    return 0
