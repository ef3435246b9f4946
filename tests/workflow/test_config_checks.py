"""Bad configs fail before any job runs, in one line that names the config keys: every case through
`workflow_config.load`, what the Snakefile runs on the config when it loads (in-process: a Snakemake start
per case cost a second each), and one schema and one cross-field case through a real `snakemake -n`, which
shows that load is what the Snakefile calls and that its line reaches the user before any job is planned."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, child_env
from lorarank import workflow_config
from lorarank.errors import UserError
from lorarank.training.regimes import REGIMES

TEST_CONFIG = Path(ROOT) / "tests/workflow/config.test.yaml"  # 2 layers, budget 16, 64 test questions
SCHEMA = f"{ROOT}/workflow/schemas/config.schema.yaml"


def _pretrained(tmp, c, gpus):
    model = tmp / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": 2}))
    c["model"].update(source="pretrained", name_or_path=str(model))
    c["grpo"]["gpus"] = gpus


def _local(tmp, c):
    (tmp / "empty").mkdir(exist_ok=True)
    c["data"].update(source="local", path=str(tmp / "empty"))


def _local_rows(tmp, c, n_train):
    """A local GSM8K directory with n_train training rows (the test split as large as the test config's)."""
    d = tmp / "gsm8k"
    d.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("test", 64)):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({"question": f"{split} {i}?", "answer": f"#### {i}"}) + "\n"
                                                  for i in range(n)))
    c["data"].update(source="local", path=str(d))


CASES = {
    "random low above high": (lambda t, c: c["allocation"]["random"].update(low=20, high=10),
                              "allocation (random arm): allocation.random.low 20 is above allocation.random.high 10"),
    "manual ranks of the wrong length": (lambda t, c: c["allocation"].update(manual_ranks=[4, 4, 8]),
                                         "allocation.manual_ranks has 3 entries but the model has 2 layers"),
    "budget below layers x min rank": (lambda t, c: c["allocation"].update(budget=3, min_rank=2),
                                       "allocation.budget 3 is below 2 layers x allocation.min_rank 2"),
    "local data without a path": (lambda t, c: c["data"].update(source="local", path=None),
                                  "data.source local needs data.path"),
    "local data path without the files": (_local, "has no train.jsonl"),
    "min rank above max rank": (lambda t, c: c["allocation"].update(min_rank=6, max_rank=4),
                                "allocation.max_rank 4 is below allocation.min_rank 6"),
    "uniform budget that does not divide": (lambda t, c: c["allocation"].update(budget=17, manual_ranks=[8, 9]),
                                            "allocation (uniform arm): allocation.budget 17 does not divide over 2 units"),
    "budget above layers x max rank": (lambda t, c: c["allocation"].update(max_rank=4),
                                       "allocation.budget 16 is above 2 layers x allocation.max_rank 4"),
    "reduced budget below layers x min rank": (lambda t, c: c["allocation"].update(fraction=0.1, strategies=["reduced"]),
                                               "allocation (reduced arm): reduced budget"),
    "manual arm without ranks": (lambda t, c: c["allocation"].update(manual_ranks=[]),
                                 "strategy 'manual' needs allocation.manual_ranks"),
    "heads that do not divide the width": (lambda t, c: c["model"]["tiny"].update(heads=3),
                                           "model.tiny.hidden 64 must divide by model.tiny.heads 3"),
    "more questions than the test split": (lambda t, c: c["evaluation"].update(n=100),
                                           "evaluation.n 100 is larger than the split (64 questions)"),
    "pretrained without a model": (lambda t, c: c["model"].update(source="pretrained", name_or_path=None),
                                   "model.name_or_path is required when model.source is 'pretrained'"),
    "an unknown regime": (lambda t, c: c.update(regimes=["grpo", "dpo"]), f"regimes[1]: 'dpo' is not one of {list(REGIMES)}"),
    "an empty regime list": (lambda t, c: c.update(regimes=[]), "regimes: [] should be non-empty"),
    "an unknown alpha policy": (lambda t, c: c["allocation"].update(alpha_policies=["sqrt"]),
                                "allocation.alpha_policies[0]: 'sqrt' is not one of ['ratio', 'constant', 'rslora']"),
    "an empty policy list": (lambda t, c: c["allocation"].update(alpha_policies=[]), "allocation.alpha_policies: [] should be non-empty"),
    "rslora with a non-positive alpha": (lambda t, c: c["allocation"].update(alpha_policies=["rslora"], alpha=0),
                                         "allocation.alpha: 0 is less than or equal to the minimum of 0"),
    "a validation split that leaves no training rows": (
        lambda t, c: c["data"].update(validation=300),
        "data.validation 300 leaves no training rows for the arms: the train split has 600 rows "
        "(data.synthetic.n_train), the warm-up takes 300 (data.warmup_fraction 0.5), validation 300 (at most 299)"),
    "a validation split that leaves a local source no training rows": (
        lambda t, c: _local_rows(t, c, 40),  # the warm-up takes 20, validation 32 of the test config's
        "data.validation 32 leaves no training rows for the arms: the train split has 40 rows, the warm-up takes 20"),
    "an empty validation split": (lambda t, c: c["data"].update(validation=0),
                                  "data.validation: 0 is less than the minimum of 1"),
    # the rate axis (issue: bad input names the key before any job runs)
    "an empty rate list": (lambda t, c: c["grpo"].update(lr=[]), "grpo.lr: [] should be non-empty"),
    "a non-positive rate": (lambda t, c: c["sft"].update(lr=[1e-3, 0]),
                            "sft.lr[1]: 0 is less than or equal to the minimum of 0"),
    "an adalora scale of zero": (lambda t, c: c["allocation"]["adalora"].update(lr_scale=[0]),
                                 "allocation.adalora.lr_scale[0]: 0 is less than or equal to the minimum of 0"),
    "two rates that are one": (lambda t, c: c["grpo"].update(lr=[1e-3, 1.0000001e-3]),
                               "grpo.lr [0.001, 0.0010000001]: two rates are the same at 6 significant digits"),
    "a selection rule on an unknown grading": (
        lambda t, c: c["selection"].update(metric="accuracy"),
        "selection.metric: 'accuracy' is not one of ['strict', 'flexible']"),
    "an unknown selection rule": (lambda t, c: c["selection"].update(rule="median"),
                                  "selection.rule: 'median' is not one of ['best', 'one-se']"),
    "several base models of a pretrained model": (
        lambda t, c: (_pretrained(t, c, 1), c["warmup"].update(seeds=[0, 1])),
        "warmup.seeds [0, 1]: base models other than the first need model.source tiny (built and warmed up "
        "here); a pretrained model is one base model (allowed: [0])"),
    "a warm-up seed listed twice": (lambda t, c: c["warmup"].update(seeds=[1, 1]),
                                    "warmup.seeds: [1, 1] has non-unique elements"),
    "a warm-up seed that is not a whole number": (lambda t, c: c["warmup"].update(seeds=[0, 1.5]),
                                                  "warmup.seeds[1]: 1.5 is not of type 'integer'"),
    "a warm-up seed written as a float": (lambda t, c: c["warmup"].update(seeds=[0, 1.0]),
                                          "warmup.seeds [0, 1.0]: 1.0 is not a whole number (allowed: integers >= 0)"),
    "training seeds that two base models would share": (
        lambda t, c: (c["warmup"].update(seeds=[0, 1]), c.update(seeds=[0, 1000])),
        "seeds 1000 is 1000 or more, but with warmup.seeds [0, 1] base s trains seed k as 1000*s + k "
        "(allowed: seeds below 1000)"),
    "a target module the tiny model lacks": (
        lambda t, c: c["allocation"].update(target_modules=["q_proj", "not_a_proj"]),
        "allocation.target_modules ['q_proj', 'not_a_proj']: not_a_proj is not a projection of the tiny qwen2 model "
        "(allowed: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"),
    "a target module a local model lacks": (
        lambda t, c: (_pretrained(t, c, 1), c["allocation"].update(target_modules=["qkv_proj"])),
        "allocation.target_modules ['qkv_proj']: qkv_proj is not a projection of the qwen2 model"),
    "an experiment that climbs out of results/": (lambda t, c: c.update(experiment=".."),
                                                  "experiment: '..' does not match"),
    "an experiment named like another's base model": (
        lambda t, c: c.update(experiment="test.warmup1"),
        "experiment 'test.warmup1' ends in '.warmup<n>', the name of another study's base model n"),
    "more selection questions than validation rows": (
        lambda t, c: c["selection"].update(n=33),
        "selection.n 33 is larger than the validation split (data.validation 32)"),
    "a profiling seed the arms are compared on": (
        lambda t, c: c["allocation"].update(profile_seed=0),
        "allocation.profile_seed 0 is one of seeds [0]: the run that sets the ranks must not be a run the arms "
        "are compared with"),
    "a verdict level out of range": (lambda t, c: c.update(report={"alpha": 0.7}),
                                     "report.alpha: 0.7 is greater than the maximum of 0.5"),
    "a tiny model without warm-up rows": (lambda t, c: c["data"].update(warmup_fraction=0.0),
                                          "data.warmup_fraction is 0, but the tiny model's warm-up needs rows of its own"),
    "an informal habit without warm-up rows": (
        lambda t, c: (c["model"].update(source="pretrained", name_or_path="org/model"),
                      c["data"].update(warmup_fraction=0.0), c["data"]["synthetic"].update(informal_items=["apples"])),
        "data.synthetic.informal_items apples needs data.warmup_fraction > 0"),
    "a hub model that is no hub id": (lambda t, c: c["model"].update(source="pretrained", name_or_path="no-such-dir"),
                                      "model.name_or_path 'no-such-dir' is neither a local directory nor a hub id"),
    "completions that do not divide over the GPUs": (lambda t, c: _pretrained(t, c, 3),
                                                     "8 completions per step do not divide over 3 processes"),
    "adalora starting at the target rank": (lambda t, c: c["allocation"]["adalora"].update(init_r=8),
                                            "allocation.adalora.init_r 8 is not above the mean target rank 8"),
    "adalora without a pruning phase": (lambda t, c: c["allocation"]["adalora"].update(tinit=2, tfinal=1),
                                        "grpo.steps 3: AdaLoRA's tinit 2 + tfinal 1 = 3 leaves no pruning phase "
                                        "(it needs tinit + tfinal < steps) (allocation.adalora.tinit, tfinal)"),
    "adalora under DeepSpeed": (lambda t, c: c["grpo"].update(deepspeed="config/deepspeed/zero2.json"),
                                "AdaLoRA cannot run under DeepSpeed"),
    "adalora-final without adalora": (lambda t, c: c["allocation"].update(strategies=["uniform", "adalora-final"]),
                                      "allocation.strategies has adalora-final but not adalora"),
    "an adalora beta of 1": (lambda t, c: c["allocation"]["adalora"].update(beta1=1),
                             "allocation.adalora.beta1: 1 is greater than or equal to the maximum of 1"),
    "an unknown numerics setting": (lambda t, c: c.update(numerics={"kernels": "fast"}),
                                    "numerics.kernels: 'fast' is not one of ['portable', 'native']"),
    "zero numerics threads": (lambda t, c: c.update(numerics={"threads": 0}),
                              "numerics.threads: 0 is less than the minimum of 1"),
}


def bad_config(tmp_path, case) -> dict:
    edit, _ = CASES[case]
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    edit(tmp_path, cfg)
    return cfg


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_config_is_refused_in_one_line_naming_the_key(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where Snakemake would run: relative paths mean the same
    cfg = bad_config(tmp_path, case)
    with pytest.raises(UserError) as e:
        workflow_config.load(cfg, SCHEMA)
    assert "\n" not in str(e.value) and CASES[case][1] in str(e.value)


def test_the_test_config_itself_passes(tmp_path, monkeypatch):
    """The baseline every case edits: only the edit can make a case fail."""
    monkeypatch.chdir(tmp_path)
    workflow_config.load(yaml.safe_load(TEST_CONFIG.read_text()), SCHEMA)


@pytest.mark.dag
@pytest.mark.parametrize("case", ["an empty rate list", "random low above high"])  # the schema's, then check's
def test_snakemake_refuses_a_bad_config_in_one_line(case, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad_config(tmp_path, case)))
    r = subprocess.run(["snakemake", "-s", f"{ROOT}/workflow/Snakefile", "--configfile", str(path), "-n", "--cores", "1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=child_env())
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("config: ")]
    assert len(lines) == 1 and CASES[case][1] in lines[0], (r.stdout + r.stderr)[-2000:]
    assert "Job stats" not in r.stdout + r.stderr  # refused before any job was planned
