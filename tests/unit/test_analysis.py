"""Gradient statistics on synthetic logs built so that every statistic has a known exact answer."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from conftest import run_args, run_files, write_grad_log, write_run
from lorarank.report import analysis
from lorarank.training import gradlog
from lorarank.training.gradmetrics import METRICS


def shares_of(path, metric="lora", policy=None):
    return gradlog.step_shares(gradlog.select(gradlog.read(path), metric, policy))


def stats_of(tmp_path, imp, name="g.parquet", **kw):
    return analysis.run_stats(shares_of(write_grad_log(tmp_path / name, imp, **kw)))


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
    s = analysis.run_stats(shares_of(path))
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


RANKS = [4, 12, 6, 10]
POLICY = ("ratio", 2.0)


def two_runs(tmp_path, arm_lora, arm_weight, steps=6, seed=0, seeds=(0,)):
    """A uniform run and a random arm per seed, with run.json identities; `arm_lora`/`arm_weight` give the
    arm's layer importances on the A/B and G rows (the uniform run: 1..4 on both)."""
    base = np.tile(np.arange(1, 5, dtype=float), (steps, 1))
    logs = []
    for sd in seeds:
        logs.append(write_grad_log(write_run(tmp_path / f"u{sd}", strategy="uniform", seed=sd, policy=POLICY),
                                   base, weight=base, seed=sd))
        logs.append(write_grad_log(write_run(tmp_path / f"r{sd}", strategy="random", seed=sd, policy=POLICY),
                                   base * arm_lora, weight=base * arm_weight, ranks=RANKS, seed=sd + 10))
    return logs


def test_analyze_command_writes_every_metric_the_mechanics_and_figures(cli, tmp_path):
    """What each log is comes from the run.json beside it, never from its path."""
    mech = np.sqrt(np.array(RANKS) / 8)  # what sqrt(r) under alpha = k r does to an A/B norm
    learned = np.array([1.0, 0.9, 1.1, 1.0])  # what the loss does to the weights: unrelated to rank
    logs = two_runs(tmp_path, mech * learned, learned)
    warm = write_grad_log(write_run(tmp_path / "w", kind="warmup", strategy=None, policy=None),
                          np.tile([4.0, 1, 1, 1], (6, 1)), matrices=("W",))
    code, out, err = cli("analyze", *run_args(*logs, warm), "--bootstrap", 200, "--out", tmp_path / "summary")
    assert code == 0, err
    doc = json.loads((tmp_path / "summary/gradient_stats.json").read_text())
    assert set(doc["runs"]) == {"grpo/uniform/ratio/seed0", "grpo/random/ratio/seed0", "warmup/seed0"}
    assert set(doc["runs"]["warmup/seed0"]["metrics"]) == {"weight"}  # a full-weight run has only that
    arm = doc["arms"]["grpo/random/ratio"]
    assert arm["ranks"] == {"0": 4.0, "1": 12.0, "2": 6.0, "3": 10.0}  # read from the log's rank column
    assert set(arm["metrics"]) == set(METRICS)  # every metric of the table
    for metric, factor in (("lora", mech * learned), ("lora_normalised", learned), ("weight", learned)):
        m = arm["metrics"][metric]
        shift = (np.arange(1, 5) * factor) / (np.arange(1, 5) * factor).sum() - np.arange(1, 5) / 10
        assert m["rank_vs_shift_pearson"] == pytest.approx(pearsonr(RANKS, shift).statistic, rel=1e-4), metric
        assert m["pearson_ci95"] is None and m["spearman_ci95"] is None  # one seed: no interval across seeds
        lo, hi = m["pearson_measurement_ci95"]  # every step alike: no measurement noise either
        assert lo == pytest.approx(m["rank_vs_shift_pearson"]) and hi == pytest.approx(m["rank_vs_shift_pearson"])
        assert m["informative_steps"] == 6 and m["few_steps"] is True
    # dividing each norm by s sqrt(r) undoes the mechanics: normalised and weight shares agree
    assert arm["metrics"]["lora_normalised"]["rank_vs_shift_pearson"] == pytest.approx(
        arm["metrics"]["weight"]["rank_vs_shift_pearson"], rel=1e-4)
    # the mechanical prediction (uniform lora x sqrt(r/8)) explains most of the lora shift, not all: `learned`
    pred = (np.arange(1, 5) * mech) / (np.arange(1, 5) * mech).sum() - np.arange(1, 5) / 10
    obs = (np.arange(1, 5) * mech * learned) / (np.arange(1, 5) * mech * learned).sum() - np.arange(1, 5) / 10
    want = 1 - ((obs - pred) ** 2).sum() / (obs ** 2).sum()
    assert arm["mechanical"]["explained"] == pytest.approx(want, rel=1e-4) and 0.5 < want < 1
    figures = {p.name for p in (tmp_path / "summary/figures").iterdir()}
    assert {"heatmap_lora_grpo-uniform-ratio.png", "heatmap_weight_grpo-random-ratio.png", "heatmap_weight_warmup.png",
            "amplification.png", "shares.png"} <= figures
    for f in figures:
        assert (tmp_path / "summary/figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pure_mechanics_is_explained_fully_and_vanishes_on_the_weight_metric(cli, tmp_path):
    mech = np.sqrt(np.array(RANKS) / 8)
    logs = two_runs(tmp_path, mech, np.ones(4))
    assert cli("analyze", *run_args(*logs), "--bootstrap", 200, "--out", tmp_path / "s")[0] == 0
    arm = json.loads((tmp_path / "s/gradient_stats.json").read_text())["arms"]["grpo/random/ratio"]
    assert arm["mechanical"]["explained"] == pytest.approx(1.0, abs=1e-5)
    assert arm["metrics"]["lora"]["rank_vs_shift_pearson"] > 0.9
    assert arm["metrics"]["weight"]["rank_vs_shift_pearson"] is None  # no shift at all: undefined, not 0


def dependent_steps(rng, mean, steps, conc, phi=0.8):
    """Per-step shares around `mean` (steps x units, indexed from step 1) with AR(1) serial dependence, like
    consecutive optimizer steps: each step's map is mostly the last one's."""
    noise = np.zeros((steps, len(mean)))
    for t in range(steps):
        noise[t] = (phi * noise[t - 1] if t else 0) + rng.normal(0, np.sqrt(1 - phi ** 2), len(mean))
    x = np.clip(mean * (1 + noise / conc), 1e-6, None)
    return pd.DataFrame(x / x.sum(axis=1, keepdims=True), index=pd.RangeIndex(1, steps + 1))


def test_measurement_interval_is_seeded_contains_its_estimate_and_widens_with_step_noise():
    from lorarank.report.stats import bootstrap_shift_corr, fisher_measurement_ci

    rng = np.random.default_rng(0)
    ranks = [2, 4, 6, 8, 10, 12]
    mean = np.linspace(0.8, 1.2, 6) / 6
    uni, arm = dependent_steps(rng, np.full(6, 1 / 6), 40, 30), dependent_steps(rng, mean, 40, 30)
    point = pearsonr(ranks, arm.mean() - uni.mean()).statistic
    z = bootstrap_shift_corr(arm, uni, ranks, reps=500)
    assert np.array_equal(z["pearson"], bootstrap_shift_corr(arm, uni, ranks, reps=500)["pearson"])
    ci = fisher_measurement_ci([point], [z["pearson"]])
    assert ci[0] < point < ci[1]
    noisy_uni, noisy_arm = dependent_steps(rng, np.full(6, 1 / 6), 40, 5), dependent_steps(rng, mean, 40, 5)
    noisy = fisher_measurement_ci([pearsonr(ranks, noisy_arm.mean() - noisy_uni.mean()).statistic],
                                  [bootstrap_shift_corr(noisy_arm, noisy_uni, ranks, reps=500)["pearson"]])
    assert np.arctanh(noisy[1]) - np.arctanh(noisy[0]) > np.arctanh(ci[1]) - np.arctanh(ci[0])
    assert bootstrap_shift_corr(arm, uni, [8] * 6)["pearson"] is None  # constant ranks: undefined


def varied_runs(tmp_path, factors: dict, kind="grpo", strategy="random", steps=12, ranks=RANKS):
    """Per seed, an arm whose layer importances are 1..4 times `factors[seed]` at every step."""
    return [write_grad_log(write_run(tmp_path / f"{kind}-{strategy}{sd}", kind=kind, strategy=strategy, seed=sd,
                                     policy=POLICY), np.tile(np.arange(1, 5) * np.asarray(f, float), (steps, 1)),
                           ranks=ranks if strategy != "uniform" else None, seed=sd)
            for sd, f in factors.items()]


def test_seeds_are_combined_by_fisher_z_with_a_t_interval_across_seeds(tmp_path):
    from scipy.stats import t

    from lorarank.report.findings import gradient_markdown

    factors = {0: [1.0, 1.3, 0.9, 1.2], 1: [1.0, 1.1, 1.0, 1.05], 2: [1.1, 1.4, 0.8, 1.0]}
    logs = varied_runs(tmp_path, factors) + varied_runs(tmp_path, {sd: [1.0] * 4 for sd in factors}, strategy="uniform")
    doc, *_ = analysis.analyze(run_files(*logs), window=0.1, reps=100)
    m = doc["arms"]["grpo/random/ratio"]["metrics"]["lora"]
    rs = []
    for sd, f in factors.items():
        shift = np.arange(1, 5) * f / (np.arange(1, 5) * f).sum() - np.arange(1, 5) / 10
        rs.append(pearsonr(RANKS, shift).statistic)
        assert m["per_seed"][str(sd)]["rank_vs_shift_pearson"] == pytest.approx(rs[-1], rel=1e-4)
    z = np.arctanh(rs)
    assert m["rank_vs_shift_pearson"] == pytest.approx(np.tanh(z.mean()), rel=1e-4)
    want = np.tanh(t.interval(0.95, 2, loc=z.mean(), scale=z.std(ddof=1) / np.sqrt(3)))
    np.testing.assert_allclose(m["pearson_ci95"], want, rtol=1e-4)
    assert m["informative_steps"] == 12 and m["few_steps"] is False
    assert "too few informative steps" not in gradient_markdown(doc)
    # the same runs cut to 6 steps: every number still reported, the relation no longer interpreted
    short = varied_runs(tmp_path / "s", factors, steps=6) + varied_runs(
        tmp_path / "s", {sd: [1.0] * 4 for sd in factors}, strategy="uniform", steps=6)
    doc, *_ = analysis.analyze(run_files(*short), window=0.1, reps=100)
    m = doc["arms"]["grpo/random/ratio"]["metrics"]["lora"]
    assert m["few_steps"] is True and m["pearson_ci95"] is not None
    text = gradient_markdown(doc)
    assert "**grpo/random/ratio**: too few informative steps: not interpreted" in text
    assert "correlate at" not in text and "| 6 (too few: not interpreted) |" in text


def test_contrast_gives_per_seed_top_shares_a_t_interval_and_a_welch_difference(tmp_path):
    from scipy.stats import t, ttest_ind

    sft = {0: [1.0, 1.0, 1.0, 3.0], 1: [1.0, 1.0, 1.0, 4.0], 2: [1.0, 1.0, 1.0, 2.5]}
    grpo = {0: [1.0, 1.0, 1.0, 1.2], 1: [1.0, 1.0, 1.0, 1.5]}
    logs = varied_runs(tmp_path, sft, kind="sft", strategy="uniform") + varied_runs(tmp_path, grpo, strategy="uniform")
    doc, *_ = analysis.analyze(run_files(*logs), window=0.1, reps=100)
    con = doc["contrast"]

    def top(f):  # layer 3 holds the top 30% (ceil(0.3 * 4) = 2 layers: 3 and 2)
        x = np.arange(1, 5) * np.asarray(f)
        return np.sort(x / x.sum())[-2:].sum()

    want = {r: {str(sd): top(f) for sd, f in seeds.items()} for r, seeds in (("sft", sft), ("grpo", grpo))}
    for regime in ("sft", "grpo"):
        m = con["regimes"][regime]["lora"]
        assert m["top_30pct_share_per_seed"] == pytest.approx(want[regime], rel=1e-5)
        v = np.array(list(want[regime].values()))
        np.testing.assert_allclose(m["top_30pct_share_ci95"], t.interval(0.95, len(v) - 1, loc=v.mean(),
                                                                        scale=v.std(ddof=1) / np.sqrt(len(v))), rtol=1e-5)
        lo, hi = m["top_30pct_share_measurement_ci95"]  # no step noise at all
        assert lo == pytest.approx(m["top_30pct_share"]) and hi == pytest.approx(m["top_30pct_share"])
    d = con["sft_minus_grpo_top_30pct"]["lora"]
    s, g = (np.array(list(want[r].values())) for r in ("sft", "grpo"))
    assert d["diff"] == pytest.approx(s.mean() - g.mean(), rel=1e-5)
    np.testing.assert_allclose(d["ci95"], ttest_ind(s, g, equal_var=False).confidence_interval(), rtol=1e-4)
    assert d["informative_steps"] == 12 and d["few_steps"] is False
    # one SFT seed: no interval across seeds for SFT, nor for the difference; measurement noise remains
    one = varied_runs(tmp_path / "one", {0: sft[0]}, kind="sft", strategy="uniform")
    doc, *_ = analysis.analyze(run_files(*one, *logs[3:]), window=0.1, reps=100)
    con = doc["contrast"]
    assert con["regimes"]["sft"]["lora"]["top_30pct_share_ci95"] is None
    assert con["sft_minus_grpo_top_30pct"]["lora"]["ci95"] is None
    assert con["sft_minus_grpo_top_30pct"]["lora"]["measurement_ci95"] is not None


@pytest.mark.parametrize("steps,few", [(9, True), (10, False)])
def test_ten_informative_steps_is_the_least_that_is_interpreted(tmp_path, steps, few):
    """README: "A statistic from fewer than 10 informative steps is flagged and not interpreted": 9 steps are
    flagged, 10 are not, in every statistic that carries the flag (an arm against uniform, a regime's
    concentration, SFT minus GRPO); a step without any gradient is not informative."""
    factors = {0: [1.0, 1.3, 0.9, 1.2], 1: [1.0, 1.1, 1.0, 1.05]}
    logs = (varied_runs(tmp_path, factors, steps=steps)
            + varied_runs(tmp_path, {sd: [1.0] * 4 for sd in factors}, strategy="uniform", steps=steps)
            + varied_runs(tmp_path, {0: [1.0, 1, 1, 3], 1: [1.0, 1, 1, 4]}, kind="sft", strategy="uniform",
                          steps=steps))
    doc, *_ = analysis.analyze(run_files(*logs), window=0.1, reps=20)
    arm = doc["arms"]["grpo/random/ratio"]["metrics"]["lora"]
    concentration = [doc["contrast"]["regimes"][r]["lora"] for r in ("sft", "grpo")]
    difference = doc["contrast"]["sft_minus_grpo_top_30pct"]["lora"]
    for m in (arm, *concentration, difference):
        assert (m["informative_steps"], m["few_steps"]) == (steps, few)
    assert doc["min_informative_steps"] == 10
    # one more step that carries no gradient at all changes nothing: it is not informative
    zero = tmp_path / "zero"
    imp = np.vstack([np.zeros((1, 4)), np.tile(np.arange(1, 5, dtype=float), (steps, 1))])
    log = write_grad_log(write_run(zero, strategy="uniform", policy=POLICY), imp)
    assert analysis.run_stats(shares_of(log))["informative_steps"] == steps


def test_the_fewer_steps_of_an_arm_and_its_reference_decide_the_flag(tmp_path):
    factors = {0: [1.0, 1.3, 0.9, 1.2], 1: [1.0, 1.1, 1.0, 1.05]}
    logs = varied_runs(tmp_path, factors, steps=12) + varied_runs(
        tmp_path, {sd: [1.0] * 4 for sd in factors}, strategy="uniform", steps=9)
    doc, *_ = analysis.analyze(run_files(*logs), window=0.1, reps=20)
    m = doc["arms"]["grpo/random/ratio"]["metrics"]["lora"]
    assert (m["informative_steps"], m["few_steps"]) == (9, True)


def test_a_log_without_its_run_record_is_refused(cli, tmp_path):
    log = write_grad_log(tmp_path / "grad_norms.parquet", np.ones((2, 3)))
    code, _, err = cli("analyze", *run_args(log), "--out", tmp_path / "summary")
    assert code == 2 and "run.json" in err and "does not exist" in err
    assert not (tmp_path / "summary").exists()


def test_training_trend_reads_the_trainer_log_beside_each_run(cli, tmp_path):
    from lorarank.report.findings import training_markdown

    log = write_grad_log(write_run(tmp_path / "u"), np.ones((8, 3)))
    rewards = [0.1, 0.2, 0.1, 0.3, 0.4, 0.5, 0.6, 0.7]
    lines = [json.dumps({"loss": 1.0, "rewards/correctness/mean": 0.2, "reward": r}) for r in rewards]
    (tmp_path / "u" / "trainer_log.jsonl").write_text("\n".join(lines + [json.dumps({"train_runtime": 3.0})]))
    doc, *_ = analysis.analyze(run_files(log), window=0.25, reps=10)
    t = doc["runs"]["grpo/uniform/ratio/seed0"]["training"]
    assert t == {"signal": "reward", "steps": 8, "first_quarter": pytest.approx(0.15),
                 "last_quarter": pytest.approx(0.65)}
    assert "| grpo/uniform/ratio/seed0 | reward | 8 | 0.150 | 0.650 | +0.500 |" in training_markdown(doc)
    # an SFT run's signal is its loss; a run without a trainer log has no trend
    assert analysis.trend(tmp_path / "u" / "trainer_log.jsonl", "loss")["first_quarter"] == 1.0
    assert analysis.trend(tmp_path / "nothing.jsonl", "loss") is None


def test_a_run_without_any_gradient_is_reported_not_fatal(cli, tmp_path):
    """A GRPO run whose groups never differed in reward has zero gradients at every step (a small model on
    GSM8K): the other runs are analysed, the silent one gets a note and a heatmap that says so."""
    live = write_grad_log(write_run(tmp_path / "u"), np.tile([1.0, 2.0, 3.0], (5, 1)), weight=np.ones((5, 3)))
    silent = write_grad_log(write_run(tmp_path / "r", strategy="random"), np.zeros((5, 3)), weight=np.zeros((5, 3)))
    code, _, err = cli("analyze", *run_args(live, silent), "--bootstrap", 100, "--out", tmp_path / "s")
    assert code == 0, err
    doc = json.loads((tmp_path / "s/gradient_stats.json").read_text())
    run = doc["runs"]["grpo/random/ratio/seed0"]
    assert run["metrics"] == {} and len(run["notes"]) == len(METRICS) and "no step with a non-zero gradient" in run["notes"][0]
    assert set(doc["runs"]["grpo/uniform/ratio/seed0"]["metrics"]) == set(METRICS)
    assert "metrics" not in doc["arms"]["grpo/random/ratio"] or doc["arms"]["grpo/random/ratio"]["metrics"] == {}
    assert (tmp_path / "s/figures/heatmap_lora_grpo-random-ratio.png").read_bytes()[:4] == b"\x89PNG"
    from lorarank.report.findings import gradient_markdown

    assert "| grpo/random/ratio/seed0 | lora | no step with a non-zero gradient" in gradient_markdown(doc)


def test_no_run_with_any_gradient_still_writes_every_figure(cli, tmp_path):
    silent = write_grad_log(write_run(tmp_path / "u"), np.zeros((4, 3)), weight=np.zeros((4, 3)))
    code, _, err = cli("analyze", *run_args(silent), "--bootstrap", 100, "--out", tmp_path / "s")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "s/figures").iterdir()}
    assert {"heatmap_lora_grpo-uniform-ratio.png", "heatmap_weight_grpo-uniform-ratio.png", "shares.png",
            "contrast.png", "amplification.png"} <= names


def test_each_run_names_its_files_or_is_refused_in_one_line(cli, tmp_path):
    """The analysis reads only the files it is given: a group of the wrong size, or an adalora run without its
    rank log, is refused naming the run, and nothing is written."""
    log = write_grad_log(write_run(tmp_path / "u"), np.ones((3, 3)))
    group = run_args(log)[1:]
    code, _, err = cli("analyze", "--run", *group[:2], "--out", tmp_path / "s")
    assert code == 2 and "2 files given" in err and "trainer_log.jsonl" in err
    dyn = write_grad_log(write_run(tmp_path / "a", strategy="adalora"), np.ones((3, 3)))
    code, _, err = cli("analyze", *run_args(dyn), "--out", tmp_path / "s")
    assert code == 2 and "adalora run needs its ranks.parquet" in err
    assert not (tmp_path / "s").exists()
