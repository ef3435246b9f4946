"""Every strategy through `lorarank allocate`, on gradient logs whose shares are known exactly."""

import json

import numpy as np
import pytest

from conftest import write_grad_log
from lorarank.training import gradlog, ranklog
from lorarank.allocation.strategies import BUDGETED, DYNAMIC, FROZEN_DYNAMIC, PROFILED, STRATEGIES
from lorarank.study import DEFAULT_MODULES


def allocate(cli, tmp_path, *argv):
    out = tmp_path / "alloc.json"
    code, _, err = cli("allocate", *argv, "--out", out)
    assert code == 0, err
    return json.loads(out.read_text())


@pytest.fixture
def skewed_log(tmp_path):
    """28 layers, 12 steps, importance of layer l proportional to (l + 1); step 1 has zero A norms."""
    imp = np.tile(np.arange(1, 29, dtype=float), (12, 1))
    imp *= np.linspace(1, 3, 12)[:, None]  # overall scale changes per step; shares do not
    return write_grad_log(tmp_path / "grad_norms.parquet", imp)


def test_shares_follow_the_design_definition(skewed_log):
    df = gradlog.read(skewed_log)
    s = gradlog.shares(df)
    expected = np.arange(1, 29) / np.arange(1, 29).sum()
    np.testing.assert_allclose(s.to_numpy(), expected, rtol=1e-6)


def test_all_zero_step_is_skipped_not_divided(tmp_path):
    imp = np.array([[0.0, 0.0], [1.0, 3.0], [2.0, 6.0]])
    s = gradlog.shares(gradlog.read(write_grad_log(tmp_path / "g.parquet", imp)))
    np.testing.assert_allclose(s.to_numpy(), [0.25, 0.75], rtol=1e-6)


def test_uniform(cli, tmp_path):
    doc = allocate(cli, tmp_path, "--strategy", "uniform", "--budget", 896, "--num-layers", 28)
    assert doc["ranks"] == [32] * 28 and doc["budget"] == 896 and doc["profile"] is None
    assert doc["alpha_policy"] == {"name": "ratio", "value": 2.0}
    for key in ("strategy", "budget", "num_layers", "ranks", "modules", "alpha_policy", "seed", "profile"):
        assert key in doc


def test_uniform_remainder_goes_to_lowest_layers(cli, tmp_path):
    doc = allocate(cli, tmp_path, "--strategy", "uniform", "--budget", 900, "--num-layers", 28, "--allow-remainder")
    assert doc["ranks"] == [33] * 4 + [32] * 24


def test_proportional_follows_shares_and_sums_exactly(cli, tmp_path, skewed_log):
    doc = allocate(cli, tmp_path, "--strategy", "proportional", "--budget", 896, "--grad-log", skewed_log)
    r = doc["ranks"]
    assert sum(r) == 896 and doc["num_layers"] == 28
    assert r == sorted(r) and r[-1] > 3 * r[0]
    # exact: 896 * (l+1) / 406 rounded by largest remainder
    exact = [896 * (l + 1) / 406 for l in range(28)]
    assert all(abs(a - b) < 1 for a, b in zip(r, exact))
    assert doc["profile"]["path"] == skewed_log and len(doc["profile"]["sha256"]) == 64
    assert len(doc["shares"]) == 28


def test_proportional_clamps(cli, tmp_path, skewed_log):
    doc = allocate(cli, tmp_path, "--strategy", "proportional", "--budget", 896, "--grad-log", skewed_log,
                   "--min-rank", 20, "--max-rank", 40)
    assert sum(doc["ranks"]) == 896 and min(doc["ranks"]) == 20 and max(doc["ranks"]) == 40


def test_reduced_is_proportional_at_the_fraction(cli, tmp_path, skewed_log):
    doc = allocate(cli, tmp_path, "--strategy", "reduced", "--budget", 896, "--fraction", 0.7, "--grad-log", skewed_log)
    assert doc["budget"] == 627 and sum(doc["ranks"]) == 627
    assert doc["params"]["base_budget"] == 896 and doc["params"]["fraction"] == 0.7
    full = allocate(cli, tmp_path, "--strategy", "proportional", "--budget", 627, "--grad-log", skewed_log)
    assert full["ranks"] == doc["ranks"]


def test_inverse_flips_the_map(cli, tmp_path, skewed_log):
    doc = allocate(cli, tmp_path, "--strategy", "inverse", "--budget", 896, "--grad-log", skewed_log)
    r = doc["ranks"]
    assert sum(r) == 896 and r == sorted(r, reverse=True) and r[0] > 3 * r[-1]


def test_random_is_seeded_and_exact(cli, tmp_path):
    args = ("--strategy", "random", "--budget", 896, "--num-layers", 28, "--low", 16, "--high", 48)
    a = allocate(cli, tmp_path, *args, "--seed", 1)
    b = allocate(cli, tmp_path, *args, "--seed", 1)
    c = allocate(cli, tmp_path, *args, "--seed", 2)
    assert a["ranks"] == b["ranks"] and a["ranks"] != c["ranks"]
    assert sum(a["ranks"]) == 896 and sum(c["ranks"]) == 896
    assert all(16 <= d <= 48 for d in a["params"]["draws"])
    assert len(set(a["ranks"])) > 5  # actually random, not uniform in disguise


def test_manual(cli, tmp_path):
    doc = allocate(cli, tmp_path, "--strategy", "manual", "--num-layers", 4, "--ranks", "8,16,4,4")
    assert doc["ranks"] == [8, 16, 4, 4] and doc["budget"] == 32


def test_module_granularity_is_proportional_per_module(cli, tmp_path):
    # layer 0: q twice as hot as v; layer 1: v three times as hot as q, both at equal layer totals
    rows = np.array([[1.0, 1.0]] * 4)
    log = write_grad_log(tmp_path / "g.parquet", rows, modules=("q_proj", "v_proj"))
    import pandas as pd

    df = pd.read_parquet(log)
    scale = {(0, "q_proj"): 2.0, (0, "v_proj"): 1.0, (1, "q_proj"): 1.0, (1, "v_proj"): 3.0}
    df["grad_norm"] = [np.float32(g * scale[(l, m)]) for g, l, m in zip(df.grad_norm, df.layer, df.module)]
    df.to_parquet(log)
    doc = allocate(cli, tmp_path, "--strategy", "proportional", "--granularity", "module", "--budget", 16,
                   "--target-modules", "q_proj,v_proj", "--grad-log", log)
    flat = [v for d in doc["ranks"] for v in d.values()]
    assert sum(flat) == 32  # budget x modules
    assert doc["ranks"][0]["q_proj"] > doc["ranks"][0]["v_proj"]
    assert doc["ranks"][1]["v_proj"] > doc["ranks"][1]["q_proj"]


def test_module_granularity_uniform_matches_layer_uniform(cli, tmp_path):
    doc = allocate(cli, tmp_path, "--strategy", "uniform", "--granularity", "module", "--budget", 64, "--num-layers", 2)
    assert doc["ranks"] == [{m: 32 for m in doc["modules"]}] * 2


def test_layer_count_from_model(cli, tmp_path, model_json):
    doc = allocate(cli, tmp_path, "--strategy", "uniform", "--budget", 16, "--model", model_json("llama-tiny"))
    assert doc["num_layers"] == 4 and doc["ranks"] == [4] * 4


def test_proportional_from_the_weight_metric(cli, tmp_path):
    """--metric weight allocates from the G rows (rank-neutral), not the A/B rows, and says so."""
    lora = np.tile([1.0, 1.0, 1.0, 4.0], (5, 1))
    weight = np.tile([4.0, 1.0, 1.0, 1.0], (5, 1))
    log = write_grad_log(tmp_path / "g.parquet", lora, weight=weight)
    by_lora = allocate(cli, tmp_path, "--strategy", "proportional", "--budget", 32, "--grad-log", log)
    by_weight = allocate(cli, tmp_path, "--strategy", "proportional", "--budget", 32, "--grad-log", log,
                         "--metric", "weight")
    # 32 x 4/7 = 18.3 for the hot layer, 4.6 for the others (largest remainder: two get 5, one 4)
    assert by_lora["ranks"][3] == 18 and sorted(by_lora["ranks"][:3]) == [4, 5, 5]
    assert by_weight["ranks"][0] == 18 and sorted(by_weight["ranks"][1:]) == [4, 5, 5]
    assert by_lora["profile"]["metric"] == "lora" and by_weight["profile"]["metric"] == "weight"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_allocates_its_budget_from_what_it_declares(name, cli, tmp_path, skewed_log):
    """Each strategy in the registry, given every input there is: it reads what it declares (a profile, a rank
    log) and its ranks sum exactly to its budget (a new strategy is covered here without a line of its own)."""
    strategy = STRATEGIES[name]
    rank_log = tmp_path / "ranks.parquet"
    ranklog.frame([(step, layer, m, 12 if step == 0 else 2 + (layer + i) % 9, 0) for step in (0, 30)
                   for layer in range(28) for i, m in enumerate(DEFAULT_MODULES)]).to_parquet(rank_log)
    doc = allocate(cli, tmp_path, "--strategy", name, "--budget", 224, "--num-layers", 28, "--grad-log", skewed_log,
                   "--rank-log", rank_log, "--ranks", ",".join(["8"] * 28))
    flat = [v for r in doc["ranks"] for v in (r.values() if isinstance(r, dict) else [r])]
    per_layer_units = len(doc["modules"]) if doc["granularity"] == "module" else 1
    assert doc["strategy"] == name and min(flat) >= 1 and sum(flat) == doc["budget"] * per_layer_units
    assert doc["budget"] == (int(0.7 * 224) if name == "reduced" else 224)
    assert (doc["shares"] is not None) == strategy.profile
    assert (doc["profile"] or {}).get("path") == (skewed_log if strategy.profile else str(rank_log) if strategy.rank_log else None)
    assert ("init_r" in doc["params"]) == strategy.dynamic


def test_the_registry_declares_the_arms_the_study_knows():
    assert PROFILED == ("proportional", "reduced", "inverse") and BUDGETED == tuple(s for s in STRATEGIES if s != "manual")
    assert (DYNAMIC, FROZEN_DYNAMIC) == ("adalora", "adalora-final") and STRATEGIES[FROZEN_DYNAMIC].granularity == "module"
