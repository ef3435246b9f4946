"""Accuracy statistics on synthetic prediction tables, checked against scipy/statsmodels."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from conftest import eval_args
from lorarank.report.stats import holm, mcnemar_exact, mean_ci, paired_bootstrap_ci, seed_level, wilson
from lorarank.report.verdicts import parse_per_seed


def test_wilson_matches_statsmodels():
    for k, n in [(0, 10), (3, 10), (132, 200), (200, 200), (1, 1)]:
        assert wilson(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_matches_statsmodels(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(200) < 0.6
    b = np.where(rng.random(200) < 0.15, ~a, a)
    nb, nc, p = mcnemar_exact(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert (nb, nc) == (table[0][1], table[1][0])
    assert p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)


def test_bootstrap_ci_is_seeded_and_covers_the_difference():
    rng = np.random.default_rng(0)
    a, b = rng.random(200) < 0.5, rng.random(200) < 0.6
    lo, hi = paired_bootstrap_ci(a, b)
    assert (lo, hi) == paired_bootstrap_ci(a, b)
    assert lo < b.mean() - a.mean() < hi and hi - lo < 0.25


def test_mean_ci_across_seeds():
    from scipy import stats

    m, lo, hi = mean_ci([0.60, 0.64, 0.62])
    want = stats.t.interval(0.95, 2, loc=0.62, scale=stats.sem([0.60, 0.64, 0.62]))
    assert m == pytest.approx(0.62) and (lo, hi) == pytest.approx(want)
    assert mean_ci([0.5]) == (0.5, 0.5, 0.5)


def write_eval(root, strategy, seed, correct, idx=None, regime="grpo", split="test"):
    d = root / "eval" / regime / strategy / f"seed{seed}"
    d.mkdir(parents=True)
    n = len(correct)
    idx = list(range(n)) if idx is None else idx
    pd.DataFrame({"idx": idx, "question": ["q"] * n, "gold": ["1"] * n, "completion": ["#### 1"] * n,
                  "pred_strict": ["1"] * n, "pred_flexible": ["1"] * n, "correct_strict": correct,
                  "correct_flexible": correct}).to_parquet(d / "predictions.parquet")
    from lorarank.study import run_identity

    if strategy == "base":
        ident = run_identity("base", None, None, None, {"path": "m", "sha256": "0" * 64})
    else:
        ident = run_identity(regime, strategy, {"name": "ratio", "value": 2.0}, seed, {"path": "m", "sha256": "0" * 64})
    (d / "metrics.json").write_text(json.dumps({"n": n, "seed": 0, "identity": ident,
                                                "data": {"path": f"results/x/data/{split}.parquet"}}))
    return d / "metrics.json"


def flip(correct, k, rng, to=True):
    """`correct` with k questions that are not `to` turned to `to` (a known paired difference of k)."""
    out = np.array(correct, dtype=bool)
    out[rng.choice(np.flatnonzero(out != to), size=k, replace=False)] = to
    return out


def test_one_seed_has_no_run_level_interval(cli, tmp_path):
    rng = np.random.default_rng(3)
    uni = rng.random(200) < 0.5
    same = np.where(rng.random(200) < 0.05, ~uni, uni)  # a few flips: not significant
    better = uni | (rng.random(200) < 0.5)  # many more right: significant within the run
    m = [write_eval(tmp_path, "uniform", 0, uni), write_eval(tmp_path, "random", 0, same),
         write_eval(tmp_path, "proportional", 0, better)]
    code, _, err = cli("summarize", *eval_args(*m), "--out", tmp_path / "summary")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "summary/results.csv").set_index("strategy")
    assert df.loc["uniform", "acc_strict"] == uni.mean()
    assert df.loc["proportional", "diff_strict"] == pytest.approx(better.mean() - uni.mean())
    # the within-run view is kept, per seed, and labelled; the run-level columns are empty with one seed
    assert df.loc["random", "p_mcnemar_strict"] == f"0={mcnemar_exact(uni, same)[2]:.4g}"
    assert df.loc["proportional", "boot_ci_strict"].startswith("0=+")
    for col in ("diff_low_strict", "diff_high_strict", "p_seed_strict", "p_holm_strict"):
        assert df[col].isna().all(), col
    md = (tmp_path / "summary/results.md").read_text()
    assert "Accuracy on the test split: n = 200 questions" in md
    assert "One seed: no run-level interval, so no arm is tested against uniform across runs" in md
    assert f"{100 * (better.mean() - uni.mean()):+.1f} (one seed: no run-level interval)" in md
    assert "Significantly different" not in md and "No arm differs significantly" not in md
    assert "One training seed per arm" in md
    assert "| allocation hurts GRPO | grpo/proportional/ratio − grpo/uniform/ratio" in md
    assert "inconclusive (one seed: no run-level interval)" in md and "| allocation helps SFT | — | — |" in md


def test_seeds_are_the_unit_not_extra_questions(cli, tmp_path):
    """Per seed the paired difference; across seeds a t interval and t-test. An arm that gains 12 points in one
    seed and loses 2 in the other is significant for a pooled McNemar (seeds as more questions), not across runs."""
    rng = np.random.default_rng(5)
    uni = [rng.random(200) < 0.5 for _ in range(3)]
    ups = {"proportional": [24, 20, 22], "random": [24, -4, 2]}  # paired differences in questions, per seed
    m = [write_eval(tmp_path, "uniform", s, u) for s, u in enumerate(uni)]
    arms = {name: [flip(u, abs(k), rng, to=k > 0) for u, k in zip(uni, ks)] for name, ks in ups.items()}
    m += [write_eval(tmp_path, name, s, c) for name, cs in arms.items() for s, c in enumerate(cs)]
    assert cli("summarize", *eval_args(*m), "--out", tmp_path / "s")[0] == 0
    df = pd.read_csv(tmp_path / "s/results.csv").set_index("strategy")
    for name, ks in ups.items():
        d = np.array(ks) / 200
        want = stats.ttest_1samp(d, 0)
        lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
        row = df.loc[name]
        assert row["diff_strict"] == pytest.approx(d.mean()) and row["p_seed_strict"] == pytest.approx(want.pvalue)
        assert (row["diff_low_strict"], row["diff_high_strict"]) == pytest.approx((lo, hi))
        assert parse_per_seed(row["per_seed_diff_strict"]) == pytest.approx({str(s): v for s, v in enumerate(d)})
        assert row["seeds_paired"] == 3
    assert mcnemar_exact(np.concatenate(uni), np.concatenate(arms["random"]))[2] < 0.05  # what the old test said
    assert df.loc["random", "p_seed_strict"] > 0.3
    holm_want = holm([df.loc["proportional", "p_seed_strict"], df.loc["random", "p_seed_strict"]])
    assert [df.loc["proportional", "p_holm_strict"], df.loc["random", "p_holm_strict"]] == pytest.approx(holm_want)
    md = (tmp_path / "s/results.md").read_text()
    assert "Significantly different from uniform (one-sample t-test on the per-seed paired differences, unit: the seed" in md
    assert "grpo/proportional/ratio (+11.0 points" in md.split("Significantly")[1].split("Every other")[0]
    assert "3 seeds per arm" in md and df.loc["random", "ci_low_strict"] < df.loc["random", "acc_strict"]


def test_not_significant_is_said_in_words(cli, tmp_path):
    rng = np.random.default_rng(2)
    uni = [rng.random(100) < 0.5 for _ in range(2)]
    m = [write_eval(tmp_path, "uniform", s, u) for s, u in enumerate(uni)]
    m += [write_eval(tmp_path, "random", s, flip(u, abs(k), rng, to=k > 0)) for s, (u, k) in enumerate(zip(uni, [3, -2]))]
    assert cli("summarize", *eval_args(*m), "--out", tmp_path / "s")[0] == 0
    md = (tmp_path / "s/results.md").read_text()
    assert "No arm differs significantly from uniform (one-sample t-test" in md


def test_different_questions_are_refused(cli, tmp_path):
    m = [write_eval(tmp_path, "uniform", 0, [True, False, True]),
         write_eval(tmp_path, "random", 0, [True, True, False], idx=[0, 1, 5])]
    code, _, err = cli("summarize", *eval_args(*m), "--out", tmp_path / "s")
    assert code == 2 and "paired tests need the same questions" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_different_splits_are_refused(cli, tmp_path):
    """idx is a position within a split: a validation and a test evaluation can share it."""
    m = [write_eval(tmp_path, "uniform", 0, [True, False, True]),
         write_eval(tmp_path, "random", 0, [True, True, False], split="validation")]
    code, _, err = cli("summarize", *eval_args(*m), "--out", tmp_path / "s")
    assert code == 2 and "the test split" in err and "the validation split" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_base_is_paired_with_every_uniform_seed_and_each_regime_has_its_table(cli, tmp_path):
    rng = np.random.default_rng(7)
    base = rng.random(60) < 0.4
    u0, u1 = rng.random(60) < 0.6, rng.random(60) < 0.55
    s0 = rng.random(60) < 0.5
    m = [write_eval(tmp_path, "base", 0, base), write_eval(tmp_path, "uniform", 0, u0),
         write_eval(tmp_path, "uniform", 1, u1), write_eval(tmp_path, "uniform", 0, s0, regime="sft")]
    assert cli("summarize", *eval_args(*m), "--out", tmp_path / "s")[0] == 0
    df = pd.read_csv(tmp_path / "s/results.csv")
    grpo_base = df[(df.regime == "grpo") & (df.arm == "base")].iloc[0]
    d = [base.mean() - u0.mean(), base.mean() - u1.mean()]  # arm minus reference, one per reference seed
    assert parse_per_seed(grpo_base["per_seed_diff_strict"]) == pytest.approx({"0": d[0], "1": d[1]})
    assert grpo_base["p_seed_strict"] == pytest.approx(stats.ttest_1samp(d, 0).pvalue)
    assert grpo_base["versus"] == "grpo/uniform/ratio" and grpo_base["seeds_paired"] == 2
    assert grpo_base["p_mcnemar_strict"] == (f"0={mcnemar_exact(u0, base)[2]:.4g};"
                                             f"1={mcnemar_exact(u1, base)[2]:.4g}")
    sft_base = df[(df.regime == "sft") & (df.arm == "base")].iloc[0]
    assert sft_base["p_mcnemar_strict"] == f"0={mcnemar_exact(s0, base)[2]:.4g}" and pd.isna(sft_base["p_seed_strict"])
    md = (tmp_path / "s/results.md").read_text()
    assert md.index("### GRPO arms") < md.index("### LoRA-SFT arms")


def test_gradient_findings_say_whether_the_relation_survives():
    from lorarank.report.findings import gradient_markdown, survives

    lora = {"rank_vs_shift_pearson": 0.95, "pearson_ci95": [0.8, 0.99]}
    assert survives({"rank_vs_shift_pearson": 0.6, "pearson_ci95": [0.2, 0.9]}, lora).startswith("survives")
    assert survives({"rank_vs_shift_pearson": -0.7, "pearson_ci95": [-0.9, -0.3]}, lora).startswith("reverses")
    assert survives({"rank_vs_shift_pearson": 0.1, "pearson_ci95": [-0.5, 0.6]}, lora).startswith("does not survive")
    m = {"rank_vs_shift_spearman": 0.9, "spearman_ci95": [0.5, 1.0], "max_min_widening": 1.4}
    doc = {"bootstrap_reps": 1000, "runs": {}, "arms": {"grpo/proportional/ratio": {
        "metrics": {"lora": {**m, **lora}, "weight": {**m, "rank_vs_shift_pearson": 0.1, "pearson_ci95": [-0.5, 0.6]}},
        "mechanical": {"explained": 0.87}}}}
    text = gradient_markdown(doc)
    assert "| grpo/proportional/ratio | lora | +0.95 [+0.80, +0.99] |" in text and "| 87% |" in text
    assert "accounts for 87% of that shift" in text and "does not survive on the rank-neutral weight metric" in text


def test_the_contrast_paragraph_leaves_the_verdicts_to_the_rule():
    from lorarank.report.findings import contrast_paragraph

    def acc(sft, grpo):  # (per-seed diffs) per regime, as the accuracy table holds them
        rows = []
        for r, d in (("sft", sft), ("grpo", grpo)):
            s = seed_level(d)
            rows.append({"regime": r, "strategy": "proportional", "alpha_policy": "ratio", "seeds_paired": len(d),
                         "diff_strict": s["mean"], "diff_low_strict": s["low"], "diff_high_strict": s["high"],
                         "p_holm_strict": s["p"]})
        return pd.DataFrame(rows)

    def doc(policies=("ratio",)):
        arms = {f"grpo/proportional/{p}": {"strategy": "proportional", "alpha_policy": p, "metrics": {"lora": {
            "rank_vs_shift_pearson": 0.9 if p == "ratio" else -0.8,
            "pearson_ci95": [0.5, 0.99] if p == "ratio" else [-0.95, -0.3]}}} for p in policies}
        return {"arms": arms, "contrast": {"alpha_policy": "ratio",
                                           "sft_minus_grpo_top_30pct": {"weight": {"diff": 0.1, "ci95": [0.05, 0.15]}}}}

    text = contrast_paragraph(doc(), acc([0.08, 0.1, 0.09], [-0.01, 0.0]))
    assert "top-30% share minus GRPO's is +10.0 points [+5.0, +15.0]; whether that supports 'peaked" in text
    assert "SFT +9.0 [+6.5, +11.5]" in text and "GRPO -0.5 [" in text and "judged under Verdicts" in text
    assert "the data support" not in text and "cannot tell" not in text and "Only one alpha policy ran" in text
    text = contrast_paragraph(doc(("ratio", "constant")), acc([0.02], [0.01, 0.01]))
    assert "SFT +2.0 (one seed: no run-level interval)" in text
    assert "GRPO +1.0 (seeds agree exactly: no run-level interval)" in text
    assert "grpo/proportional/constant: r = -0.80" in text and text.count(": follows") == 2


def claim(values, direction=1, minimum=0.03, kind="paired", other=None):
    from lorarank.report.verdicts import Claim

    return Claim("c", "x − y", kind, direction, minimum, dict(enumerate(values)), dict(enumerate(other or [])))


def test_the_verdict_rule_gives_each_outcome():
    from lorarank.report.verdicts import VerdictSettings, judge

    cases = {"supported": claim([0.10, 0.12, 0.11]),
             "contradicted": claim([-0.10, -0.12, -0.11]),  # excludes 0 on the other side
             "contradicted ": claim([0.002, -0.001, 0.0, 0.001, -0.002, 0.001]),  # inside (-min, +min)
             "inconclusive": claim([0.05, -0.02, 0.08]),
             "hurts": claim([-0.10, -0.12, -0.11], direction=-1),
             "r": claim([0.6, 0.7, 0.65], minimum=0.3, kind="correlation"),
             "share": claim([0.50, 0.52, 0.51], minimum=0.05, kind="welch", other=[0.30, 0.31, 0.29])}
    rows, m = judge(list(cases.values()), VerdictSettings())
    assert m == 7 and [r["verdict"] for r in rows] == ["supported", "contradicted", "contradicted", "inconclusive",
                                                       "supported", "supported", "supported"]
    # the adjusted interval: a t interval at 1 - alpha/m across seeds
    d = np.array([0.10, 0.12, 0.11])
    assert (rows[0]["low"], rows[0]["high"]) == pytest.approx(
        stats.t.interval(1 - 0.05 / 7, 2, loc=d.mean(), scale=stats.sem(d)))
    assert rows[5]["estimate"] == pytest.approx(np.tanh(np.arctanh([0.6, 0.7, 0.65]).mean()))
    assert rows[3]["seeds_needed"] > 3 and all(r["seeds_needed"] is None for i, r in enumerate(rows) if i != 3)


def test_one_seed_and_missing_data_are_not_judged():
    from lorarank.report.verdicts import Claim, VerdictSettings, judge, markdown

    missing = Claim("dynamic beats static", "—", "paired", 1, 0.03, missing="not run: no adalora arm")
    rows, m = judge([claim([0.2]), missing, claim([0.10, 0.12, 0.11])], VerdictSettings())
    assert m == 1 and rows[2]["verdict"] == "supported"  # the one-seed claim does not widen the others
    assert (rows[0]["verdict"], rows[0]["note"], rows[0]["low"]) == ("inconclusive", "one seed: no run-level interval", None)
    assert rows[0]["estimate"] == 0.2 and rows[1]["verdict"] == "not run"
    text = markdown(rows, m, VerdictSettings())
    assert "With m claims judged, each claim's seed-level interval is taken at level 1 − α/m (Bonferroni)" in text
    assert "| c | x − y | 1 | +20.0 | — | inconclusive (one seed: no run-level interval) | — |" in text
    assert "| dynamic beats static | — | — | — | — | not run: no adalora arm | — |" in text
    assert "intervals at 95%" in text


def test_seeds_needed_is_the_t_test_sample_size():
    from statsmodels.stats.power import TTestPower

    from lorarank.report.verdicts import VerdictSettings, judge

    values = [0.05, -0.02, 0.08]
    sd = np.std(values, ddof=1)
    needed = {}
    for minimum in (0.05, 0.03, 0.02):
        rows, _ = judge([claim(values, minimum=minimum)], VerdictSettings())
        needed[minimum] = rows[0]["seeds_needed"]
        want = TTestPower().solve_power(effect_size=minimum / sd, alpha=0.05, power=0.8)
        assert needed[minimum] == int(np.ceil(want))
    assert needed[0.05] < needed[0.03] < needed[0.02]
    rows, _ = judge([claim(values, minimum=0.03)], VerdictSettings(power=0.9))
    assert rows[0]["seeds_needed"] > needed[0.03]


def test_claims_from_the_tables_and_gradient_stats():
    from lorarank.report.verdicts import VerdictSettings, claims, judge

    acc = [{"regime": r, "strategy": s, "alpha_policy": "ratio", "arm": f"{r}/{s}/ratio", "versus": f"{r}/uniform/ratio",
            "per_seed_diff_strict": d} for r, s, d in (("sft", "proportional", "0=0.1;1=0.12;2=0.11"),
                                                       ("grpo", "proportional", "0=0.06;1=0.07;2=0.065"),
                                                       ("grpo", "adalora", "0=0.05"))]
    frozen = {"grpo/adalora/ratio": {"versus": "grpo/adalora-final/ratio", "per_seed_diff_strict": "0=0.01"}}
    per = {"0": 0.5, "1": 0.52, "2": 0.51}
    grads = {"contrast": {"alpha_policy": "ratio", "regimes": {
                 "sft": {"weight": {"top_30pct_share_per_seed": per}},
                 "grpo": {"weight": {"top_30pct_share_per_seed": {k: v - 0.2 for k, v in per.items()}}}}},
             "arms": {"sft/proportional/ratio": {"strategy": "proportional", "metrics": {
                 "lora": {"rank_vs_shift_pearson": -0.9},
                 "weight": {"per_seed": {"0": {"rank_vs_shift_pearson": -0.6}, "1": {"rank_vs_shift_pearson": -0.7},
                                         "2": {"rank_vs_shift_pearson": None}}}}}}}
    cs = claims(acc, frozen, grads, "ratio", VerdictSettings())
    assert [c.claim for c in cs] == ["peaked under SFT, flat under GRPO", "allocation helps SFT", "allocation hurts GRPO",
                                     "amplification survives the rank-neutral metric (sft/proportional/ratio)",
                                     "dynamic beats static (grpo)", "dynamic beats its frozen result (grpo)"]
    assert cs[0].kind == "welch" and cs[0].other["0"] == pytest.approx(0.3) and "weight metric" in cs[0].compared
    assert cs[3].direction == -1 and cs[3].values == {"0": -0.6, "1": -0.7}  # the lora metric's sign is claimed
    assert cs[5].compared.startswith("grpo/adalora/ratio − grpo/adalora-final/ratio")
    rows, m = judge(cs, VerdictSettings())
    assert m == 4 and [r["verdict"] for r in rows][:3] == ["supported", "supported", "contradicted"]
    # before per-seed shares exist in gradient_stats.json (or without it), the claim is not judged
    del grads["contrast"]["regimes"]["grpo"]["weight"]["top_30pct_share_per_seed"]
    assert "no per-seed" in claims(acc, frozen, grads, "ratio", VerdictSettings())[0].missing
    grads["arms"]["sft/proportional/ratio"]["metrics"]["weight"]["few_steps"] = True  # flagged: not interpreted
    assert claims(acc, frozen, grads, "ratio", VerdictSettings())[3].missing.startswith("too few informative steps")
    assert [c.missing is not None for c in claims(acc, {}, None, "ratio", VerdictSettings())] == [
        True, False, False, True, False]


@pytest.mark.parametrize("flag,value,words", [("--alpha", "0.7", "outside (0, 0.5]"), ("--alpha", "0", "outside"),
                                              ("--min-accuracy", "0", "outside (0, 1]"), ("--min-share", "-0.1", "outside"),
                                              ("--min-correlation", "1", "outside (0, 1)"), ("--power", "1", "outside (0, 1)")])
def test_bad_verdict_settings_are_one_line(cli, tmp_path, flag, value, words):
    m = write_eval(tmp_path, "uniform", 0, np.ones(4, dtype=bool))
    code, _, err = cli("summarize", *eval_args(m), "--out", tmp_path / "s", flag, value)
    assert code == 2 and f"{flag} {float(value)} is {words}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_verdict_settings_reach_the_report(cli, tmp_path):
    rng = np.random.default_rng(4)
    uni = [rng.random(200) < 0.5 for _ in range(3)]
    m = [write_eval(tmp_path, "uniform", s, u, regime="sft") for s, u in enumerate(uni)]
    m += [write_eval(tmp_path, "proportional", s, flip(u, k, rng), regime="sft") for s, (u, k) in enumerate(zip(uni, [8, 4, 12]))]
    # per-seed gains 4, 2, 6 points: at alpha 0.1 the interval is about [+0.6, +7.4]
    for minimum, alpha, verdict in (("0.01", "0.1", "supported"), ("0.05", "0.1", "inconclusive"),
                                    ("0.01", "0.01", "inconclusive")):
        out = tmp_path / f"{minimum}-{alpha}"
        assert cli("summarize", *eval_args(*m), "--out", out, "--min-accuracy", minimum, "--alpha", alpha)[0] == 0
        md = (out / "results.md").read_text()
        line = next(x for x in md.splitlines() if x.startswith("| allocation helps SFT |"))
        assert f"| {verdict} |" in line and f"α = {alpha} (`--alpha`)" in md, line


def test_results_md_opens_with_the_verdicts_in_the_readmes_order(cli, tmp_path):
    """README: results.md "opens with 'Verdicts'" (Commands: "verdicts first"), each claim in the order peaked under
    SFT, allocation helps SFT, allocation hurts GRPO, amplification survives the rank-neutral metric, dynamic beats
    static; the tables follow, and verdicts.json lists the claims in the same order."""
    rng = np.random.default_rng(11)
    m = []
    for regime in ("sft", "grpo"):
        uni = [rng.random(100) < 0.5 for _ in range(2)]
        m += [write_eval(tmp_path, "uniform", s, u, regime=regime) for s, u in enumerate(uni)]
        m += [write_eval(tmp_path, "proportional", s, flip(u, 5, rng), regime=regime) for s, u in enumerate(uni)]
    assert cli("summarize", *eval_args(*m), "--out", tmp_path / "s")[0] == 0
    md = (tmp_path / "s/results.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert md.startswith("## Verdicts\n") and headings[:2] == ["## Verdicts", "## Accuracy"], headings
    verdicts = md.split("## Accuracy")[0]
    rows = [line.split("|")[1].strip() for line in verdicts.splitlines() if line.startswith("| ")][1:]
    order = ["peaked under SFT, flat under GRPO", "allocation helps SFT", "allocation hurts GRPO",
             "amplification survives the rank-neutral metric", "dynamic beats static"]
    assert rows == order
    assert [c["claim"] for c in json.loads((tmp_path / "s/verdicts.json").read_text())["claims"]] == order


def test_an_evaluation_without_its_predictions_is_refused(cli, tmp_path):
    m = write_eval(tmp_path, "uniform", 0, np.ones(4, dtype=bool))
    code, _, err = cli("summarize", "--eval", m, tmp_path / "elsewhere.parquet", "--out", tmp_path / "s")
    assert code == 2 and "elsewhere.parquet" in err and "does not exist" in err
    assert not (tmp_path / "s").exists()


def test_rate_selections_are_shown(cli, tmp_path):
    m = write_eval(tmp_path, "uniform", 0, np.ones(4, dtype=bool))
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"arm": "grpo/uniform/ratio", "rule": "best", "metric": "strict", "n": 50, "chosen": 0.003,
                               "curve": [{"name": "0.001", "lr": 0.001, "mean": 0.2},
                                         {"name": "0.003", "lr": 0.003, "mean": 0.3}]}))
    assert not (tmp_path / "s/figures/selection.png").exists()
    assert cli("summarize", *eval_args(m), "--selection", sel, "--out", tmp_path / "s")[0] == 0
    md = (tmp_path / "s/results.md").read_text()
    assert "| grpo/uniform/ratio | best (strict, n = 50) | 0.001: 20.0, 0.003: 30.0 | 0.003 |" in md
    assert (tmp_path / "s/figures/selection.png").stat().st_size > 1000  # the validation curve
    sel.write_text(json.dumps({"arm": "grpo/uniform/ratio"}))
    code, _, err = cli("summarize", *eval_args(m), "--selection", sel, "--out", tmp_path / "t")
    assert code == 2 and "lacks field" in err and not (tmp_path / "t").exists()
