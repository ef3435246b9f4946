"""The base model as the outer level (`warmup.seeds`, `lorarank combine-bases`): real `summarize` per base on
synthetic predictions, then the verdicts and accuracies across base models, checked against scipy."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import ROOT, eval_args
from lorarank.errors import UserError
from test_summary import flip, write_eval

N = 200


def study(cli, root, effects, rng):
    """One base model's study: grpo and sft, uniform and proportional, one seed per entry of `effects[regime]`
    (the proportional arm's paired difference in questions). Returns its summary directory."""
    m = []
    for regime, ks in effects.items():
        for seed, k in enumerate(ks):
            uni = rng.random(N) < 0.4
            m.append(write_eval(root, "uniform", seed, uni, regime=regime))
            m.append(write_eval(root, "proportional", seed, flip(uni, abs(k), rng, to=k > 0), regime=regime))
    code, _, err = cli("summarize", *eval_args(*m), "--out", root / "summary")
    assert code == 0, err
    return root / "summary"


def combine(cli, summaries, out):
    argv = [a for name, s in summaries.items() for a in ("--base", name, s / "verdicts.json", s / "results.csv")]
    return cli("combine-bases", *argv, "--out", out)


def verdict(md: str, claim: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {claim} |"))


def test_a_claim_each_base_supports_with_opposite_signs_is_inconclusive_across_bases(cli, tmp_path):
    """Each base model alone is decisive (three seeds agreeing closely), but the two bases point opposite ways:
    across base models, the unit a claim about 'GRPO' needs, nothing is supported."""
    rng = np.random.default_rng(0)
    effects = {"a": {"grpo": [-20, -22, -21], "sft": [10, 12, 11]}, "b": {"grpo": [20, 22, 21], "sft": [-10, -9, -11]}}
    summaries = {name: study(cli, tmp_path / name, e, rng) for name, e in effects.items()}
    one = (summaries["a"] / "results.md").read_text()
    assert "| supported |" in verdict(one, "allocation hurts GRPO")
    assert "| contradicted |" in verdict((summaries["b"] / "results.md").read_text(), "allocation hurts GRPO")
    code, out, err = combine(cli, summaries, tmp_path / "bases")
    assert code == 0, err
    md = (tmp_path / "bases/results.md").read_text()
    assert "| claim | compared | base models | estimate | adjusted interval | verdict | base models needed |" in md
    row = verdict(md, "allocation hurts GRPO")
    assert "| 2 |" in row and "inconclusive" in row
    assert json.loads(out.splitlines()[-1])["allocation hurts GRPO"] == "inconclusive"
    rec = json.loads((tmp_path / "bases/verdicts.json").read_text())
    assert rec["unit"] == "base" and rec["format"] == "lorarank-verdicts/1"
    hurts = next(c for c in rec["claims"] if c["claim"] == "allocation hurts GRPO")
    assert hurts["values"] == pytest.approx({"a": -21 / N, "b": 21 / N})  # each base: its seed mean
    assert "not run: no gradient statistics given" in verdict(md, "peaked under SFT, flat under GRPO")
    # what the verdicts were computed from, pinned: each base's two input files by their bytes
    want = {name: {"verdicts": hashlib.sha256((s / "verdicts.json").read_bytes()).hexdigest(),
                   "results": hashlib.sha256((s / "results.csv").read_bytes()).hexdigest()}
            for name, s in summaries.items()}
    assert rec["inputs"] == want


def test_intervals_across_bases_are_t_intervals_of_the_base_means(cli, tmp_path):
    rng = np.random.default_rng(1)
    grpo = {"a": [-6, -10], "b": [-14, -12], "c": [-4, -2]}
    summaries = {name: study(cli, tmp_path / name, {"grpo": ks, "sft": [3, 5]}, rng) for name, ks in grpo.items()}
    code, _, err = combine(cli, summaries, tmp_path / "bases")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "bases/results.csv")
    row = df.set_index("arm").loc["grpo/proportional/ratio"]
    means = np.array([np.mean(ks) / N for ks in grpo.values()])
    lo, hi = stats.t.interval(0.95, 2, loc=means.mean(), scale=stats.sem(means))
    assert row["diff_strict"] == pytest.approx(means.mean())
    assert (row["diff_low_strict"], row["diff_high_strict"]) == pytest.approx((lo, hi))
    assert row["p_base_strict"] == pytest.approx(stats.ttest_1samp(means, 0).pvalue)
    assert row["bases"] == 3 and row["seeds_per_base"] == "a=2;b=2;c=2"
    # accuracies: each base's seed mean of the arm, then a t interval across the three
    accs = [pd.read_csv(s / "results.csv").set_index("arm").loc["grpo/proportional/ratio", "acc_strict"]
            for s in summaries.values()]
    assert row["acc_strict"] == pytest.approx(np.mean(accs))
    # the verdict's adjusted interval: Bonferroni over the claims judged across bases (2 here), on the base means
    md = (tmp_path / "bases/results.md").read_text()
    assert "Here m = 2 (the claims with at least 2 base models)" in md
    lo, hi = stats.t.interval(1 - 0.05 / 2, 2, loc=means.mean(), scale=stats.sem(means))
    assert f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" in verdict(md, "allocation hurts GRPO")
    assert "| grpo | grpo/proportional/ratio |" in md


@pytest.mark.parametrize("case,words", [
    ("one", "combining needs at least 2 base models"),
    ("twice", "--base a is given twice"),
    ("arms", "base b has other arms than base a"),
    ("file", "is not a lorarank-verdicts/1 file"),
    ("name", "--base '../b': not a base model's name"),
    ("unit", "judges with the 'base' as the unit (allowed: 'seed')"),
    ("settings", "its settings are not"),
    ("claims", "a claim lacks"),
])
def test_bases_that_are_not_one_study_are_refused(cli, tmp_path, case, words):
    rng = np.random.default_rng(2)
    a = study(cli, tmp_path / "a", {"grpo": [2, 4], "sft": [1, 3]}, rng)
    b = study(cli, tmp_path / "b", {"grpo": [2, 4]} if case == "arms" else {"grpo": [1, 2], "sft": [0, 2]}, rng)
    summaries = {"one": {"a": a}, "twice": {"a": a}}.get(case, {"a": a, "b": b})
    if case == "name":
        summaries = {"a": a, "../b": b}
    if case in ("unit", "settings", "claims"):  # a record of the right format, edited as another writer might
        rec = json.loads((b / "verdicts.json").read_text())
        if case == "unit":
            rec["unit"] = "base"
        elif case == "settings":
            rec["settings"].pop("power")
        else:
            rec["claims"][0].pop("values")
        (b / "verdicts.json").write_text(json.dumps(rec))
    argv = [x for name, s in summaries.items() for x in ("--base", name, s / "verdicts.json", s / "results.csv")]
    if case == "twice":
        argv += ["--base", "a", a / "verdicts.json", a / "results.csv"]
    if case == "file":  # valid JSON, but no verdicts record
        (tmp_path / "other.json").write_text(json.dumps({"claims": []}))
        argv[-2] = tmp_path / "other.json"
    code, _, err = cli("combine-bases", *argv, "--out", tmp_path / "out")
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def record(claims):
    from lorarank.report import verdicts

    settings = verdicts.VerdictSettings()
    rows, m = verdicts.judge(claims, settings)
    return verdicts.record(claims, rows, m, settings)


def test_each_kind_of_claim_becomes_one_value_per_base():
    """Paired: the seed mean. Welch (SFT vs GRPO share, different runs of one base model): the difference of
    the two groups' means, now paired by base. Correlation: the seed mean on Fisher's z, back-transformed."""
    from lorarank.report.verdicts import Claim, base_level

    def claims(d, sft, grpo, r):
        return [Claim("paired", "x − y", "paired", 1, 0.03, d),
                Claim("peaked", "top-30% share (Welch, unpaired runs)", "welch", 1, 0.05, sft, grpo),
                Claim("amp", "r", "correlation", 1, 0.3, r)]

    a = record(claims({"0": 0.02, "1": 0.06}, {"0": 0.5, "1": 0.6, "2": 0.7}, {"0": 0.4, "1": 0.4}, {"0": 0.2, "1": 0.6}))
    b = record(claims({"1000": -0.01, "1001": 0.01}, {"1000": 0.5}, {"1000": 0.45, "1001": 0.55},
                      {"1000": 0.9, "1001": 0.9}))
    out = {c.claim: c for c in base_level({"a": a, "b": b})}
    assert out["paired"].values == pytest.approx({"a": 0.04, "b": 0.0}) and out["paired"].kind == "paired"
    assert out["peaked"].values == pytest.approx({"a": 0.2, "b": 0.0}) and out["peaked"].kind == "paired"
    assert "within each base model" in out["peaked"].compared and "unpaired" not in out["peaked"].compared
    z = (np.arctanh(0.2) + np.arctanh(0.6)) / 2
    assert out["amp"].values == pytest.approx({"a": np.tanh(z), "b": 0.9}) and out["amp"].kind == "correlation"


def test_a_claim_missing_in_one_base_is_missing_across_bases():
    from lorarank.report.verdicts import Claim, base_level

    a = record([Claim("c", "x − y", "paired", 1, 0.03, {"0": 0.02, "1": 0.04})])
    b = record([Claim("c", "x − y", "paired", 1, 0.03, missing="no weight metric (G rows) logged")])
    (c,) = base_level({"a": a, "b": b})
    assert c.missing == "base b: no weight metric (G rows) logged" and c.values == {}
    with pytest.raises(UserError, match="base b judged other claims than base a"):
        base_level({"a": a, "b": record([Claim("d", "x − y", "paired", 1, 0.03, {"0": 0.1})])})


def test_a_base_models_own_config_passes_the_name_check_that_refuses_a_collision():
    # the archive of base 1 records experiment `x.warmup1` with warmup.seeds [1]: it must rerun on its own
    import yaml

    from lorarank import workflow_config

    config = yaml.safe_load((Path(ROOT) / "config/config.yaml").read_text())
    config["warmup"]["seeds"] = [0, 1]
    own = workflow_config.base_config(config, "default.warmup1")
    assert own["experiment"] == "default.warmup1" and own["warmup"]["seeds"] == [1]
    workflow_config.check_bases(own)
    with pytest.raises(UserError, match="ends in '.warmup<n>', the name of another study's base model n"):
        workflow_config.check_bases({**own, "warmup": {**own["warmup"], "seeds": [0]}})
