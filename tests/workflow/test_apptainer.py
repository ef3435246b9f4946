"""`--sdm apptainer` wiring, with a stand-in `apptainer` on PATH (tests/workflow/standin/apptainer:
a test double, since Apptainer cannot be installed here) that records each call and runs the
command on the host. Real Snakemake decides what to pull and how to launch every job."""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import DAG_CALLS, GSM8K_DIR, ROOT, TEST_CONFIG, edited_config, planned, repo_copy, snakemake, standin_env
from lorarank.provenance.containers import (
    COMMAND_ENV,
    ENVIRONMENTS,
    PASSED_ENV,
    PASSED_PREFIXES,
    PATH_ENV,
    binds,
    check_reference,
    digest,
    env_paths,
)

pytestmark = pytest.mark.dag

IMAGES = yaml.safe_load(TEST_CONFIG.read_text())["containers"]
GPU_RULE_COMMANDS = {"sft", "train", "evaluate"}  # the rules that get GPUs on a cluster
# what a job sees in an image under --cleanenv: Apptainer's own (the stand-in keeps PATH for the host's Python),
# the checkout on PYTHONPATH, and the variables the workflow passes by name
CONTAINER_ENV = {"HOME", "TERM", "LANG", "PATH", "APPTAINER_CONTAINER", "APPTAINER_NAME", "APPTAINER_BIND", "PYTHONPATH",
                 *PASSED_ENV, *PATH_ENV}


def calls(work, log="apptainer.jsonl") -> list[dict]:
    return [json.loads(line) for line in (work / log).read_text().splitlines()]


@pytest.fixture(scope="module")
def contained(dag_run):
    """The session's one DAG run, which went through the stand-in."""
    return dag_run


def test_every_job_ran_through_apptainer_in_its_pinned_image(contained):
    work, log = contained
    jobs = int(re.search(r"(\d+) of \1 steps \(100%\) done", log)[1]) - 1  # all but `all`
    execs = [c for c in calls(work, DAG_CALLS) if c["call"] == "exec"]
    mounted = ",".join([ROOT, *binds(env_paths(standin_env(work / "x")), [ROOT, str(work)])])
    assert len(execs) == jobs == 59  # every job of the two-regime test DAG (4 of them profiling runs)
    commands = []
    for c in execs:
        script = c["command"][-1]
        command = re.search(r"-m\s+lorarank\s+([\w-]+)", script)[1]
        commands.append(command)
        assert c["url"] == IMAGES[COMMAND_ENV[command]], (command, c["url"])
        assert "--nv" in c["options"] or command not in GPU_RULE_COMMANDS, (command, c["options"])
        # README "compute jobs run offline": the flags lead the compute commands' own line (the session's
        # HF_HUB_OFFLINE is not in a --cleanenv job, so without them these jobs would reach for the hub)
        offline = re.search(r"HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 (?:python|accelerate launch)[^;&|()]*-m\s+"
                            rf"lorarank\s+{command}\b", script)
        assert (offline is not None) == (command in GPU_RULE_COMMANDS), (command, script)
        # the checkout's code is bound and importable inside, and nothing else from the host's PYTHONPATH
        # (and the host paths a passed variable names, e.g. a TMPDIR outside /tmp: containers.PATH_ENV)
        assert (c["env"]["PYTHONPATH"], c["env"]["APPTAINER_BIND"]) == (ROOT, mounted), c["env"]
        # --cleanenv (the profile's): of the host's variables only what Apptainer keeps and the workflow passes
        # (the session's own HF_HUB_OFFLINE too: a compute job is offline by its command line alone)
        extra = {n for n in c["env_names"] if n not in CONTAINER_ENV and not n.startswith(PASSED_PREFIXES)}
        assert c["cleanenv"] and not extra, extra
        assert c["invisible"] == [], c["invisible"]  # every path on the command line is mounted
    assert sorted(set(commands)) == sorted({"prepare-data", "build-model", "sft", "allocate", "lora-config", "train",
                                            "evaluate", "analyze", "summarize", "archive"})
    pulls = sorted(c["url"] for c in calls(work, DAG_CALLS) if c["call"] == "pull")
    assert pulls == sorted(IMAGES.values())  # each image pulled once, by its digest


def test_the_archive_records_images_and_what_ran_inside_them(contained):
    work, _ = contained
    archive = work / "results/test/archive"
    r = subprocess.run(["python", "-m", "lorarank", "verify-archive", str(archive)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    doc = json.loads((archive / "MANIFEST.json").read_text())
    assert {env: rec["reference"] for env, rec in doc["containers"].items()} == IMAGES
    assert {env: rec["sha256"] for env, rec in doc["containers"].items()} == \
        {env: ref.rsplit(":", 1)[1] for env, ref in IMAGES.items()}
    pulled = {c["url"]: c for c in calls(work, DAG_CALLS) if c["call"] == "exec"}
    [train] = doc["environments"]["train"]  # every training/evaluation job saw the same software
    assert train["environment"]["container"]["image"] == pulled[IMAGES["train"]]["image"]
    [analysis] = doc["environments"]["analysis"]
    assert analysis["environment"]["container"]["image"] == pulled[IMAGES["analysis"]]["image"]


def test_a_new_image_digest_reruns_exactly_the_jobs_in_that_image(contained, tmp_path):
    """The trap (docs/design.md, "Snakemake, Slurm and containers"): Snakemake hashes the reference string,
    so only a new digest can rerun."""
    work, _ = contained
    assert planned(work, TEST_CONFIG) == {}
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    ref = cfg["containers"]["analysis"]
    cfg["containers"]["analysis"] = ref[:-1] + ("1" if ref[-1] == "0" else "0")  # another image
    changed = tmp_path / "analysis.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    assert planned(work, changed) == {"analyze_gradients": 1, "summarize_results": 1, "archive_results": 1, "all": 1}


def test_apptainer_without_images_or_with_a_tag_is_refused_in_one_line(tmp_path):
    for value, expected in ((None, "containers.train is not set, and --sdm apptainer needs an image"),
                            ("docker://python:3.11-slim", "containers.train: 'docker://python:3.11-slim' is not pinned")):
        cfg = yaml.safe_load(TEST_CONFIG.read_text())
        cfg["containers"]["train"] = value
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        r = snakemake(tmp_path, "-n", configfile=path)
        assert r.returncode != 0 and expected in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]
        assert not (tmp_path / "results").exists()


def test_build_script_names_images_by_content_and_flags_a_changed_def(tmp_path):
    """scripts/build-containers.sh with the stand-in's `build`: what it records and prints is usable
    as is, and an image built from an older def file is reported, not silently run."""
    clone = repo_copy(tmp_path)
    env = standin_env(tmp_path / "apptainer.jsonl")
    r = subprocess.run(["bash", "scripts/build-containers.sh"], cwd=clone, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout.split("a copy):\n", 1)[1])["containers"]
    lock = json.loads((clone / "containers/images.lock.json").read_text())
    for name in ENVIRONMENTS:
        ref = check_reference(name, printed[name])
        assert hashlib.sha256(Path(ref).read_bytes()).hexdigest() == digest(ref) == lock[name]["sif_sha256"]
        assert lock[name]["def_sha256"] == hashlib.sha256((clone / f"containers/{name}.def").read_bytes()).hexdigest()
        assert lock[name]["reference"] == ref
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["containers"] = printed
    path = tmp_path / "built.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    work.mkdir()
    r = snakemake(work, "-n", configfile=path, repo=clone)
    assert r.returncode == 0 and "changed since" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    (clone / "containers/train.def").write_text((clone / "containers/train.def").read_text() + "# edited\n")
    r = snakemake(work, "-n", configfile=path, repo=clone)
    assert r.returncode == 0
    assert "containers/train.def changed since the image in containers.train was built" in r.stdout + r.stderr


def test_a_data_path_outside_the_checkout_is_bound_into_the_container(tmp_path):
    """The real GSM8K files lie beside the checkout (../shared), where no image would see them: the workflow
    binds them at the path the config gives. The stand-in fails a job whose command line names a path its
    container would not mount (as the job would fail), so without the bind this run fails."""
    cfg = edited_config(tmp_path, lambda c: c["data"].update(source="local", path=GSM8K_DIR))
    work = tmp_path / "work"
    work.mkdir()
    r = snakemake(work, "results/test/data/manifest.json", configfile=cfg)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    [job] = [c for c in calls(work) if c["call"] == "exec"]
    assert os.path.realpath(GSM8K_DIR) in job["env"]["APPTAINER_BIND"].split(",") or \
        f"{os.path.realpath(GSM8K_DIR)}:{os.path.abspath(GSM8K_DIR)}" in job["env"]["APPTAINER_BIND"].split(","), job
    assert job["invisible"] == [] and GSM8K_DIR in job["command"][-1]


def test_a_path_no_bind_can_carry_is_refused_before_any_job(tmp_path):
    odd = tmp_path / "gsm8k,v1"
    odd.mkdir()
    for split in ("train", "test"):
        (odd / f"{split}.jsonl").write_text(Path(GSM8K_DIR, f"{split}.jsonl").read_text())
    cfg = edited_config(tmp_path, lambda c: c["data"].update(source="local", path=str(odd)))
    work = tmp_path / "work"
    work.mkdir()
    r = snakemake(work, "-n", configfile=cfg)
    assert r.returncode != 0
    assert f"config: data.path: {str(odd)!r} holds ',' or ':'" in r.stdout + r.stderr
    assert not (work / "apptainer.jsonl").exists() and not (work / "results").exists()
