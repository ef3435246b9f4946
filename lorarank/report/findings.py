"""The gradient findings in words and tables, from gradient_stats.json (`lorarank analyze`), for results.md.

The question they answer: after ranks are reallocated, do layers given more rank take a larger gradient
share because the loss wants them to (learning), or because a LoRA gradient norm grows with the rank
it is measured through (mechanics)? Per arm: the rank-vs-shift correlation on each metric with its
95% CI across seeds and its measurement noise, how much of the study's (`lora`) shift the mechanical prediction explains, and whether the
relation survives on the rank-neutral `weight` metric.
"""

from __future__ import annotations

from lorarank.study import mechanical_sign
from lorarank.training.gradmetrics import METRICS


def _r(x) -> str:
    return "—" if x is None else f"{x:+.2f}"


def _ci(ci) -> str:
    return "—" if not ci else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def _num(x, fmt="{:.2f}") -> str:
    return "—" if x is None else fmt.format(x)


FEW_STEPS = "too few informative steps: not interpreted"


def survives(weight: dict | None, lora: dict | None) -> str:
    """How the rank -> share relation fares on the weight metric, in words: judged on the 95% CI across seeds;
    with one seed only the measurement-noise interval exists, and the words say so."""
    if not weight or weight.get("rank_vs_shift_pearson") is None:
        return "cannot be judged on the weight metric (undefined correlation or no G rows)"
    if weight.get("few_steps"):
        return f"cannot be judged on the weight metric ({FEW_STEPS})"
    seed_ci = weight.get("pearson_ci95")
    ci = seed_ci or weight.get("pearson_measurement_ci95")
    if not ci:
        return "cannot be judged on the weight metric (no interval)"
    lo, hi = ci
    r = weight["rank_vs_shift_pearson"]
    sign = 1 if (lora or {}).get("rank_vs_shift_pearson") is None or lora["rank_vs_shift_pearson"] >= 0 else -1
    kind, scope, caveat = (("95% CI across seeds", "", "") if seed_ci else
                           ("measurement noise", " within that run", "(one seed: measurement-noise interval only) "))
    words = f"r = {_r(r)}, {kind} {_ci(ci)}"
    if lo > 0 or hi < 0:
        same = (lo > 0) == (sign > 0)
        return (f"{caveat}{'survives' if same else 'reverses'}{scope} on the rank-neutral weight metric ({words}, "
                f"excludes 0)")
    return f"{caveat}does not survive{scope} on the rank-neutral weight metric ({words}: the interval includes 0)"


def _seed_ci(m: dict, method: str) -> str:
    """The 95% CI across seeds, or why there is none."""
    r, ci = m.get(f"rank_vs_shift_{method}"), m.get(f"{method}_ci95")
    return _ci(ci) if ci or r is None else "(one seed: no CI)"


def _steps(m: dict) -> str:
    n = m.get("informative_steps")
    return "—" if n is None else f"{n} (too few: not interpreted)" if m.get("few_steps") else str(n)


def gradient_markdown(doc: dict) -> str:
    """The results.md section: amplification on three metrics with the mechanical prediction, run statistics,
    and one sentence per arm."""
    from lorarank.report.analysis import MIN_INFORMATIVE_STEPS

    least = doc.get("min_informative_steps", MIN_INFORMATIVE_STEPS)
    lines = ["## Gradient importance: mechanics or learning?", "",
             "Metrics: " + "; ".join(f"`{m.name}` = {m.words}" for m in METRICS.values()) + ". "
             "Amplification = correlation of each layer's allocated rank with its share shift against the uniform "
             "arm of the same seed. Per-seed r are combined by Fisher z (tanh of the mean atanh r); **95% CI across "
             "seeds** = t interval of the per-seed z (k − 1 df), none with one seed: the uncertainty a new seed "
             "would bring. **Measurement noise (block bootstrap over steps)** = how precisely these runs were "
             "measured: steps resampled in circular blocks of ~n^⅓ (consecutive steps are dependent), arm and "
             f"reference at the same steps (they share the data order), {doc.get('bootstrap_reps')} replicates; "
             "it says nothing about another seed. Fewer than "
             f"{least} informative steps (the fewest of the runs involved): flagged, "
             "not interpreted. The mechanical prediction multiplies the uniform run's `lora` shares by each "
             "module's s·√r relative to uniform; 'explains' = 1 − Σ(observed − predicted shift)² / Σ observed "
             "shift².", "",
             "| arm | metric | rank vs shift r [95% CI across seeds] | r: measurement noise (block bootstrap over "
             "steps) | Spearman ρ [95% CI across seeds] | seeds | informative steps | max/min widening | mechanical "
             "prediction explains |", "|" + "---|" * 9]
    header = len(lines)
    sentences = []
    for name, arm in doc["arms"].items():
        metrics = arm.get("metrics") or {}
        mech = (arm.get("mechanical") or {}).get("explained")
        for metric, m in metrics.items():
            expl = _num(mech, "{:.0%}") if metric == "lora" else ""
            lines.append(f"| {name} | {metric} | {_r(m['rank_vs_shift_pearson'])} {_seed_ci(m, 'pearson')} | "
                         f"{_ci(m.get('pearson_measurement_ci95'))} | "
                         f"{_r(m['rank_vs_shift_spearman'])} {_seed_ci(m, 'spearman')} | "
                         f"{len(m.get('per_seed') or {}) or '—'} | {_steps(m)} | "
                         f"{_num(m['max_min_widening'])} | {expl} |")
        if "lora" in metrics and metrics["lora"].get("few_steps"):
            sentences.append(f"**{name}**: {FEW_STEPS} (lora metric: {metrics['lora']['informative_steps']} "
                             f"informative steps, fewer than {least}).")
        elif "lora" in metrics:
            lo = metrics["lora"]
            ci = (f"{_ci(lo['pearson_ci95'])} across seeds" if lo.get("pearson_ci95") else
                  f"(one seed: measurement noise {_ci(lo.get('pearson_measurement_ci95'))})")
            text = (f"**{name}**: on the study's lora metric rank and share shift correlate at "
                    f"r = {_r(lo['rank_vs_shift_pearson'])} {ci}")
            if mech is not None and mech >= 0:
                text += f"; the mechanical prediction alone accounts for {mech:.0%} of that shift"
            elif mech is not None:
                text += (f"; the mechanical prediction fits it worse than no shift at all (explained = {mech:.2f}: "
                         f"the observed shift is small next to what the ranks alone would do)")
            sentences.append(text + f". The rank→share relation {survives(metrics.get('weight'), lo)}.")
    if len(lines) == header:
        lines.append("| — | — | no non-uniform arm was compared with its uniform arm | | | | | | |")
    lines += ["", *sentences, "", "| run | metric | hottest layer (share) | max/min | top-30% share | early-vs-late r |",
              "|" + "---|" * 6]
    for name, run in doc["runs"].items():
        for metric, s in run["metrics"].items():
            lines.append(f"| {name} | {metric} | {s['hottest']['layer']} ({s['hottest']['share']:.1%}) | "
                         f"{_num(s['max_min_ratio'])} | {s['top_30pct_share']:.1%} | {_num(s['early_late_corr'], '{:.3f}')} |")
        for note in run.get("notes", []):
            metric, _, text = note.partition(": ")
            lines.append(f"| {name} | {metric} | {text} | | | |")
    return "\n".join(lines) + "\n"


def training_markdown(doc: dict) -> str:
    """Did each run move what it optimises? First- vs last-quarter mean of its logged signal (GRPO: the
    correctness reward; SFT: the loss)."""
    rows = [(name, run["training"]) for name, run in doc["runs"].items() if run.get("training")]
    if not rows:
        return ""
    lines = ["## Training", "", "What each run optimises, mean over the first and the last quarter of its steps "
             "(GRPO: its total reward, format + correctness, on sampled completions; SFT: the loss).", "",
             "| run | signal | steps | first quarter | last quarter | change |", "|" + "---|" * 6]
    for name, t in rows:
        lines.append(f"| {name} | {t['signal']} | {t['steps']} | {t['first_quarter']:.3f} | {t['last_quarter']:.3f} | "
                     f"{t['last_quarter'] - t['first_quarter']:+.3f} |")
    return "\n".join(lines) + "\n"


def dynamic_markdown(doc: dict) -> str:
    """AdaLoRA runs: where the budget went, and what it cost (its budget counts ranks, not parameters)."""
    rows = [(name, run["ranks"]) for name, run in doc["runs"].items() if run.get("ranks")]
    if not rows:
        return ""
    lines = ["## Dynamic allocation (AdaLoRA)", "",
             "Total rank over all adapted matrices at the start, at the freeze (total_step − tfinal) and the budget "
             "it was pruned to (the static arms' total); the final mean rank per layer, layer 0 first; the final "
             "rank per projection type; parameters at the start and at the end. AdaLoRA's budget counts ranks: "
             "a rank costs in + out + 1 parameters (its singular value included), so an MLP rank costs several "
             "times an attention rank, and the same total rank can cost a different number of parameters. The "
             "figure `ranks.png` shows the trajectory.", "",
             "| run | total rank: start → final (budget) | freeze step | final mean rank per layer | final rank per "
             "projection | zero-rank matrices | params: start → end |", "|" + "---|" * 7]
    for name, t in rows:
        per_layer = ", ".join(f"{v:.1f}" for _, v in sorted(t["final_mean_rank_per_layer"].items(), key=lambda kv: int(kv[0])))
        per_module = ", ".join(f"{m} {r}" for m, r in t["final_rank_per_module"].items())
        params = (f"{t['trainable_params_start']:,} → {t['effective_params_final']:,}"
                  if t.get("effective_params_final") is not None else "—")
        lines.append(f"| {name} | {t['total'][0]} → {t['total'][-1]} ({t['budget'][-1]}) | {t['final_step']} | "
                     f"{per_layer} | {per_module} | {t['zero_rank_matrices']} | {params} |")
    return "\n".join(lines) + "\n"


def _ci_word(ci) -> int:
    """+1 / -1 where a CI excludes 0 above / below, 0 where it includes 0."""
    return 0 if not ci or ci[0] <= 0 <= ci[1] else (1 if ci[0] > 0 else -1)


def _accuracy_gain(acc, regime: str, policy: str | None):
    rows = acc[(acc["regime"] == regime) & (acc["strategy"] == "proportional") & (acc["alpha_policy"] == policy)]
    return None if rows.empty else rows.iloc[0]


def _gain_text(gain) -> str:
    """An accuracy row's run-level Δ (seed mean, t interval across seeds, Holm p), or why it has no interval."""
    if gain.diff_strict is None or gain.diff_strict != gain.diff_strict:  # None or NaN: no reference arm
        return "—"
    if gain.diff_low_strict is None or gain.diff_low_strict != gain.diff_low_strict:
        why = "one seed" if int(gain.seeds_paired or 0) < 2 else "seeds agree exactly"
        return f"{100 * gain.diff_strict:+.1f} ({why}: no run-level interval)"
    return (f"{100 * gain.diff_strict:+.1f} [{100 * gain.diff_low_strict:+.1f}, {100 * gain.diff_high_strict:+.1f}], "
            f"{float(gain.p_holm_strict):.3g}")


def contrast_markdown(doc: dict, acc) -> str:
    """The SFT-vs-GRPO contrast table and the paragraph that says what it supports, at the measured precision.
    `acc` is the accuracy table (`lorarank.report.summary.table`)."""
    con = doc.get("contrast") or {}
    regimes = con.get("regimes") or {}
    policy = con.get("alpha_policy")
    lines = ["## The contrast: SFT vs GRPO", "",
             f"Uniform arm of each regime (alpha policy {policy}) and the full-weight SFT warm-up, seed means; "
             "amplification and accuracy gain are the proportional arm's against that uniform arm.", "",
             "| regime | metric | max/min | top-30% share [95% CI] | early-vs-late r | amplification r [95% CI] "
             "| Δ accuracy proportional − uniform, seed mean [95% t CI], Holm p |", "|" + "---|" * 7]
    for regime, by_metric in regimes.items():
        arm = doc["arms"].get(f"{regime}/proportional/{policy}", {}).get("metrics", {})
        gain = _accuracy_gain(acc, regime, policy) if regime != "warmup" else None
        for i, (metric, m) in enumerate(by_metric.items()):
            amp = arm.get(metric, {})
            amp_text = f"{_r(amp.get('rank_vs_shift_pearson'))} {_ci(amp.get('pearson_ci95'))}" if amp else "—"
            g = "—"
            if gain is not None and i == 0:
                g = _gain_text(gain)
            ci = m["top_30pct_share_ci95"]  # across seeds: none with one seed
            span = f"[{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "(one seed)"
            lines.append(f"| {regime} | {metric} | {_num(m['max_min_ratio'])} | {m['top_30pct_share']:.1%} "
                         f"{span} | {_num(m['early_late_corr'], '{:.3f}')} | {amp_text} | {g} |")
    return "\n".join(lines) + "\n\n" + contrast_paragraph(doc, acc) + "\n"


def contrast_paragraph(doc: dict, acc) -> str:
    con = doc.get("contrast") or {}
    policy = con.get("alpha_policy")
    said = []
    diffs = con.get("sft_minus_grpo_top_30pct") or {}
    metric = "weight" if "weight" in diffs else next(iter(diffs), None)
    if metric:  # the verdict is the declared rule's (## Verdicts), not this interval's
        d = diffs[metric]
        ci = (f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d.get("ci95")
              else "(fewer than 2 seeds per regime: no run-level interval)")
        said.append(f"On the {metric} metric the LoRA-SFT uniform arm's top-30% share minus GRPO's is "
                    f"{100 * d['diff']:+.1f} points {ci}; whether that supports 'peaked under SFT, flat under GRPO' "
                    f"is judged under Verdicts (one declared rule).")
    else:
        said.append("Only one regime ran: 'peaked under SFT, flat under GRPO' needs both (config `regimes`).")
    gains = {r: _accuracy_gain(acc, r, policy) for r in ("sft", "grpo")}
    if all(g is not None for g in gains.values()):
        words = ", ".join(f"{'SFT' if r == 'sft' else 'GRPO'} {_gain_text(g)}" for r, g in gains.items())
        said.append(f"Proportional allocation against uniform (points, seed mean [95% t CI], Holm p): {words}; "
                    "'allocation helps SFT' and 'allocation hurts GRPO' are judged under Verdicts.")
    else:
        said.append("'Allocation helps SFT but not GRPO' needs a proportional arm in both regimes.")
    policies, seen = [], set()
    for name, arm in doc["arms"].items():
        if arm.get("strategy") == "proportional" and "lora" in arm.get("metrics", {}):
            m = arm["metrics"]["lora"]
            seen.add(arm["alpha_policy"])
            want, got = mechanical_sign(arm["alpha_policy"]), _ci_word(m["pearson_ci95"])  # of rank vs shift
            policies.append(f"{name}: r = {_r(m['rank_vs_shift_pearson'])} {_ci(m['pearson_ci95'])}, the mechanics "
                            f"predict {'+' if want > 0 else '−' if want < 0 else '0'}: "
                            f"{'follows' if got == want else 'does not follow'}")
    if len(seen) > 1:
        said.append("Does the amplification sign follow the alpha policy? " + "; ".join(policies) + ".")
    else:
        said.append("Only one alpha policy ran, so whether the amplification sign follows the policy (ratio +, "
                    "constant −, rsLoRA flat) is untested here: set `allocation.alpha_policies` (config/mini.yaml does).")
    return " ".join(said)
