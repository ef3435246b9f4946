"""The gradient findings in words and tables, from gradient_stats.json (`lorarank analyze`), for results.md.

The question they answer: after ranks are reallocated, do layers given more rank take a larger gradient
share because the loss wants them to (learning), or because a LoRA gradient norm grows with the rank
it is measured through (mechanics)? Per arm: the rank-vs-shift correlation on each metric with its
bootstrap CI, how much of the study's (`lora`) shift the mechanical prediction explains, and whether the
relation survives on the rank-neutral `weight` metric.
"""

from __future__ import annotations

METRIC_WORDS = {"lora": "the study's lora metric (A/B norms)",
                "lora_normalised": "the lora_normalised metric (A/B norms / s√r)",
                "weight": "the rank-neutral weight metric (full-weight gradient)"}


def _r(x) -> str:
    return "—" if x is None else f"{x:+.2f}"


def _ci(ci) -> str:
    return "—" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _num(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def survives(weight: dict | None, lora: dict | None) -> str:
    """How the rank -> share relation fares on the weight metric, in words."""
    if not weight or not weight.get("pearson_ci95") or weight.get("rank_vs_shift_pearson") is None:
        return "cannot be judged on the weight metric (undefined correlation or no G rows)"
    lo, hi = weight["pearson_ci95"]
    r = weight["rank_vs_shift_pearson"]
    sign = 1 if (lora or {}).get("rank_vs_shift_pearson") is None or lora["rank_vs_shift_pearson"] >= 0 else -1
    words = f"r = {_r(r)} {_ci(weight['pearson_ci95'])}"
    if lo > 0 or hi < 0:
        same = (lo > 0) == (sign > 0)
        return (f"{'survives' if same else 'reverses'} on the rank-neutral weight metric ({words}, CI excludes 0)")
    return f"does not survive on the rank-neutral weight metric ({words}: the CI includes 0)"


def gradient_markdown(doc: dict) -> str:
    """The results.md section: amplification on three metrics with the mechanical prediction, run statistics,
    and one sentence per arm."""
    lines = ["## Gradient importance: mechanics or learning?", "",
             "Metrics: `lora` = the study's A/B gradient norms, which carry a factor s·√r whatever the loss wants "
             "(√r under α = k·r, 1/√r under a constant α, flat under rsLoRA); `lora_normalised` = each norm ÷ s·√r; "
             "`weight` = the norm of the full-weight gradient ∂L/∂W of each adapted projection, rank-neutral. "
             "Amplification = correlation of each layer's allocated rank with its share shift against the uniform "
             f"arm (seed mean; bootstrap 95% CI over steps and seeds, {doc.get('bootstrap_reps')} replicates). The "
             "mechanical prediction multiplies the uniform run's `lora` shares by each module's s·√r relative to "
             "uniform; 'explains' = 1 − Σ(observed − predicted shift)² / Σ observed shift².", "",
             "| arm | metric | rank vs shift r [95% CI] | Spearman ρ [95% CI] | max/min widening | "
             "mechanical prediction explains |", "|" + "---|" * 6]
    sentences = []
    for name, arm in doc["arms"].items():
        metrics = arm.get("metrics") or {}
        mech = (arm.get("mechanical") or {}).get("explained")
        for metric, m in metrics.items():
            expl = _num(mech, "{:.0%}") if metric == "lora" else ""
            lines.append(f"| {name} | {metric} | {_r(m['rank_vs_shift_pearson'])} {_ci(m['pearson_ci95'])} | "
                         f"{_r(m['rank_vs_shift_spearman'])} {_ci(m['spearman_ci95'])} | "
                         f"{_num(m['max_min_widening'])} | {expl} |")
        if "lora" in metrics:
            lo = metrics["lora"]
            text = (f"**{name}**: on the study's lora metric rank and share shift correlate at "
                    f"r = {_r(lo['rank_vs_shift_pearson'])} {_ci(lo['pearson_ci95'])}")
            if mech is not None and mech >= 0:
                text += f"; the mechanical prediction alone accounts for {mech:.0%} of that shift"
            elif mech is not None:
                text += (f"; the mechanical prediction fits it worse than no shift at all (explained = {mech:.2f}: "
                         f"the observed shift is small next to what the ranks alone would do)")
            sentences.append(text + f". The rank→share relation {survives(metrics.get('weight'), lo)}.")
    if len(lines) == 9:
        lines.append("| — | — | no non-uniform arm was compared with its uniform arm | | | |")
    lines += ["", *sentences, "", "| run | metric | hottest layer (share) | max/min | top-30% share | early-vs-late r |",
              "|" + "---|" * 6]
    for name, run in doc["runs"].items():
        for metric, s in run["metrics"].items():
            lines.append(f"| {name} | {metric} | {s['hottest']['layer']} ({s['hottest']['share']:.1%}) | "
                         f"{_num(s['max_min_ratio'])} | {s['top_30pct_share']:.1%} | {_num(s['early_late_corr'], '{:.3f}')} |")
    return "\n".join(lines) + "\n"
