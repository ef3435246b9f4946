"""The workflow on a real one-node Slurm cluster (Debian slurm-wlm + munge, started by
scripts/slurm-up.sh), through `snakemake --profile slurm` as a user runs it, on a one-arm slice of
the test config (GRPO, uniform: every kind of cluster job, a fraction of the queue time). Every run is
bounded by `timeout`: without a status command that works, Snakemake would wait forever."""

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from conftest import DAG_CALLS, ROOT, TEST_CONFIG, edited_config, job_stats, standin_env

from lorarank.provenance.containers import COMMAND_ENV

pytestmark = [pytest.mark.dag, pytest.mark.slurm]

CLUSTER_RULES = {"run_warmup": 1, "train_grpo": 1, "evaluate_model": 1, "evaluate_base": 1}


def jobs_under(directory: Path, state: str = "all") -> list[str]:
    """Slurm jobs whose output goes under `directory` (the plugin's logs/slurm in a run's work directory): this
    session's own, not a parallel session's on the same cluster."""
    ids = subprocess.run(["squeue", "-h", "-t", state, "-o", "%i"], capture_output=True, text=True).stdout.split()
    return [jid for jid in ids if f"StdOut={directory}/" in subprocess.run(
        ["scontrol", "show", "job", jid], capture_output=True, text=True).stdout]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    r = subprocess.run(["bash", f"{ROOT}/scripts/slurm-up.sh"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield
    leftover = jobs_under(tmp_path_factory.getbasetemp())  # a failed test's; never another session's
    if leftover:
        subprocess.run(["scancel", *leftover], capture_output=True)


# Where the slice's jobs go: the cluster's second partition (scripts/slurm-up.sh: "cpu" is the default, so a job
# found in "gpu" got there by the config), charged to an account (no accounting database: Slurm records it as given)
SITE = {"partition": "gpu", "account": "lorarank-test"}
SEED1 = "results/test/runs/grpo/uniform/ratio/lr0.0005/seed1"  # the run the cancel test adds


@pytest.fixture(scope="module")
def slice_config(tmp_path_factory):
    def one_arm(c):
        c.update(regimes=["grpo"], slurm=SITE)
        c["allocation"].update(strategies=["uniform"])

    return edited_config(tmp_path_factory.mktemp("slice"), one_arm)


def slurm_snakemake(work, *args, configfile, limit=1200):
    # from the repository root, as the README says, so that `--profile slurm` finds ./slurm
    cmd = ["timeout", str(limit), "snakemake", "--profile", "slurm", "--directory", str(work),
           "--configfile", str(configfile), *args]
    # the profile asks for Apptainer: the stand-in (test double) answers
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=standin_env(Path(work) / "apptainer.jsonl"))


def submitted(text: str) -> dict[str, list[str]]:
    """rule -> Slurm job ids, from Snakemake's log."""
    jobs: dict[str, list[str]] = {}
    for m in re.finditer(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", text):
        rule = Path(m[2]).parts[Path(m[2]).parts.index("slurm") + 1] if "slurm" in Path(m[2]).parts else "?"
        jobs.setdefault(rule.replace("rule_", ""), []).append(m[1])
    return jobs


@pytest.fixture(scope="module")
def slurm_run(cluster, slice_config, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm")
    r = slurm_snakemake(work, configfile=slice_config)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    shutil.copy(work / "apptainer.jsonl", work / DAG_CALLS)  # this run's calls alone: the rerun tests append
    return work, r.stdout + r.stderr


def test_every_heavy_rule_ran_as_a_slurm_job(slurm_run):
    work, log = slurm_run
    jobs = submitted(log)
    assert {rule: len(ids) for rule, ids in jobs.items()} == CLUSTER_RULES
    for rule, ids in jobs.items():
        for jid in ids:  # Slurm's own job output file, kept by the profile
            assert list((work / "logs" / "slurm").rglob(f"{jid}.log")), (rule, jid)
    assert (work / "results/test/summary/results.csv").is_file()


def test_every_slurm_job_ran_its_rule_in_its_pinned_image_with_nv(slurm_run):
    work, log = slurm_run
    images = yaml.safe_load(TEST_CONFIG.read_text())["containers"]
    execs = [json.loads(line) for line in (work / DAG_CALLS).read_text().splitlines()]
    execs = [c for c in execs if c["call"] == "exec"]
    by_job = {c["slurm_job"]: c for c in execs if c["slurm_job"]}
    for rule, ids in submitted(log).items():
        for jid in ids:
            c = by_job[jid]
            command = re.search(r"-m\s+lorarank\s+([\w-]+)", c["command"][-1])[1]
            assert c["url"] == images[COMMAND_ENV[command]] and "--nv" in c["options"], (rule, c)
    # local rules in images too: data, model, allocation, LoRA config, analysis, summary, archive
    assert len(execs) == sum(CLUSTER_RULES.values()) + 7 and len(by_job) == sum(CLUSTER_RULES.values())


def test_every_slurm_job_landed_where_the_config_sends_it(slurm_run):
    """config `slurm:` -> the plugin's slurm_partition / slurm_account: inside each job Slurm says "gpu" (not
    the default "cpu") and names the account, and the job holds exactly the cores its threads use."""
    work, log = slurm_run
    execs = [json.loads(line) for line in (work / DAG_CALLS).read_text().splitlines()]
    seen = {c["slurm_job"]: c for c in execs if c["call"] == "exec" and c["slurm_job"]}
    threads = yaml.safe_load(TEST_CONFIG.read_text()).get("numerics", {}).get("threads", 2)
    for rule, ids in submitted(log).items():
        for jid in ids:
            job = seen[jid]  # what the job saw while it ran (Slurm keeps a record only MinJobAge after it ends)
            assert (job["slurm_partition"], job["slurm_account"], job["slurm_cpus"]) == \
                (SITE["partition"], SITE["account"], str(threads)), (rule, jid, job)
    runs = list((work / "results/test").rglob("run.json"))  # the warm-up and every training run
    assert len(runs) == 2 and all(json.loads(r.read_text())["environment"]["numerics"]["torch_threads"] == threads
                                  for r in runs)


def test_local_rules_did_not_queue(slurm_run):
    _, log = slurm_run
    for rule in ("allocate_ranks", "write_lora_config", "summarize_results", "prepare_data"):
        assert f"localrule {rule}:" in log


def test_a_failing_rule_is_reported_and_fails_the_run(slurm_run, slice_config, tmp_path):
    """A job that fails inside Slurm (its input is corrupt; a bad config would not get that far) fails the
    run, naming the rule and the Slurm job. On a copy of the finished run: the next test needs it intact."""
    work, _ = slurm_run
    copy = tmp_path / "copy"
    shutil.copytree(work, copy, symlinks=True)
    (copy / "results/test/data/test.parquet").write_bytes(b"not parquet")  # newer: the evaluations rerun
    r = slurm_snakemake(copy, "--retries", "0", configfile=slice_config, limit=600)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "Error in rule evaluate_" in text and "SLURM jobid" in text


def test_scancel_mid_job_then_rerun_resumes_from_its_checkpoint_and_does_only_what_is_missing(
        slurm_run, slice_config, tmp_path):
    """README: "a killed job resumes from its newest checkpoint". On a copy of the finished run, a second seed
    trains with a checkpoint every step (`save_steps` reruns nothing); once its first checkpoint is complete,
    its Slurm job is cancelled. The rerun plans that one training job and the evaluation behind it, and the
    training resumes from the checkpoint rather than starting afresh."""
    work = tmp_path / "copy"
    shutil.copytree(slurm_run[0], work, symlinks=True)
    cfg = yaml.safe_load(Path(slice_config).read_text())
    cfg["seeds"] = [0, 1]  # adds one run (seed 1) and its evaluation
    cfg["grpo"]["save_steps"] = 1
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    cancelled = []
    stop = threading.Event()

    def cancel_training():
        # the run's first complete checkpoint (its marker is written last), then its job, while it runs
        while not stop.wait(0.05):
            if not list((work / SEED1).glob("checkpoints/checkpoint-*/lorarank.json")):
                continue
            for jid in jobs_under(work / "logs" / "slurm" / "rule_train_grpo", "RUNNING"):  # this copy's training job
                subprocess.run(["scancel", jid])
                cancelled.append(jid)
                return

    t = threading.Thread(target=cancel_training)
    t.start()
    try:
        r = slurm_snakemake(work, "--retries", "0", configfile=changed, limit=900)
    finally:
        stop.set()
        t.join()
    assert cancelled, "no training job was seen running after its first checkpoint"
    assert r.returncode != 0
    dry = slurm_snakemake(work, "-n", configfile=changed, limit=120)  # the same images: the profile's
    planned = job_stats(dry.stdout + dry.stderr)
    assert planned["train_grpo"] == 1 and "allocate_ranks" not in planned and "run_warmup" not in planned
    assert "evaluate_base" not in planned
    again = slurm_snakemake(work, configfile=changed, limit=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert {rule: len(ids) for rule, ids in submitted(again.stdout + again.stderr).items()} == \
        {"train_grpo": 1, "evaluate_model": 1}
    resumed = json.loads((work / SEED1 / "run.json").read_text())["resumed_from"]
    assert re.search(r"checkpoints/checkpoint-[123]$", resumed or ""), resumed


def test_paper_sbatch_requests(tmp_path):
    """What the paper config asks Slurm for, as a dry run prints it: with a site's `slurm:` section, GPU jobs
    to its GPU partition, and a training job's cores the threads of its four processes."""
    images = yaml.safe_load(TEST_CONFIG.read_text())["containers"]
    site = {"partition": "cpu", "gpu_partition": "gpu", "account": "proj"}
    r = subprocess.run(["timeout", "120", "snakemake", "-n", "--profile", "slurm", "--configfile", "config/paper.yaml",
                        "--config", f"containers={json.dumps(images)}", f"slurm={json.dumps(site)}",
                        "--directory", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       env=standin_env("/dev/null"))
    assert r.returncode == 0, r.stderr[-3000:]
    blocks = {m[1]: m[0] for m in re.finditer(r"rule (\w+):\n(?:    .*\n)*", r.stdout)}  # the first job of each rule

    def resources(rule):
        return dict(kv.split("=", 1) for kv in re.search(r"resources: ([^\n]*)", blocks[rule])[1].split(", "))

    train = resources("train_grpo")
    assert (train["gpu"], train["cpus_per_task"], train["mem_mb"], train["runtime"]) == ("4", "32", "128000", "1440")
    assert (train["slurm_partition"], train["slurm_account"]) == ("gpu", "proj")
    ev = resources("evaluate_model")
    assert (ev["gpu"], ev["runtime"], ev["cpus_per_task"], ev["slurm_partition"], ev["mem_mb"]) == \
        ("1", "240", "8", "gpu", "48000")
    assert "gpu" not in blocks["allocate_ranks"]  # runs on the submit host (see test_local_rules_did_not_queue)
    assert "accelerate launch --num_processes 4 --num_machines 1 -m lorarank train" in r.stdout
    # with the config's ZeRO-2 (README: "with the DeepSpeed ZeRO config of grpo.deepspeed")
    assert re.search(r"-m lorarank train [^\n]*--deepspeed config/deepspeed/zero2\.json", r.stdout)
    # its 32 cores are its threads: 4 processes (one per GPU) x 8 threads each (numerics.threads)
    assert re.search(r"--num_processes 4 [^\n]*-m lorarank train [^\n]*--threads 8 ", r.stdout)
