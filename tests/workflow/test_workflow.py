"""The whole DAG with real Snakemake on the test config (one shared run: `dag_run`), then what a change
reruns: settings, operational settings, code."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TEST_CONFIG, edited_config, job_stats, planned, repo_copy, snakemake
from lorarank.training.gradmetrics import METRICS

pytestmark = pytest.mark.dag


@pytest.fixture(scope="module")
def finished(dag_run):
    return dag_run[0]


RESULTS = "results/test"
ARM = RESULTS + "/{kind}/{regime}/{strategy}/ratio"
# the test config's rates: one per regime (no selection; test_rate_selection tries a list), adalora's scale 1
RATE = {"grpo": "lr0.0005", "sft": "lr0.001"}
PROFILE = "seed100"  # allocation.profile_seed: the profiling runs' seed, none of `seeds`


def test_whole_dag_produces_the_summary(finished):
    res = pd.read_csv(finished / f"{RESULTS}/summary/results.csv")
    assert set(res["regime"]) == {"grpo", "sft"}
    for regime, block in res.groupby("regime"):
        assert list(block["strategy"]) == ["base", "uniform", "proportional", "random", "manual", "adalora",
                                           "adalora-final"], regime
    assert (res["n"] == 16).all() and res["acc_strict"].between(0, 1).all()
    arms = res.set_index("arm")
    assert (arms.loc["grpo/uniform/ratio", "rank_min"], arms.loc["grpo/uniform/ratio", "rank_max"]) == (8, 8)
    assert arms.loc["sft/proportional/ratio", "trainable_params"] == arms.loc["sft/uniform/ratio", "trainable_params"]
    assert arms.loc["grpo/manual/ratio", "rank_max"] == 12
    # README: GRPO and LoRA-SFT arms start from the same model (the warm-up's), every run of either regime
    runs = (finished / RESULTS / "runs").rglob("run.json")
    starts = {json.loads(r.read_text())["identity"]["model"]["sha256"] for r in runs}
    assert len(starts) == 1, starts
    md = (finished / f"{RESULTS}/summary/results.md").read_text()
    significant = (res["p_holm_strict"].dropna().astype(float) < 0.05).any()
    one = res["seeds_paired"].max() < 2
    assert "| grpo/uniform/ratio |" in md and "### LoRA-SFT arms" in md and "## The contrast: SFT vs GRPO" in md
    assert ("Significantly different from uniform" in md) == significant
    assert ("One seed: no run-level interval" in md) == one and one  # the test config has one seed
    assert ("No arm differs significantly from uniform" in md) == (not significant and not one)
    assert "## Verdicts" in md and "Accuracy on the test split" in md
    # contracts between stages
    for regime in ("grpo", "sft"):
        run = finished / ARM.format(kind="runs", regime=regime, strategy="proportional") / RATE[regime] / "seed0"
        g = pd.read_parquet(run / "grad_norms.parquet")
        assert set(g["matrix"]) == {"A", "B", "G"} and g["step"].max() == (3 if regime == "grpo" else 4)
        ident = json.loads((run / "run.json").read_text())["identity"]
        assert (ident["kind"], ident["strategy"], ident["alpha_policy"]["name"]) == (regime, "proportional", "ratio")
        # each regime allocates from its own uniform run's profile, a run at a seed no arm is compared on
        alloc = json.loads((finished / ARM.format(kind="allocations", regime=regime, strategy="proportional")
                            ).with_suffix(".json").read_text())
        assert alloc["profile"]["path"].endswith(f"runs/{regime}/uniform/ratio/{RATE[regime]}/{PROFILE}/grad_norms.parquet")
        assert sum(alloc["ranks"]) == 16
    stats = json.loads((finished / f"{RESULTS}/summary/gradient_stats.json").read_text())
    assert set(stats["arms"]["grpo/proportional/ratio"]["metrics"]) == set(METRICS)
    assert set(stats["contrast"]["regimes"]) == {"grpo", "sft", "warmup"}
    assert "## Gradient importance: mechanics or learning?" in md and "| sft/proportional/ratio | weight |" in md
    # the warm-up trained on rows the arms never see, and validation is rows neither trains on
    warm, train, val = (pd.read_parquet(finished / f"{RESULTS}/data/{s}.parquet") for s in ("warmup", "train", "validation"))
    assert (len(warm), len(train), len(val)) == (300, 268, 32)
    assert not set(warm["question"]) & set(train["question"]) and not set(val["question"]) & set(train["question"])
    assert json.loads((finished / f"{RESULTS}/eval/test/base/seed0/metrics.json").read_text())["identity"]["kind"] == "base"
    assert (finished / "logs/test/train_sft/uniform/ratio/lr0.001/seed0.log").is_file()
    assert (finished / "benchmarks/test/train_grpo/uniform/ratio/lr0.0005/seed0.tsv").is_file()
    # the dynamic arm: pruned to the static arms' total rank, its final ranks frozen as a static arm
    for regime in ("grpo", "sft"):
        run = finished / ARM.format(kind="runs", regime=regime, strategy="adalora") / RATE[regime] / "seed0"
        ranks = pd.read_parquet(run / "ranks.parquet")
        assert ranks[ranks.step == ranks.step.max()]["rank"].sum() == 16 * 7
        assert stats["runs"][f"{regime}/adalora/ratio/seed0"]["ranks"]["total"][-1] == 16 * 7
        frozen = json.loads((finished / ARM.format(kind="allocations", regime=regime, strategy="adalora-final")
                             ).with_suffix(".json").read_text())
        assert frozen["profile"]["path"].endswith(f"runs/{regime}/adalora/ratio/{RATE[regime]}/{PROFILE}/ranks.parquet")
        assert sum(sum(layer.values()) for layer in frozen["ranks"]) == 16 * 7
        assert arms.loc[f"{regime}/adalora/ratio", "effective_params"] < arms.loc[f"{regime}/adalora/ratio", "trainable_params"]
    assert "| grpo/adalora/ratio − grpo/adalora-final/ratio |" in md
    assert "## Dynamic allocation (AdaLoRA)" in md and (finished / f"{RESULTS}/summary/figures/ranks.png").is_file()


def test_the_numerics_profile_is_in_force_in_every_job_and_recorded(finished):
    """Every training and evaluation job of the real run recorded the kernel level torch reported in it."""
    records = list((finished / RESULTS).glob("runs/*/*/*/lr*/seed*/run.json")) + [finished / RESULTS / "warmup/run.json"]
    records += list((finished / RESULTS).glob("eval/**/metrics.json"))
    assert len(records) > 20
    for path in records:
        num = json.loads(path.read_text())["environment"]["numerics"]
        assert (num["kernels"], num["torch_cpu_capability"], num["torch_threads"]) == ("portable", "AVX2", 2), path
        assert (num["env"]["MKL_CBWR"], num["env"]["ONEDNN_MAX_CPU_ISA"]) == ("COMPATIBLE,STRICT", "AVX2"), path
    manifest = json.loads((finished / RESULTS / "archive/MANIFEST.json").read_text())
    assert manifest["config"]["numerics"] == {"kernels": "portable", "threads": 2, "deterministic": True}
    assert [n["torch_cpu_capability"] for n in manifest["numerics"]] == ["AVX2"]


def test_a_numerics_change_reruns_every_compute_job_and_what_follows(dag_run, tmp_path):
    from conftest import job_stats

    work, log = dag_run
    full = job_stats(log)
    jobs = planned(work, edited_config(tmp_path, lambda c: c.setdefault("numerics", {}).update(threads=1)))
    from lorarank.workflow_config import COMPUTE_RULES

    compute = [rule for rule in (*COMPUTE_RULES, "evaluate_base") if rule in full]  # no import_model: a tiny model
    assert {rule: jobs.get(rule) for rule in compute} == {rule: full[rule] for rule in compute}
    assert "prepare_data" not in jobs and jobs["summarize_results"] == 1
    r = snakemake(work, "-n", "-p", "--forcerun", "train_grpo", configfile=edited_config(tmp_path, lambda c: None))
    assert "--kernels portable --threads 2 --deterministic" in r.stdout + r.stderr


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
    # warm-up, 12 runs, 4 profiling runs (uniform and adalora of each regime), 13 evaluations
    assert len(doc["environments"]["train"][0]["recorded_by"]) == 30
    before = (archive / "test.tar.gz").read_bytes()
    again = snakemake(finished, "--forcerun", "archive_results")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (archive / "test.tar.gz").read_bytes() == before


def test_lint_is_clean_once_images_are_named(tmp_path):
    r = snakemake(tmp_path, "--lint", apptainer=False)
    assert r.returncode == 0 and "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr, \
        (r.stdout + r.stderr)[-3000:]


def test_evaluation_setting_reruns_only_evaluation_and_summary(finished, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["evaluation"].update(max_new_tokens=24))
    jobs = planned(finished, cfg)
    assert jobs == {"evaluate_model": 12, "evaluate_base": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


OPERATIONAL = {
    "grpo.save_steps": (lambda c: c["grpo"].update(save_steps=1), "train_grpo", "--save-steps 1 "),
    "warmup.save_steps": (lambda c: c["warmup"].update(save_steps=7), "run_warmup", "--save-steps 7 "),
    "sft.save_steps": (lambda c: c["sft"].update(save_steps=3), "train_sft", "--save-steps 3 "),
    "evaluation.batch_size": (lambda c: c["evaluation"].update(batch_size=5), "evaluate_model", "--batch-size 5 "),
    "report_to": (lambda c: c.update(report_to=["tensorboard"]), "train_grpo", "--report-to tensorboard "),
    # where a study runs, not what it computes (a site's section: the archive's config leaves it out too)
    "slurm": (lambda c: c.update(slurm={"partition": "gpu", "account": "lab"}), "train_grpo", "slurm_partition=gpu"),
}


@pytest.mark.parametrize("key", list(OPERATIONAL))
def test_operational_settings_rerun_nothing(finished, tmp_path, key):
    """Checkpoint cadence and generation batch size change how a job runs, not what it produces
    (predictions are identical across batch sizes: test_evaluate)."""
    edit, rule, flag = OPERATIONAL[key]
    cfg = edited_config(tmp_path, edit)
    assert planned(finished, cfg) == {}
    r = snakemake(finished, "-n", "-p", "--forcerun", rule, configfile=cfg)
    assert flag in r.stdout + r.stderr  # and the job still gets it


def test_random_seed_reruns_only_the_random_chain(finished, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["allocation"]["random"].update(seed=5))
    jobs = planned(finished, cfg)
    # the random arm of each regime, nothing else
    assert jobs == {"allocate_ranks": 2, "write_lora_config": 2, "train_grpo": 1, "train_sft": 1, "evaluate_model": 2,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_budget_reruns_everything_downstream_of_allocation(finished, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["allocation"].update(budget=20, manual_ranks=[8, 12]))
    jobs = planned(finished, cfg)
    # every arm's allocation, config, training (the profiling runs too) and evaluation; not data, model, warm-up
    # or the base evaluation
    assert jobs == {"allocate_ranks": 12, "write_lora_config": 12, "train_grpo": 8, "train_sft": 8, "evaluate_model": 12,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_adding_an_alpha_policy_runs_only_its_own_arms(finished, tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["allocation"].update(alpha_policies=["ratio", "rslora"]))
    r = snakemake(finished, "-n", configfile=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = planned(finished, cfg)
    assert jobs == {"allocate_ranks": 12, "write_lora_config": 12, "train_grpo": 6, "train_sft": 6, "evaluate_model": 12,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}
    planned_outputs = [line for line in r.stdout.splitlines() if line.strip().startswith("output:")]
    assert planned_outputs and not any("/ratio" in line for line in planned_outputs
                                       if "/runs/" in line or "/eval/" in line or "/lora/" in line)


def test_every_alpha_policy_of_a_strategy_gets_the_same_ranks(finished, tmp_path):
    """README: the profiling runs use the first alpha policy, so that every policy of a strategy gets the same
    ranks. The second policy's allocations made on a copy of the study: profiled, seeded and frozen alike hold
    the first policy's ranks, from the same profile, and differ only in their alpha."""
    copy = tmp_path / "study"
    shutil.copytree(finished, copy, symlinks=True)
    cfg = edited_config(tmp_path, lambda c: c["allocation"].update(alpha_policies=["ratio", "rslora"]))
    targets = [f"{RESULTS}/allocations/{regime}/{strategy}/rslora.json" for regime in ("grpo", "sft")
               for strategy in ("proportional", "random", "adalora-final")]
    r = snakemake(copy, *targets, configfile=cfg)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert job_stats(r.stdout + r.stderr) == {"allocate_ranks": 6}  # no profiling run again
    for target in targets:
        second, first = (json.loads((copy / t).read_text()) for t in (target, target.replace("rslora", "ratio")))
        assert (second["ranks"], second["profile"]) == (first["ranks"], first["profile"]), target
        assert (second["alpha_policy"]["name"], first["alpha_policy"]["name"]) == ("rslora", "ratio")


def test_adding_a_strategy_runs_only_its_own_arms(finished, tmp_path):
    """README: "adding a strategy runs only its arms". `inverse` reads the profiling runs the study already has:
    one allocation, LoRA config, training and evaluation per regime, then the summary; nothing is retrained."""
    cfg = edited_config(tmp_path, lambda c: c["allocation"]["strategies"].append("inverse"))
    r = snakemake(finished, "-n", configfile=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    assert job_stats(r.stdout + r.stderr) == {
        "allocate_ranks": 2, "write_lora_config": 2, "train_grpo": 1, "train_sft": 1, "evaluate_model": 2,
        "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}
    outputs = [line for line in r.stdout.splitlines() if line.strip().startswith("output:")]
    assert not any(f"{RESULTS}/" in line and "/inverse/" not in line and "/summary/" not in line
                   and "/analysis/" not in line and "/archive" not in line for line in outputs), outputs


def test_adding_the_sft_regime_runs_only_its_own_arms(finished, tmp_path):
    """A finished GRPO-only study (the shared run without its sft outputs), then `regimes: [grpo, sft]`."""
    copy = tmp_path / "grpo-only"
    shutil.copytree(finished, copy, symlinks=True)
    for kind in ("allocations", "lora", "runs", "eval/test"):
        shutil.rmtree(copy / RESULTS / kind / "sft")
    grpo_only = edited_config(tmp_path, lambda c: c.update(regimes=["grpo"]))
    assert planned(copy, grpo_only) == {"analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}
    r = snakemake(copy, configfile=grpo_only)  # now it is a finished GRPO-only study, its records included
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert planned(copy) == {"allocate_ranks": 6, "write_lora_config": 6, "train_sft": 8, "evaluate_model": 6,
                             "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_a_second_warmup_seed_runs_one_whole_study_more_and_judges_across_them(finished, tmp_path):
    """`warmup.seeds: [0, 1]` on the finished study: the first base model keeps results/test and reruns nothing
    (its archive records its own study: warm-up seed 0); the second is a whole study of its own, its tiny model
    initialised with model.tiny.seed + 1, warmed up with seed 1, and its runs at seeds of their own (1000 + k);
    one combine_bases job reads both."""
    one = planned(tmp_path, TEST_CONFIG)  # what one whole study is, planned from nothing
    cfg = edited_config(tmp_path, lambda c: c["warmup"].update(seeds=[0, 1]))
    r = snakemake(finished, "-n", "-p", configfile=cfg)
    assert r.returncode == 0, r.stderr[-2000:]
    assert job_stats(r.stdout + r.stderr) == {**one, "combine_bases": 1}
    outputs = [line for line in r.stdout.splitlines() if line.strip().startswith("output:")]
    assert not any(f"{RESULTS}/" in line and "/bases/" not in line for line in outputs)
    config = yaml.safe_load(TEST_CONFIG.read_text())
    second = re.escape(f"{RESULTS}.warmup1")
    assert re.search(rf"build-model .*--seed {config['model']['tiny']['seed'] + 1} .*--out {second}/model/base", r.stdout)
    assert re.search(rf"sft --model {second}/model/base .*--seed 1 .*--out {second}/warmup", r.stdout)
    trained = set(re.findall(rf"--seed (\d+) .*--out {second}/runs/", r.stdout))
    want = {1000 + s for s in config["seeds"]} | {1000 + int(PROFILE.removeprefix("seed"))}
    assert trained == {str(s) for s in want}
    assert re.search(rf"combine-bases --base test {RESULTS}/summary/verdicts.json {RESULTS}/summary/results.csv "
                     rf"--base test.warmup1 {second}/summary/verdicts.json", r.stdout)


def test_regimes_and_policies_plan_as_configured(tmp_path):
    """Dry runs of small configs: one chain per (regime, strategy, policy, seed), one warm-up, one base evaluation,
    and the uniform profiling run under the first policy."""
    cfg = edited_config(tmp_path, lambda c: (c.update(regimes=["sft"], seeds=[0, 1]), c["allocation"].update(
        strategies=["proportional"], alpha_policies=["constant", "rslora"])))
    assert planned(tmp_path, cfg) == {
        "prepare_data": 1, "build_model": 1, "run_warmup": 1, "allocate_ranks": 4, "write_lora_config": 4,
        "train_sft": 9, "evaluate_model": 8, "evaluate_base": 1, "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_real_gsm8k_runs_the_same_dag_dry(tmp_path):
    from conftest import GSM8K_DIR

    cfg = edited_config(tmp_path, lambda c: c["data"].update(source="local", path=GSM8K_DIR))
    jobs = planned(tmp_path, cfg)
    assert jobs["prepare_data"] == 1 and jobs["train_grpo"] == 8 and jobs["train_sft"] == 8


def test_a_bad_value_fails_at_parse_time_naming_the_key(tmp_path):
    cfg = edited_config(tmp_path, lambda c: c["grpo"].update(generations=1))
    r = snakemake(tmp_path, "-n", configfile=cfg)
    assert r.returncode != 0 and "1 is less than the minimum of 2" in r.stdout + r.stderr
    assert "generations" in r.stdout + r.stderr


# --- code changes (issue: code changes rerun exactly the stages they affect) -----------------------
def replace(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {path}: update the test's edit"
    path.write_text(text.replace(old, new))


# the grader scores the GRPO reward and every evaluation: GRPO's runs rerun, with the allocations taken from
# its runs (proportional from uniform's profile, adalora-final from adalora's ranks); the LoRA-SFT runs (which
# never grade) do not
DOWNSTREAM_OF_TRAINING = {"allocate_ranks": 2, "write_lora_config": 2, "train_grpo": 8, "evaluate_model": 12,
                          "evaluate_base": 1, "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1,
                          "all": 1}


def test_fresh_clone_and_touch_rerun_nothing(finished, tmp_path):
    clone = repo_copy(tmp_path)
    for f in clone.rglob("*.py"):
        f.touch()
    assert planned(finished, repo=clone) == {}


def test_comments_docstrings_and_layout_are_not_changes(finished, tmp_path):
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/evaluation/gsm8k.py"
    replace(f, '"""The GSM8K grader', '"""The (reworded) GSM8K grader')
    replace(f, "def is_correct(pred: str | None, gold: str) -> bool:",
            "def is_correct(pred: str | None,\n               gold: str) -> bool:  # why")
    f.write_text("# a new comment\n" + f.read_text())
    assert planned(finished, repo=clone) == {}


def test_grader_edit_reruns_what_grades(finished, tmp_path):
    """The grader scores evaluation and the GRPO correctness reward: both rerun, and what follows the
    uniform run's new gradient log; data, model build and SFT do not."""
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/evaluation/gsm8k.py"
    replace(f, "return p is not None and g is not None and p == g",
            "return p is not None and g is not None and abs(p - g) < 1e-9")
    assert planned(finished, repo=clone) == DOWNSTREAM_OF_TRAINING


def test_evaluation_code_edit_reruns_evaluation_and_summary(finished, tmp_path):
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/evaluation/evaluate.py"
    replace(f, "torch.manual_seed(settings.seed)", "torch.manual_seed(settings.seed + 0)")
    assert planned(finished, repo=clone) == {"evaluate_model": 12, "evaluate_base": 1, "summarize_results": 1,
                                             "archive_results": 1, "all": 1}


def test_allocation_code_edit_reruns_the_allocated_chain(finished, tmp_path):
    clone = repo_copy(tmp_path)
    f = clone / "lorarank/allocation/rounding.py"
    replace(f, "missing = total - sum(floors)", "missing = int(total - sum(floors))")
    jobs = planned(finished, repo=clone)
    assert jobs == {"allocate_ranks": 12, "write_lora_config": 12, "train_grpo": 8, "train_sft": 8, "evaluate_model": 12,
                    "analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}
    assert not {"prepare_data", "build_model", "run_warmup"} & set(jobs)


def test_upgraded_trl_changes_the_fingerprints_of_training_not_data(tmp_path):
    """On the host (no images) a TRL upgrade, as importlib.metadata sees it, changes what SFT and training
    hash, so they rerun; data preparation, allocation and evaluation do not import it. (With images,
    the digest stands for the versions: see test_apptainer.)"""
    fake = tmp_path / "site" / "trl-99.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: trl\nVersion: 99.0\n")
    (fake / "top_level.txt").write_text("trl\n")
    code = "import json; from lorarank.provenance.fingerprint import fingerprints; print(json.dumps(fingerprints('.')))"

    def prints(extra_path):
        env = {"PYTHONPATH": f"{extra_path}:{ROOT}" if extra_path else ROOT}
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
        return json.loads(r.stdout)

    before, after = prints(None), prints(tmp_path / "site")
    assert {c for c in before if before[c] != after[c]} == {"sft", "train"}


def test_without_sdm_apptainer_the_images_are_ignored(tmp_path):
    """`container:` on every rule, but a plain run uses the host's software (the stand-in is on PATH)."""
    r = snakemake(tmp_path, "results/test/data/manifest.json", apptainer=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "results/test/data/manifest.json").is_file() and not (tmp_path / "apptainer.jsonl").exists()
