"""The whole DAG with real Snakemake on the test config, then what a change reruns."""

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, job_stats, repo_copy, standin_env

TEST_CONFIG = Path(ROOT) / "tests/workflow/config.test.yaml"


def snakemake(workdir, *args, configfile=TEST_CONFIG, timeout=1500, repo=ROOT, env=None):
    cmd = ["snakemake", "-s", f"{repo}/Snakefile", "--configfile", str(configfile), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def planned(workdir, configfile=TEST_CONFIG, repo=ROOT, env=None) -> dict[str, int]:
    """Jobs a dry run would run, per rule (from Snakemake's job stats table)."""
    r = snakemake(workdir, "-n", configfile=configfile, repo=repo, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return job_stats(r.stdout + r.stderr)


def changed(tmp_path, edit) -> Path:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    edit(cfg)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    # the stand-in is on PATH, but without --sdm apptainer the `container:` images must be ignored
    r = snakemake(work, env=standin_env(work / "apptainer.jsonl"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert not (work / "apptainer.jsonl").exists()
    return work


def test_whole_dag_produces_the_summary(finished):
    res = pd.read_csv(finished / "results/test/summary/results.csv")
    assert set(res["strategy"]) == {"base", "uniform", "proportional", "reduced", "inverse", "random", "manual"}
    assert (res["n"] == 16).all() and res["acc_strict"].between(0, 1).all()
    uni = res.set_index("strategy").loc["uniform"]
    assert (uni["rank_min"], uni["rank_max"]) == (8, 8)
    red = res.set_index("strategy").loc["reduced"]
    assert red["trainable_params"] < uni["trainable_params"]  # 70% budget
    assert res.set_index("strategy").loc["manual", "rank_max"] == 12
    md = (finished / "results/test/summary/results.md").read_text()
    assert "| uniform |" in md and ("within noise" in md or "Significantly" in md)
    # contracts between stages
    g = pd.read_parquet(finished / "results/test/runs/proportional/seed0/grad_norms.parquet")
    assert sorted(g["step"].unique()) == [1, 2, 3] and set(g["matrix"]) == {"A", "B"}
    alloc = yaml.safe_load((finished / "results/test/allocations/proportional.json").read_text())
    assert alloc["profile"]["path"].endswith("runs/uniform/seed0/grad_norms.parquet") and sum(alloc["ranks"]) == 16
    preds = pd.read_parquet(finished / "results/test/eval/base/seed0/predictions.parquet")
    assert len(preds) == 16
    assert list((finished / "logs/test/train_grpo/uniform").glob("seed0.log"))
    assert list((finished / "benchmarks/test/train_grpo/uniform").glob("seed0.tsv"))


def test_complete_run_schedules_nothing(finished):
    assert planned(finished) == {}


def test_the_archive_of_a_real_run_verifies_and_rebuilds_byte_identical(finished):
    archive = finished / "results/test/archive"
    r = subprocess.run(["python", "-m", "lorarank", "verify-archive", str(archive)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads((archive / "MANIFEST.json").read_text())
    produced = {p.relative_to(finished / "results/test").as_posix() for p in (finished / "results/test").rglob("*")
                if p.is_file() and p.name != ".snakemake_timestamp" and "archive" not in p.parts}
    assert set(doc["files"]) == produced  # every result file, and nothing else
    assert doc["code"]["git_commit"] and len(doc["code"]["tracked_files_sha256"]) == 64
    assert doc["environments"]["train"][0]["environment"]["packages"]["trl"].startswith("1.")
    assert len(doc["environments"]["train"][0]["recorded_by"]) == 14  # SFT, 6 GRPO runs, 7 evaluations
    before = (archive / "test.tar.gz").read_bytes()
    again = snakemake(finished, "--forcerun", "archive_results")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (archive / "test.tar.gz").read_bytes() == before


def test_lint_is_clean_once_images_are_named(tmp_path):
    r = snakemake(tmp_path, "--lint")
    assert r.returncode == 0 and "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr, \
        (r.stdout + r.stderr)[-3000:]


def test_evaluation_setting_reruns_only_evaluation_and_summary(finished, tmp_path):
    cfg = changed(tmp_path, lambda c: c["evaluation"].update(max_new_tokens=24))
    jobs = planned(finished, cfg)
    assert jobs == {"evaluate_model": 7, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_random_seed_reruns_only_the_random_chain(finished, tmp_path):
    cfg = changed(tmp_path, lambda c: c["allocation"]["random"].update(seed=5))
    jobs = planned(finished, cfg)
    assert jobs == {"allocate_ranks": 1, "write_lora_config": 1, "train_grpo": 1, "evaluate_model": 1,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_budget_reruns_everything_downstream_of_allocation(finished, tmp_path):
    cfg = changed(tmp_path, lambda c: c["allocation"].update(budget=20, manual_ranks=[8, 12]))
    jobs = planned(finished, cfg)
    # every arm's allocation, config, training and evaluation; not data, model, SFT or the base evaluation
    assert jobs == {"allocate_ranks": 6, "write_lora_config": 6, "train_grpo": 6, "evaluate_model": 6,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_real_gsm8k_runs_the_same_dag_dry(tmp_path):
    from conftest import GSM8K_DIR

    cfg = changed(tmp_path, lambda c: c["data"].update(source="local", path=GSM8K_DIR))
    jobs = planned(tmp_path, cfg)
    assert jobs["prepare_data"] == 1 and jobs["train_grpo"] == 6


def test_a_bad_config_fails_at_parse_time_naming_the_key(tmp_path):
    cfg = changed(tmp_path, lambda c: c["grpo"].update(generations=1))
    r = snakemake(tmp_path, "-n", configfile=cfg)
    assert r.returncode != 0 and "generations" in (r.stdout + r.stderr)


# --- code changes (issue: code changes rerun exactly the stages they affect) -----------------------
DOWNSTREAM_OF_TRAINING = {"allocate_ranks": 3, "write_lora_config": 3, "train_grpo": 6, "evaluate_model": 7,
                          "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_fresh_clone_and_touch_rerun_nothing(finished, tmp_path):
    clone = repo_copy(tmp_path)
    for f in clone.rglob("*.py"):
        f.touch()
    assert planned(finished, repo=clone) == {}


def test_comments_docstrings_and_layout_are_not_changes(finished, tmp_path):
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/gsm8k.py"
    src = f.read_text().replace('"""The GSM8K grader', '"""The (reworded) GSM8K grader', 1)
    f.write_text("# a new comment\n" + src.replace("def is_correct(pred: str | None, gold: str) -> bool:",
                                                    "def is_correct(pred: str | None,\n               gold: str) -> bool:  # why"))
    assert planned(finished, repo=clone) == {}


def test_grader_edit_reruns_what_grades(finished, tmp_path):
    """The grader scores evaluation and the GRPO correctness reward: both rerun, and what follows the
    uniform run's new gradient log; data, model build and SFT do not."""
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/gsm8k.py"
    f.write_text(f.read_text().replace("return p is not None and g is not None and p == g",
                                       "return p is not None and g is not None and abs(p - g) < 1e-9"))
    assert planned(finished, repo=clone) == DOWNSTREAM_OF_TRAINING


def test_evaluation_code_edit_reruns_evaluation_and_summary(finished, tmp_path):
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/evaluate.py"
    f.write_text(f.read_text().replace("torch.manual_seed(args.seed)", "torch.manual_seed(args.seed + 0)"))
    assert planned(finished, repo=clone) == {"evaluate_model": 7, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_allocation_code_edit_reruns_the_allocated_chain(finished, tmp_path):
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/allocation.py"
    f.write_text(f.read_text().replace("missing = total - sum(floors)", "missing = int(total - sum(floors))"))
    jobs = planned(finished, repo=clone)
    assert jobs == {"allocate_ranks": 6, "write_lora_config": 6, "train_grpo": 6, "evaluate_model": 6,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}
    assert not {"prepare_data", "build_model", "run_sft"} & set(jobs)


def test_upgraded_trl_reruns_training_not_data(finished, tmp_path):
    """A TRL upgrade, as importlib.metadata sees it: a newer dist-info first on the path."""
    fake = tmp_path / "site" / "trl-99.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: trl\nVersion: 99.0\n")
    (fake / "top_level.txt").write_text("trl\n")
    jobs = planned(finished, env={"PYTHONPATH": str(tmp_path / "site")})
    assert jobs["run_sft"] == 1 and jobs["train_grpo"] == 6 and jobs["evaluate_model"] == 7
    assert "prepare_data" not in jobs and "build_model" not in jobs
