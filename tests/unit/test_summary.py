"""Accuracy statistics on synthetic prediction tables, checked against scipy/statsmodels."""

import json

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from conftest import eval_args
from lorarank.report.stats import mcnemar_exact, mean_ci, paired_bootstrap_ci, wilson


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


def write_eval(root, strategy, seed, correct, idx=None, regime="grpo"):
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
    (d / "metrics.json").write_text(json.dumps({"n": n, "seed": 0, "identity": ident}))
    return d / "metrics.json"


def test_summary_table_and_verdict(cli, tmp_path):
    rng = np.random.default_rng(3)
    uni = rng.random(200) < 0.5
    same = np.where(rng.random(200) < 0.05, ~uni, uni)  # a few flips: not significant
    better = uni | (rng.random(200) < 0.5)  # many more right: significant
    m = [write_eval(tmp_path, "uniform", 0, uni), write_eval(tmp_path, "random", 0, same),
         write_eval(tmp_path, "proportional", 0, better)]
    code, _, err = cli("summarize", *eval_args(*m), "--out", tmp_path / "summary")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "summary/results.csv").set_index("strategy")
    assert df.loc["uniform", "acc_strict"] == uni.mean()
    assert df.loc["random", "p_mcnemar_strict"] == pytest.approx(mcnemar_exact(uni, same)[2])
    assert df.loc["proportional", "p_mcnemar_strict"] < 0.05 <= df.loc["random", "p_mcnemar_strict"]
    md = (tmp_path / "summary/results.md").read_text()
    assert "Significantly different from uniform" in md and "proportional" in md.split("Significantly")[1]
    assert "One training seed per arm" in md


def test_not_significant_is_said_in_words(cli, tmp_path):
    uni = np.array([True, False] * 50)
    m = [write_eval(tmp_path, "uniform", 0, uni), write_eval(tmp_path, "random", 0, np.roll(uni, 2))]
    assert cli("summarize", *eval_args(*m), "--out", tmp_path / "s")[0] == 0
    assert "No arm differs significantly from uniform" in (tmp_path / "s/results.md").read_text()


def test_several_seeds(cli, tmp_path):
    rng = np.random.default_rng(5)
    m = [write_eval(tmp_path, s, seed, rng.random(50) < 0.5) for s in ("uniform", "random") for seed in (0, 1, 2)]
    assert cli("summarize", *eval_args(*m), "--out", tmp_path / "s")[0] == 0
    df = pd.read_csv(tmp_path / "s/results.csv").set_index("strategy")
    assert df.loc["random", "seeds"] == 3 and df.loc["random", "ci_low_strict"] < df.loc["random", "acc_strict"]
    assert "3 seeds per arm" in (tmp_path / "s/results.md").read_text()


def test_different_questions_are_refused(cli, tmp_path):
    m = [write_eval(tmp_path, "uniform", 0, [True, False, True]),
         write_eval(tmp_path, "random", 0, [True, True, False], idx=[0, 1, 5])]
    code, _, err = cli("summarize", *eval_args(*m), "--out", tmp_path / "s")
    assert code == 2 and "paired tests need the same questions" in err and len(err.strip().splitlines()) == 1
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
    want = mcnemar_exact(np.concatenate([u0, u1]), np.concatenate([base, base]))[2]
    assert grpo_base["p_mcnemar_strict"] == pytest.approx(want) and grpo_base["versus"] == "grpo/uniform/ratio"
    sft_base = df[(df.regime == "sft") & (df.arm == "base")].iloc[0]
    assert sft_base["p_mcnemar_strict"] == pytest.approx(mcnemar_exact(s0, base)[2])
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


def test_the_contrast_paragraph_says_what_the_data_support():
    from lorarank.report.findings import contrast_paragraph

    def acc(sft_diff, sft_p, grpo_diff, grpo_p):
        rows = [{"regime": r, "strategy": "proportional", "alpha_policy": "ratio", "diff_strict": d, "p_holm_strict": p}
                for r, d, p in (("sft", sft_diff, sft_p), ("grpo", grpo_diff, grpo_p))]
        return pd.DataFrame(rows)

    def doc(ci, policies=("ratio",)):
        arms = {f"grpo/proportional/{p}": {"strategy": "proportional", "alpha_policy": p, "metrics": {"lora": {
            "rank_vs_shift_pearson": 0.9 if p == "ratio" else -0.8,
            "pearson_ci95": [0.5, 0.99] if p == "ratio" else [-0.95, -0.3]}}} for p in policies}
        return {"arms": arms, "contrast": {"alpha_policy": "ratio",
                                           "sft_minus_grpo_top_30pct": {"weight": {"diff": 0.1, "ci95": ci}}}}

    text = contrast_paragraph(doc([0.05, 0.15]), acc(0.08, 0.01, 0.01, 0.9))
    assert "the data support the claim 'peaked under SFT" in text
    assert "the data support the claim 'allocation helps SFT but not GRPO'" in text
    assert "Only one alpha policy ran" in text
    text = contrast_paragraph(doc([-0.02, 0.15], ("ratio", "constant")), acc(0.01, 0.7, 0.02, 0.6))
    assert "cannot tell at this precision 'peaked" in text and "cannot tell at this precision 'allocation" in text
    assert "grpo/proportional/constant: r = -0.80" in text and text.count(": follows") == 2
    assert "under SFT allocation" not in text  # neither half is significant: nothing more to say
    # the default miniature's outcome: SFT unchanged, GRPO significantly worse
    text = contrast_paragraph(doc([-0.02, 0.15]), acc(-0.005, 0.89, -0.078, 0.0006))
    assert ("cannot tell at this precision 'allocation helps SFT but not GRPO': under SFT allocation changes "
            "nothing measurable, under GRPO it hurts.") in text


def test_an_evaluation_without_its_predictions_is_refused(cli, tmp_path):
    m = write_eval(tmp_path, "uniform", 0, np.ones(4, dtype=bool))
    code, _, err = cli("summarize", "--eval", m, tmp_path / "elsewhere.parquet", "--out", tmp_path / "s")
    assert code == 2 and "elsewhere.parquet" in err and "does not exist" in err
    assert not (tmp_path / "s").exists()
