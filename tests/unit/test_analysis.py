"""Gradient statistics on synthetic logs built so that every statistic has a known exact answer."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from conftest import write_grad_log, write_run
from lorarank import analysis, gradlog


def stats_of(tmp_path, imp, name="g.parquet", **kw):
    return analysis.run_stats(gradlog.read(write_grad_log(tmp_path / name, imp, **kw)))


def test_shares_extremes_ratio_and_top30(tmp_path):
    imp = np.tile(np.arange(1, 11, dtype=float), (6, 1)) * np.arange(1, 7)[:, None]  # scale varies per step
    s = stats_of(tmp_path, imp)
    expected = np.arange(1, 11) / 55
    np.testing.assert_allclose([s["shares"][str(l)] for l in range(10)], expected, rtol=1e-6)
    assert s["hottest"]["layer"] == 9 and s["coldest"]["layer"] == 0
    assert s["max_min_ratio"] == pytest.approx(10.0, rel=1e-6)
    assert s["top_30pct_share"] == pytest.approx(27 / 55, rel=1e-6)  # layers 9, 8, 7
    assert s["early_late_corr"] == pytest.approx(1.0)


def test_early_vs_late_correlation(tmp_path):
    rng = np.random.default_rng(1)
    early_p, late_p = rng.random(8) + 0.1, rng.random(8) + 0.1
    imp = np.vstack([early_p] * 2 + [np.ones(8)] * 16 + [late_p] * 2)  # 20 steps, windows of 2
    s = stats_of(tmp_path, imp)
    assert s["window"]["steps"] == 2
    want = pearsonr(early_p / early_p.sum(), late_p / late_p.sum()).statistic
    assert s["early_late_corr"] == pytest.approx(want, rel=1e-5)


def test_amplification_against_uniform(tmp_path):
    base = np.array([1.0, 2, 3, 4, 5, 6])
    ranks = [4, 12, 6, 10, 8, 8]
    boost = base * (1 + 0.05 * (np.array(ranks) - 8))
    uni = stats_of(tmp_path, np.tile(base, (5, 1)), "u.parquet")
    arm = stats_of(tmp_path, np.tile(boost, (5, 1)), "a.parquet")
    amp = analysis.amplification(arm, uni, ranks)
    shift = boost / boost.sum() - base / base.sum()
    assert amp["rank_vs_shift_pearson"] == pytest.approx(pearsonr(ranks, shift).statistic, rel=1e-5)
    assert amp["rank_vs_shift_spearman"] == pytest.approx(spearmanr(ranks, shift).statistic, rel=1e-5)
    want_ratio = (boost.max() / boost.min()) / (base.max() / base.min())
    assert amp["max_min_widening"] == pytest.approx(want_ratio, rel=1e-5)


def test_step1_zero_A_and_a_dead_layer_and_a_zero_step(tmp_path):
    imp = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 3.0], [2.0, 0.0, 6.0]])
    path = write_grad_log(tmp_path / "g.parquet", imp)
    df = pd.read_parquet(path)
    df.loc[(df.step == 2) & (df.matrix == "A"), "grad_norm"] = np.float32(0)  # like step 1 of a LoRA run
    df.to_parquet(path)
    s = analysis.run_stats(gradlog.read(path))
    assert s["informative_steps"] == 2 and s["shares"]["1"] == 0.0
    assert s["max_min_ratio"] is None and any("zero share" in n for n in s["notes"])


def test_single_step(tmp_path):
    s = stats_of(tmp_path, np.array([[1.0, 2.0, 3.0]]))
    assert s["early_late_corr"] is None and any("fewer than 2" in n for n in s["notes"])
    assert s["shares"]["2"] == pytest.approx(0.5, rel=1e-6)


def test_constant_ranks_give_no_correlation(tmp_path):
    uni = stats_of(tmp_path, np.tile([1.0, 2, 3, 4], (3, 1)), "u.parquet")
    amp = analysis.amplification(uni, uni, [8, 8, 8, 8])
    assert amp["rank_vs_shift_pearson"] is None and amp["notes"]


def test_analyze_command_writes_stats_and_figures(cli, tmp_path):
    """What each log is comes from the run.json beside it, never from its path."""
    base = np.tile(np.arange(1, 5, dtype=float), (6, 1))
    uni = write_grad_log(write_run(tmp_path / "a", strategy="uniform"), base)
    ranks = [4, 12, 6, 10]
    rnd = write_grad_log(write_run(tmp_path / "b", strategy="random"), base * np.array([1.0, 1.3, 0.8, 1.1]),
                         ranks=ranks)
    warm = write_grad_log(write_run(tmp_path / "c", kind="warmup", strategy=None, policy=None),
                          np.tile([4.0, 1, 1, 1], (6, 1)))
    code, out, err = cli("analyze", "--grad-logs", uni, rnd, warm, "--out", tmp_path / "summary")
    assert code == 0, err
    doc = json.loads((tmp_path / "summary/gradient_stats.json").read_text())
    assert set(doc["runs"]) == {"uniform/seed0", "random/seed0"}
    amp = doc["arms"]["random"]["per_seed"]["0"]
    assert amp["ranks"] == {"0": 4.0, "1": 12.0, "2": 6.0, "3": 10.0}  # read from the log's rank column
    shift = [amp["shift"][str(layer)] for layer in range(4)]
    assert amp["rank_vs_shift_pearson"] == pytest.approx(pearsonr(ranks, shift).statistic, rel=1e-6)
    assert doc["sft"]["hottest"]["layer"] == 0 and doc["sft_vs_grpo"]["top_30pct_share"]["sft"] > 0.5
    for f in ("heatmap_uniform.png", "heatmap_random.png", "heatmap_warmup.png", "amplification.png", "shares.png"):
        assert (tmp_path / "summary/figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_log_without_its_run_record_is_refused(cli, tmp_path):
    log = write_grad_log(tmp_path / "grad_norms.parquet", np.ones((2, 3)))
    code, _, err = cli("analyze", "--grad-logs", log, "--out", tmp_path / "summary")
    assert code == 2 and "run record of" in err and "does not exist" in err
    assert not (tmp_path / "summary").exists()
