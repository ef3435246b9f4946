"""Learning rate as a study axis, with real Snakemake: each arm tries every rate of its list on the selection
seed, the rate is chosen on the validation split only, the arm's seeds train and are tested at it, and adding a
rate runs the new rate's jobs and nothing it does not change."""

import json
import re
import shutil

import pandas as pd
import pytest
from conftest import edited_config, snakemake

pytestmark = pytest.mark.dag

RESULTS = "results/test"
RATES = [5.0e-4, 1.0e-3]


def rate_list(rates):
    def edit(c):
        c.update(regimes=["grpo"], seeds=[0])
        c["allocation"].update(strategies=["uniform", "proportional"])
        c["grpo"].update(lr=rates)
        c["selection"] = {"seeds": [0], "n": 16, "metric": "strict", "rule": "best"}
    return edit


@pytest.fixture(scope="module")
def selected(dag_run, tmp_path_factory):
    """The rate list added to a copy of the session's finished study (whose GRPO arms ran at the list's first
    rate): its data, warm-up, profiling runs and first-rate runs are reused, as a user's would be; what runs
    is the second rate's training, every validation evaluation, the selections and what follows."""
    work = tmp_path_factory.mktemp("selection") / "study"
    shutil.copytree(dag_run[0], work, symlinks=True)
    cfg = edited_config(work.parent, rate_list(RATES))
    r = snakemake(work, configfile=cfg)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    jobs = ran(r.stdout + r.stderr)
    assert sorted(j.split(":")[0] for j in jobs if j.startswith(("train_", "run_warmup"))) == ["train_grpo"] * 2, jobs
    return work, cfg


def ran(log: str) -> list[str]:
    """'rule name: wildcards' of every job a Snakemake run executed."""
    jobs, rule = [], None
    for line in (raw.strip() for raw in log.splitlines()):
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if m:
            rule = m.group(1)
            jobs.append(rule)
        elif rule and line.startswith("wildcards:"):
            jobs[-1] = f"{rule}: {line[len('wildcards: '):]}"
    return jobs


def test_each_arm_is_tested_at_the_rate_chosen_on_validation(selected):
    work, _ = selected
    manifest = json.loads((work / RESULTS / "data/manifest.json").read_text())
    for strategy in ("uniform", "proportional"):
        doc = json.loads((work / RESULTS / f"selection/grpo/{strategy}/ratio.json").read_text())
        assert [p["lr"] for p in doc["curve"]] == RATES and doc["split"] == "validation"
        best = max(doc["curve"], key=lambda p: (p["mean"], -p["lr"]))
        assert doc["chosen"] == best["lr"]
        # every validation evaluation it read graded the manifest's validation file, on selection.n questions
        for p in doc["curve"]:
            m = json.loads((work / RESULTS / f"eval/validation/grpo/{strategy}/ratio/lr{p['name']}/seed0/metrics.json")
                           .read_text())
            assert m["data"]["sha256"] == manifest["sha256"]["validation"] and m["n"] == 16
            assert m["learning_rate"] == p["lr"] and m[f"accuracy_strict"] == p["seeds"]["0"]
        test = json.loads((work / RESULTS / f"eval/test/grpo/{strategy}/ratio/lr{doc['chosen_name']}/seed0/metrics.json")
                          .read_text())
        assert test["data"]["sha256"] == manifest["sha256"]["test"] and test["learning_rate"] == doc["chosen"]
    md = (work / RESULTS / "summary/results.md").read_text()
    assert "## Learning rates (chosen on the validation split)" in md and "| grpo/proportional/ratio | best" in md
    # the profiled arm's ranks come from a uniform run at the list's first rate and a seed no arm is compared on
    alloc = json.loads((work / RESULTS / "allocations/grpo/proportional/ratio.json").read_text())
    assert alloc["profile"]["path"].endswith("runs/grpo/uniform/ratio/lr0.0005/seed100/grad_norms.parquet")
    assert len(pd.read_csv(work / RESULTS / "summary/results.csv")) == 3  # base, uniform, proportional


def test_no_selection_job_reads_the_test_split(selected):
    work, cfg = selected
    r = snakemake(work, "-n", "-p", "--forcerun", "select_rate", configfile=cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    commands = [line for line in (r.stdout + r.stderr).splitlines() if "lorarank select-rate" in line]
    assert len(commands) == 2
    for c in commands:
        reads = re.findall(r"--(?:eval|manifest) (\S+)", c)
        assert len(reads) == 3 and all("/eval/validation/" in f for f in reads[1:]), c
        assert "test" not in " ".join(reads[1:]).replace(RESULTS, "")


def test_a_regime_added_to_a_finished_study_is_planned(selected, tmp_path):
    # Snakemake runs a pending checkpoint only for a job that needs to run; the finished summary did not, so
    # before rule all named the selections this plan was "Nothing to be done" (workflow/rules/common.smk)
    work, _ = selected

    def with_sft(c):
        rate_list(RATES)(c)
        c.update(regimes=["grpo", "sft"])
        c["sft"].update(lr=RATES)

    added = edited_config(tmp_path, with_sft)
    r = snakemake(work, "-n", configfile=added)
    assert r.returncode == 0, r.stderr[-3000:]
    planned = ran(r.stdout + r.stderr)
    assert sorted(j for j in planned if j.startswith("select_rate")) == [
        f"select_rate: experiment=test, regime=sft, strategy={s}, policy=ratio" for s in ("proportional", "uniform")]
    assert not [j for j in planned if j.startswith("train_grpo")], planned


def test_adding_a_rate_runs_only_the_new_jobs(selected, tmp_path):
    # on a copy: the other tests read the two-rate study, in whatever order they run
    work = tmp_path / "copy"
    shutil.copytree(selected[0], work, symlinks=True)
    added = edited_config(tmp_path, rate_list(RATES + [2.0e-3]))
    r = snakemake(work, configfile=added)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    jobs = ran(r.stdout + r.stderr)
    trained = [j for j in jobs if j.startswith("train_grpo")]
    evaluated = [j for j in jobs if j.startswith("evaluate_model")]
    assert len(trained) == 2 and all("lr=0.002" in j and "seed=0" in j for j in trained), jobs
    assert not [j for j in jobs if j.split(":")[0] in ("prepare_data", "build_model", "run_warmup", "evaluate_base",
                                                       "allocate_ranks", "write_lora_config")], jobs
    # the new rate on validation, and on test only for an arm that now chose it (its selection-seed run is
    # its seed-0 run): nothing at the old rates ran again
    won = []
    for strategy in ("uniform", "proportional"):
        doc = json.loads((work / RESULTS / f"selection/grpo/{strategy}/ratio.json").read_text())
        assert [p["lr"] for p in doc["curve"]] == RATES + [2.0e-3]
        won += [strategy] if doc["chosen_name"] == "0.002" else []
    assert sorted(evaluated) == sorted(
        [f"evaluate_model: experiment=test, split=validation, regime=grpo, strategy={s}, policy=ratio, lr=0.002, seed=0"
         for s in ("uniform", "proportional")]
        + [f"evaluate_model: experiment=test, split=test, regime=grpo, strategy={s}, policy=ratio, lr=0.002, seed=0"
           for s in won]), jobs
