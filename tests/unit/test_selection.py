"""`lorarank select-rate`: the rule picks from validation accuracies, and nothing but the validation split of
the manifest can choose (the workflow's run: tests/workflow/test_rate_selection.py)."""

import json
import math
import subprocess
import sys

import pytest

from lorarank.errors import UserError
from lorarank.report.selection import choose, curve, rate_name, select
from lorarank.study import run_identity

SHA = {"warmup": "w" * 64, "train": "t" * 64, "validation": "v" * 64, "test": "x" * 64}


def metrics(tmp_path, lr, seed, acc, split="validation", strategy="uniform", subset="s" * 64):
    ident = run_identity("grpo", strategy, {"name": "ratio"}, seed, {"path": "m", "sha256": "0" * 64})
    doc = {"identity": ident, "learning_rate": lr, "n": 100, "data": {"path": f"{split}.parquet", "sha256": SHA[split]},
           "subset_sha256": subset, "accuracy_strict": acc, "accuracy_flexible": acc + 0.1}
    path = tmp_path / f"{strategy}-{rate_name(lr)}-{seed}-{split}.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"sha256": SHA}))
    return str(path)


def test_best_takes_the_highest_mean_and_a_tie_the_smaller_rate(tmp_path, manifest):
    evals = [metrics(tmp_path, lr, s, acc) for lr, s, acc in
             [(1e-3, 0, 0.30), (1e-3, 1, 0.40), (3e-3, 0, 0.50), (3e-3, 1, 0.30), (1e-2, 0, 0.20), (1e-2, 1, 0.20)]]
    doc = select(evals, manifest, "strict", "best")
    assert [p["mean"] for p in doc["curve"]] == pytest.approx([0.35, 0.40, 0.20])
    assert doc["chosen"] == 3e-3 and doc["chosen_name"] == "0.003" and doc["split"] == "validation"
    (tmp_path / "tie").mkdir()
    tie = [metrics(tmp_path / "tie", lr, 0, 0.3) for lr in (1e-3, 3e-3)]
    assert select(tie, manifest, "strict", "best")["chosen"] == 1e-3


def test_one_se_prefers_the_smallest_rate_not_distinguishably_worse():
    points = [{"lr": 1e-3, "mean": 0.40, "seeds": {"0": 0.40}}, {"lr": 3e-3, "mean": 0.44, "seeds": {"0": 0.44}},
              {"lr": 1e-2, "mean": 0.20, "seeds": {"0": 0.20}}]
    # one binomial standard error of 0.44 on 100 questions is 0.0496: 0.40 is within it, 0.20 is not
    assert choose(points, "best", 100)["lr"] == 3e-3 and choose(points, "one-se", 100)["lr"] == 1e-3
    assert choose(points, "one-se", 10000)["lr"] == 3e-3  # with many questions 0.40 is distinguishably worse


def test_one_se_is_one_binomial_standard_error_over_all_the_best_rates_answers():
    """The margin is the best mean's standard error over its seeds' answers together (2 seeds x 100 questions
    here: 0.0351), not one seed's (0.0496) nor two errors: just inside it the smaller rate wins, just outside,
    and anywhere from one to two errors below, the best does."""
    se = math.sqrt(0.44 * 0.56 / 200)

    def points(low):
        return [{"lr": 1e-3, "mean": low, "seeds": {"0": low, "1": low}},
                {"lr": 3e-3, "mean": 0.44, "seeds": {"0": 0.44, "1": 0.44}}]

    assert choose(points(0.44 - 0.99 * se), "one-se", 100)["lr"] == 1e-3
    for k in (1.01, 1.5, 1.99):
        assert choose(points(0.44 - k * se), "one-se", 100)["lr"] == 3e-3, k


def test_the_test_split_cannot_choose(tmp_path, manifest):
    evals = [metrics(tmp_path, 1e-3, 0, 0.3), metrics(tmp_path, 3e-3, 0, 0.5, split="test")]
    with pytest.raises(UserError, match=r"evaluated test, not the validation split: rates are chosen on validation only"):
        select(evals, manifest, "strict", "best")


@pytest.mark.parametrize("case,expected", [
    ("two arms", "--eval files are of several arms"),
    ("other questions", "evaluated on different questions"),
    ("a missing seed", "every rate needs every selection seed"),
    ("no rate recorded", "has no 'learning_rate'"),
])
def test_inconsistent_evaluations_are_refused_in_one_line(tmp_path, manifest, case, expected):
    evals = [metrics(tmp_path, 1e-3, 0, 0.3), metrics(tmp_path, 1e-3, 1, 0.3)]
    if case == "two arms":
        evals.append(metrics(tmp_path, 3e-3, 0, 0.3, strategy="proportional"))
    elif case == "other questions":
        evals.append(metrics(tmp_path, 3e-3, 0, 0.3, subset="o" * 64))
    elif case == "a missing seed":
        evals.append(metrics(tmp_path, 3e-3, 0, 0.3))
    else:
        doc = json.loads(open(evals[0]).read())
        doc["learning_rate"] = None
        open(evals[0], "w").write(json.dumps(doc))
    with pytest.raises(UserError, match=expected):
        select(evals, manifest, "strict", "best")


def test_the_command_writes_the_record_and_refuses_an_unknown_rule(tmp_path, manifest):
    evals = [metrics(tmp_path, lr, 0, acc) for lr, acc in ((1e-3, 0.3), (3e-3, 0.5))]
    out = tmp_path / "sel" / "uniform.json"
    args = [sys.executable, "-m", "lorarank", "select-rate", "--manifest", manifest, "--out", str(out)]
    args += [x for e in evals for x in ("--eval", e)]
    r = subprocess.run(args + ["--rule", "median"], capture_output=True, text=True)
    assert r.returncode != 0 and not out.exists()
    assert r.stderr.strip().splitlines()[-1].endswith("--rule 'median' is not a selection rule (allowed: best, one-se)")
    r = subprocess.run(args + ["--metric", "flexible"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["chosen"] == 3e-3 and doc["metric"] == "flexible" and [p["name"] for p in doc["curve"]] == ["0.001", "0.003"]
    assert curve([json.loads(open(e).read()) for e in evals], "flexible")[1]["mean"] == pytest.approx(0.6)


@pytest.mark.parametrize("doc", [[], {"sha256": ["v" * 64]}, {"sha256": {"validation": 7}}, {}])
def test_a_malformed_data_manifest_is_refused_in_one_line(tmp_path, doc, cli):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(doc))
    evals = [x for lr in (1e-3, 3e-3) for x in ("--eval", metrics(tmp_path, lr, 0, 0.3))]
    code, _, err = cli("select-rate", "--manifest", path, *evals, "--out", tmp_path / "sel.json")
    assert code == 2 and err.strip().splitlines() == [
        "lorarank select-rate: error: --manifest has no validation split (prepared before lorarank 0.3: rerun "
        "prepare-data)"]
    assert not (tmp_path / "sel.json").exists()
