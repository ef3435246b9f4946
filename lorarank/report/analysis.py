"""Gradient statistics of the study, on every gradient metric (`lorarank.training.gradmetrics`: lora, lora_normalised,
weight), from each run's gradient log, its run.json (what a log is comes from there, never its path), its
trainer log, and an adalora run's rank log: every file named on the command line (`--run`).

Per run and metric: per-layer shares, hottest and coldest layer, max/min ratio, the share carried by the
top 30% of layers, and the early-vs-late Pearson correlation of the share map (mean share over the first
vs the last `window` fraction of steps). Per non-uniform arm and metric, against the uniform arm of its
regime and alpha policy, seed by seed: Pearson and Spearman correlation between each layer's allocated
rank and the shift of its share (the study's "amplification": 0.972 random, 0.946 proportional), and the
widening of max/min.

Uncertainty has the run (seed) as its unit. Per-seed correlations are combined by Fisher z (tanh of the mean
atanh r) with a t interval of the z across seeds (`*_ci95`; None with one seed); per-seed top-30% shares by
their mean with a t interval, and SFT minus GRPO by a Welch interval. Within a run, steps are a dependent
series sharing the reference's data order: a circular block bootstrap over steps, drawing the same steps for
an arm and its reference, gives `*_measurement_ci95`, how precisely the runs at hand were measured, never what
another seed would do. Statistics of fewer than MIN_INFORMATIVE_STEPS informative steps get `few_steps: true`
and the findings do not interpret them.

The mechanical prediction of each arm: the uniform run's `lora` importance of every (layer, module)
times that module's mechanical factor s_arm sqrt(r_arm) / (s_uni sqrt(r_uni)) (`study.AlphaPolicy.scaling`: alpha/r,
or alpha/sqrt(r) with rsLoRA), renormalised per step into shares. It is what the `lora` shares would do
if the loss asked nothing new of any layer; `explained` = 1 - sum (observed - predicted shift)^2 / sum
observed shift^2 is the fraction of the observed `lora` shift it accounts for (1: all mechanics; 0: none).

An AdaLoRA run (strategy adalora, `lorarank.training.adalora`) also gets its rank trajectory from its rank log
(ranks.parquet): total rank against the budget at each reallocation, the final ranks per layer and per
projection type, and the parameters they cost. Its rank moves during the run, so it has no rank-vs-shift
statistic; its frozen result (adalora-final) is a static arm and has one.

A statistic undefined on the data (max/min with a zero-share layer, a correlation of a constant vector,
early-vs-late with a single step) is null, with the reason in `notes`, never a crash.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from lorarank.allocation.strategies import DYNAMIC
from lorarank.errors import UserError
from lorarank.study import Arm, arm_key, read_record
from lorarank.training import gradlog, ranklog
from lorarank.training.gradmetrics import HEATMAPS, METRICS, heatmap_file, mechanical_factor
from lorarank.training.regimes import WARMUP, signal

DEFINITION = ("share = sqrt(sum of squared gradient norms of a layer's matrices of the metric) / sum over layers, "
              "averaged over steps; metrics: " + ", ".join(f"{m.name} ({m.gloss})" for m in METRICS.values())
              + "; amplification = correlation of allocated rank with share - uniform share")


FLAT = 1e-6  # shares come from float32 norms: differences below this are rounding, not signal
# A mean share over fewer steps is a handful of batches (a GRPO run can have most steps without any gradient):
# its statistics are reported, flagged `few_steps`, and not interpreted (issue 25)
MIN_INFORMATIVE_STEPS = 10


def _corr(x, y, notes: list, what: str, method: str = "pearson") -> float | None:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) < FLAT:
        notes.append(f"{what}: undefined ({'fewer than 3 layers' if len(x) < 3 else 'a constant vector'})")
        return None
    if method == "spearman":
        from scipy.stats import spearmanr

        return float(spearmanr(x, y).statistic)
    return float(np.corrcoef(x, y)[0, 1])


def run_stats(per_step: pd.DataFrame, window: float = 0.1, top: float = 0.3) -> dict:
    """Statistics of one run's share map (`gradlog.step_shares` of one metric)."""
    notes: list[str] = []
    if per_step.empty:
        raise UserError("a gradient log has all-zero gradients at every step: no share can be computed")
    s = per_step.mean(axis=0).to_numpy()
    layers = [int(l) for l in per_step.columns]
    k = max(1, math.ceil(top * len(s)))
    out = {
        "informative_steps": int(len(per_step)),
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


def amplification(arm: dict, uniform: dict, ranks: list[float]) -> dict:
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


def module_ranks(df: pd.DataFrame) -> pd.Series:
    """(layer, module) -> rank, from the log's A rows."""
    return df[df["matrix"] == "A"].groupby(["layer", "module"])["rank"].first()


def mechanical(uniform: pd.DataFrame, uni_policy: dict, arm: pd.DataFrame, arm_policy: dict) -> pd.Series:
    """Predicted `lora` shares of the arm: the uniform run's module norms times each module's
    mechanical factor s sqrt(r) relative to uniform's, renormalised per step, averaged over steps."""
    def factor(ranks: pd.Series, policy: dict) -> pd.Series:
        return ranks.map(lambda r: mechanical_factor(policy, int(r)))

    f = factor(module_ranks(arm), arm_policy) / factor(module_ranks(uniform), uni_policy)
    imp = gradlog.unit_norms(gradlog.select(uniform, "lora"), "module")
    pred = np.sqrt((imp ** 2 * f.reindex(imp.columns).to_numpy()[None, :] ** 2).T.groupby(level="layer").sum().T)
    totals = pred.sum(axis=1)
    return pred[totals > 0].div(totals[totals > 0], axis=0).mean(axis=0)


def explained(observed: list[float], predicted: list[float]) -> float | None:
    """Fraction of the observed shift the predicted shift accounts for: 1 - SS(obs - pred) / SS(obs)."""
    obs, pred = np.asarray(observed), np.asarray(predicted)
    ss = float((obs ** 2).sum())
    return None if ss == 0 else 1 - float(((obs - pred) ** 2).sum()) / ss


def trend(trainer_log: str | Path, key: str) -> dict | None:
    """The mean of `key` over the first and over the last quarter of the logged steps (None if not logged):
    whether training moved what it optimises, beyond its step-to-step noise."""
    path = Path(trainer_log)
    if not path.is_file():
        return None
    values = [r[key] for r in map(json.loads, path.read_text().splitlines()) if key in r]
    if not values:
        return None
    q = max(1, len(values) // 4)
    return {"signal": key, "steps": len(values), "first_quarter": float(np.mean(values[:q])),
            "last_quarter": float(np.mean(values[-q:]))}


def rank_trajectory(df: pd.DataFrame, adapter_info: dict) -> dict:
    """An AdaLoRA run's ranks over training (its `ranklog`) and what its final ranks cost."""
    totals = df.groupby("step").agg(total=("rank", "sum"), budget=("budget", "first"))
    step, final = ranklog.final(df)
    layers = ranklog.per_layer(df).loc[step]
    modules = df[df["step"] == step].groupby("module")["rank"].sum()
    return {"steps": [int(x) for x in totals.index], "total": [int(x) for x in totals["total"]],
            "budget": [int(x) for x in totals["budget"]], "final_step": step,
            "final_mean_rank_per_layer": {str(int(k)): float(v) for k, v in layers.items()},
            "final_rank_per_module": {str(k): int(v) for k, v in modules.items()},
            "zero_rank_matrices": sum(1 for r in final.values() if r == 0),
            "trainable_params_start": adapter_info.get("trainable_params"),
            "effective_params_final": adapter_info.get("effective_params_final")}


class RunFiles(NamedTuple):
    """The files of one run that the analysis reads, each named on its command line (`--run`)."""

    record: str  # run.json: what the run is (its identity), never its path
    grad_log: str  # grad_norms.parquet
    trainer_log: str  # trainer_log.jsonl: the training trend
    rank_log: str | None = None  # ranks.parquet: an adalora run's rank trajectory

    @classmethod
    def parse(cls, values: list[str]) -> RunFiles:
        if len(values) not in (3, 4):
            raise UserError(f"--run {' '.join(values)}: give a run's run.json, grad_norms.parquet and "
                            f"trainer_log.jsonl, and for an adalora run its ranks.parquet ({len(values)} files given)")
        for path in values:
            if not Path(path).is_file():
                raise UserError(f"--run: {path!r} does not exist")
        return cls(*values)


class Run:
    """One run's gradient log with the identity its run.json gives it, its share maps per metric computed once."""

    def __init__(self, files: RunFiles, window: float):
        grad_log = files.grad_log
        record = read_record(files.record, "run record")
        self.identity = record["identity"]
        self.key, self.seed = arm_key(self.identity), self.identity["seed"]
        self.df = gradlog.read(grad_log)
        policy = self.identity.get("alpha_policy")
        per_step = {m: gradlog.step_shares(gradlog.select(self.df, m, policy, grad_log))
                    for m in gradlog.metrics(self.df) if METRICS[m].normaliser is None or policy}
        # a GRPO run whose groups never differed in reward has zero gradients at every step: it is reported
        # (no statistic, a note) rather than failing the analysis of every other run
        self.per_step = {m: ps for m, ps in per_step.items() if not ps.empty}
        self.notes = [f"{m}: no step with a non-zero gradient (GRPO: no group's rewards ever differed); no statistic"
                      for m, ps in per_step.items() if ps.empty]
        self.stats = {m: run_stats(ps, window) for m, ps in self.per_step.items()}
        self.training = trend(files.trainer_log, signal(self.identity.get("kind")))
        if self.key.strategy == DYNAMIC and not files.rank_log:
            raise UserError(f"--run {files.record}: an adalora run needs its ranks.parquet as the fourth file")
        self.rank_log = ranklog.read(files.rank_log) if self.key.strategy == DYNAMIC else None
        self.ranks = None if self.rank_log is None else rank_trajectory(self.rank_log, record.get("adapter_info") or {})


class Pair(NamedTuple):
    """One seed of an arm and its reference run of the same seed, on one metric."""

    arm: dict  # run_stats of the arm run
    ref: dict  # run_stats of the reference run
    arm_steps: pd.DataFrame  # per-step shares (gradlog.step_shares), indexed by optimizer step
    ref_steps: pd.DataFrame
    ranks: list[float]  # the arm run's allocated rank per layer


def amplify(pairs: dict[str, Pair], reps: int, level: float = 0.95) -> dict:
    """Amplification of one arm on one metric, per seed (`amplification`) and across seeds: Fisher-z combined
    Pearson and Spearman r with a t interval across seeds (`*_ci95`, None with one seed), and the measurement
    noise of the same estimate from a block bootstrap over steps (`*_measurement_ci95`, per seed and combined)."""
    from lorarank.report.stats import bootstrap_shift_corr, fisher_ci, fisher_measurement_ci

    per_seed = {s: amplification(p.arm, p.ref, p.ranks) for s, p in pairs.items()}
    boot = {s: bootstrap_shift_corr(p.arm_steps, p.ref_steps, p.ranks, reps=reps, seed=i)
            for i, (s, p) in enumerate(pairs.items())}
    out: dict = {"per_seed": per_seed}
    for method in ("pearson", "spearman"):
        key = f"rank_vs_shift_{method}"
        defined = [s for s, v in per_seed.items() if v[key] is not None]
        for s, v in per_seed.items():
            v[f"{method}_measurement_ci95"] = (
                fisher_measurement_ci([v[key]], [boot[s][method]], level) if s in defined else None)
        rs = [per_seed[s][key] for s in defined]
        point, ci = fisher_ci(rs, level) if rs else (None, None)
        out.update({key: point, f"{method}_ci95": ci,
                    f"{method}_measurement_ci95": fisher_measurement_ci(rs, [boot[s][method] for s in defined], level)})
    widening = [v["max_min_widening"] for v in per_seed.values() if v["max_min_widening"] is not None]
    steps = min(min(p.arm["informative_steps"], p.ref["informative_steps"]) for p in pairs.values())
    out.update({"max_min_widening": float(np.mean(widening)) if widening else None, "informative_steps": steps,
                "few_steps": steps < MIN_INFORMATIVE_STEPS})
    return out


def compare(runs: list[Run], uniform: list[Run], reps: int) -> dict:
    """An arm against its uniform arm, seed by seed and across seeds, on every metric both have."""
    by_seed = {u.seed: u for u in uniform}
    pairs = [(r, by_seed[r.seed]) for r in runs if r.seed in by_seed]
    if not pairs:
        return {"notes": ["no uniform run of the same seed to compare with"]}
    # each seed's own ranks: with per-seed profiles the seeds of an arm need not share them
    ranks = {str(r.seed): layer_ranks(r.df) for r, _ in pairs}
    first = ranks[str(pairs[0][0].seed)]
    out: dict = {"ranks": dict(zip(map(str, range(len(first))), first)), "metrics": {}}
    for metric in [m for m in METRICS if all(m in r.per_step and m in u.per_step for r, u in pairs)]:
        out["metrics"][metric] = amplify({str(r.seed): Pair(r.stats[metric], u.stats[metric], r.per_step[metric],
                                                            u.per_step[metric], ranks[str(r.seed)])
                                          for r, u in pairs}, reps)
    if "lora" in out["metrics"]:
        mech = {}
        for r, u in pairs:
            pred = mechanical(u.df, u.identity["alpha_policy"], r.df, r.identity["alpha_policy"])
            layers = sorted(u.stats["lora"]["shares"], key=int)
            uni = np.array([u.stats["lora"]["shares"][l] for l in layers])
            obs = np.array([r.stats["lora"]["shares"][l] for l in layers])
            pshift = pred.reindex([int(l) for l in layers]).to_numpy() - uni
            mech[str(r.seed)] = {"predicted_shift": dict(zip(layers, map(float, pshift))),
                                 "explained": explained(obs - uni, pshift)}
        ex = [v["explained"] for v in mech.values() if v["explained"] is not None]
        out["mechanical"] = {"per_seed": mech, "explained": float(np.mean(ex)) if ex else None}
    return out


def concentration(runs: list[Run], metric: str, reps: int, seed: int = 0) -> dict:
    """How concentrated one arm's gradients are on a metric: seed means, the top-30% share per seed with a
    t interval across seeds and its measurement noise (block bootstrap over steps); its `samples` (the
    bootstrap replicates of the seed mean, not written) let two arms be compared."""
    from lorarank.report.stats import bootstrap_top_share, normal_ci, t_ci

    stats = [r.stats[metric] for r in runs]
    per_seed = {str(r.seed): s["top_30pct_share"] for r, s in zip(runs, stats)}
    samples = np.mean([bootstrap_top_share(r.per_step[metric], reps=reps, seed=seed + i)
                       for i, r in enumerate(runs)], axis=0)

    def mean(key):
        vals = [s[key] for s in stats if s[key] is not None]
        return float(np.mean(vals)) if vals else None

    top = mean("top_30pct_share")
    measured = normal_ci(top, samples)
    steps = min(s["informative_steps"] for s in stats)
    shares = np.mean([[s["shares"][l] for l in sorted(s["shares"], key=int)] for s in stats], axis=0)
    return {"seeds": [r.seed for r in runs], "max_min_ratio": mean("max_min_ratio"),
            "top_30pct_share": top, "top_30pct_share_per_seed": per_seed,
            "top_30pct_share_ci95": t_ci(list(per_seed.values())),
            "top_30pct_share_measurement_ci95": None if measured is None else [max(0.0, measured[0]),
                                                                               min(1.0, measured[1])],
            "informative_steps": steps, "few_steps": steps < MIN_INFORMATIVE_STEPS,
            "early_late_corr": mean("early_late_corr"), "shares": dict(zip(map(str, range(len(shares))), shares)),
            "samples": samples}


def contrast(arms: dict, reps: int) -> dict:
    """The study's contrast: each regime's uniform arm (under the first alpha policy) and the full-weight
    warm-up, side by side on every metric, and SFT minus GRPO top-30% share with a Welch interval across the
    two regimes' seeds and its measurement noise."""
    from lorarank.report.stats import normal_ci, welch_ci

    policies = [k.policy for k in arms if k.strategy == "uniform"]
    out: dict = {"alpha_policy": policies[0] if policies else None, "regimes": {}, "sft_minus_grpo_top_30pct": {}}
    chosen = [(key, runs) for key, runs in arms.items()
              if (key.strategy == "uniform" and key.policy == out["alpha_policy"]) or key.regime == WARMUP]
    for j, (key, runs) in enumerate(chosen):  # distinct bootstrap streams: different regimes are different runs
        out["regimes"][key.regime] = {m: concentration(runs, m, reps, seed=1000 * j) for m in METRICS
                                      if all(m in r.per_step for r in runs)}
    grpo, sft = out["regimes"].get("grpo", {}), out["regimes"].get("sft", {})
    for metric in [m for m in METRICS if m in grpo and m in sft]:
        s, g = sft[metric], grpo[metric]
        diff = s["top_30pct_share"] - g["top_30pct_share"]
        steps = min(s["informative_steps"], g["informative_steps"])
        out["sft_minus_grpo_top_30pct"][metric] = {
            "diff": diff, "ci95": welch_ci(list(s["top_30pct_share_per_seed"].values()),
                                           list(g["top_30pct_share_per_seed"].values())),
            "measurement_ci95": normal_ci(diff, s["samples"] - g["samples"]),
            "informative_steps": steps, "few_steps": steps < MIN_INFORMATIVE_STEPS}
    for regime in out["regimes"].values():
        for m in regime.values():
            del m["samples"]
    return out


def analyze(run_files: list[RunFiles], window: float, reps: int = 1000) -> tuple[dict, dict, dict]:
    """(gradient_stats document, per-step shares per (arm, metric) of each arm's first seed for the heatmaps,
    rank trajectories (steps x layers) of each AdaLoRA arm's first seed)."""
    runs = [Run(f, window) for f in run_files]
    arms: dict[Arm, list[Run]] = {}
    for r in runs:
        arms.setdefault(r.key, []).append(r)
    for key, rs in arms.items():
        seeds = [r.seed for r in rs]
        if len(set(seeds)) != len(seeds):
            raise UserError(f"two gradient logs are the same run: {key.name} seed {seeds}")
        rs.sort(key=lambda r: r.seed if r.seed is not None else -1)
    doc = {"definition": DEFINITION, "metrics": list(METRICS), "window": window, "bootstrap_reps": reps,
           "min_informative_steps": MIN_INFORMATIVE_STEPS,
           "runs": {f"{r.key.name}/seed{r.seed}": {"identity": r.identity, "metrics": r.stats,
                                                         "training": r.training, "notes": r.notes,
                                                         **({"ranks": r.ranks} if r.ranks else {})} for r in runs},
           "arms": {}}
    for key, rs in arms.items():
        entry = {"seeds": [r.seed for r in rs], "regime": key.regime, "strategy": key.strategy,
                 "alpha_policy": key.policy}
        ref = key.reference()
        if key.strategy == DYNAMIC:
            entry["notes"] = ["rank vs shift: undefined for ranks that move during the run (see its rank trajectory; "
                              "the adalora-final arm holds its final ranks fixed)"]
        elif key.strategy not in (None, "uniform") and ref in arms:
            entry.update(compare(rs, arms[ref], reps))
        doc["arms"][key.name] = entry
    doc["contrast"] = contrast(arms, reps)
    # every arm gets its heatmaps (the workflow expects them), empty where its first seed had no gradient
    heat = {(key.name, m): rs[0].per_step.get(m, pd.DataFrame()) for key, rs in arms.items()
            for m in HEATMAPS if m in gradlog.metrics(rs[0].df)}
    trajectories = {key.name: ranklog.per_layer(rs[0].rank_log) for key, rs in arms.items() if key.strategy == DYNAMIC}
    return doc, heat, trajectories


def configure(p) -> None:
    p.add_argument("--run", nargs="+", action="append", required=True, metavar="FILE", dest="runs",
                   help="one run's run.json (what it is), grad_norms.parquet and trainer_log.jsonl, and for an adalora "
                        "run its ranks.parquet, in that order; once per run, the warm-up's included")
    p.add_argument("--window", type=float, default=0.1, help="early/late window, fraction of steps")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="block-bootstrap replicates (over steps) for the measurement-noise intervals")
    p.add_argument("--out", required=True, help="summary directory (gradient_stats.json, figures/)")


def run(args) -> int:
    from lorarank.io import write_json
    from lorarank.report import figures

    if not 0 < args.window <= 0.5:
        raise UserError(f"--window {args.window} is outside (0, 0.5]")
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap {args.bootstrap} is below 100 replicates (too few for a 95% interval)")
    doc, heat, trajectories = analyze([RunFiles.parse(r) for r in args.runs], args.window, args.bootstrap)
    figs = Path(args.out) / "figures"
    for (arm, metric), table in heat.items():
        figures.heatmap(table, f"Gradient share per layer ({metric} metric): {arm}",
                        figs / heatmap_file(metric, arm))
    figures.amplification(doc["arms"], figs / "amplification.png")
    figures.contrast(doc["contrast"], figs / "contrast.png")
    panels: dict = {}
    for (arm, metric), table in heat.items():  # each arm's first seed
        if table.empty:
            continue
        panels.setdefault(metric, {})[arm] = {str(int(l)): float(v) for l, v in table.mean(axis=0).items()}
    figures.shares(panels, figs / "shares.png")
    if trajectories:
        figures.rank_trajectories(trajectories, figs / "ranks.png")
    write_json(Path(args.out) / "gradient_stats.json", doc)
    for name, arm in doc["arms"].items():
        for metric, m in arm.get("metrics", {}).items():
            print(f"{name} [{metric}]: rank vs shift r = {m['rank_vs_shift_pearson']}, 95% CI across seeds "
                  f"{m['pearson_ci95']}, measurement noise {m['pearson_measurement_ci95']}"
                  f"{' (too few informative steps)' if m['few_steps'] else ''}")
    return 0
