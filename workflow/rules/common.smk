# Helpers shared by the stage files: config lookups, flags and input functions, no side effects
# (those are in setup.smk). Rules build their paths from the patterns below (LORA, RUN, EVAL); flags come
# from lorarank.workflow_config, the one mapping from config keys to command flags.

import json
import os
import shlex

from lorarank.allocation import strategies
from lorarank.allocation.strategies import DYNAMIC, PROFILED
from lorarank.study import Arm
from lorarank.training import gradmetrics

SOURCE = config["model"]["source"]
TINY = SOURCE == "tiny"
# a pretrained model given as a hub id is fetched once by a local rule (fetch_model) into resources/
HUB = workflow_config.hub_model(config)
REGIMES = config["regimes"]
# uniform always runs: it is the arm the others are compared with and the profiling run
STRATEGIES = list(dict.fromkeys(["uniform"] + config["allocation"]["strategies"]))
POLICIES = config["allocation"]["alpha_policies"]
SEEDS = config["seeds"]
# the profiled strategies of a regime read its uniform run under the first policy and seed, so that
# every policy allocates the same ranks: the policies then differ in their scaling alone
PROFILE_POLICY, PROFILE_SEED = POLICIES[0], SEEDS[0]
EVAL_SEED = config["evaluation"]["seed"]
ARMS = [Arm(regime, strategy, policy) for regime in REGIMES for policy in POLICIES for strategy in STRATEGIES]

# The file layout of an arm, spelled once: its LoRA config, its runs (one directory per seed, `lorarank.training.runs`)
# and their evaluations. Rules and input functions build every path from these.
LORA = "results/{experiment}/lora/{regime}/{strategy}/{policy}.json"
RUN = "results/{experiment}/runs/{regime}/{strategy}/{policy}/seed{seed}"
EVAL = "results/{experiment}/eval/{regime}/{strategy}/{policy}/seed{seed}"


def of_regime(pattern, regime):
    """`pattern` with its {regime} filled in: the paths of one regime's train rule."""
    return pattern.replace("{regime}", regime.name)


def arm_path(pattern, experiment, arm, seed=None):
    """`pattern` for one arm (regime, strategy, policy) and seed."""
    regime, strategy, policy = arm
    return pattern.format(experiment=experiment, regime=regime, strategy=strategy, policy=policy, seed=seed)


def arm_files(pattern, experiment, seeds=True):
    """`pattern` ({experiment}, {regime}, {strategy}, {policy}, {seed}) for every arm (and seed)."""
    return [arm_path(pattern, experiment, arm, seed) for arm in ARMS for seed in (SEEDS if seeds else [None])]


def image(command):
    """Pinned image that `lorarank <command>` runs in; None where unset (host only)."""
    return CONTAINERS[COMMAND_ENV[command]]


def settings_flags(rule):
    """Params function: the flags of the settings that change `rule`'s results (so they trigger reruns)."""

    def result_flags(wildcards):
        extra = {"strategy": wildcards.strategy, "alpha_policy": wildcards.policy} if rule == "allocate_ranks" else {}
        return workflow_config.flags(config, rule, **extra)

    return result_flags


def operational_flags(rule):
    """Params function: the flags that change only how a job runs (checkpoint cadence, batch size).
    It takes the job's `threads`, which makes it a derived param, and Snakemake leaves derived params
    out of its rerun trigger: changing one of these reruns nothing."""

    def ops(wildcards, threads):
        return workflow_config.flags(config, rule, operational=True)

    return ops


# The model directory every stage reads: the shape (allocation, LoRA configs) and the weights training
# and evaluation start from. Always a local directory: compute jobs never need the network.
def base_model(wildcards):
    if SOURCE in ("tiny", "gguf"):
        return f"results/{wildcards.experiment}/model/base"
    if HUB:
        return f"resources/{wildcards.experiment}/model"
    return config["model"]["name_or_path"]


def shape_inputs(wildcards):
    return {"model": base_model(wildcards)}


def start_inputs(wildcards):
    return {"model": f"results/{wildcards.experiment}/warmup/final" if TINY else base_model(wildcards)}


def prepare_data_inputs(wildcards):
    d = config["data"]
    if d["source"] != "local":
        return {}
    return {"train": f"{d['path']}/train.jsonl", "test": f"{d['path']}/test.jsonl"}


def allocate_inputs(wildcards):
    inputs = shape_inputs(wildcards)
    profile = dict(experiment=wildcards.experiment, regime=wildcards.regime, policy=PROFILE_POLICY, seed=PROFILE_SEED)
    if wildcards.strategy in PROFILED:
        inputs["grad_log"] = f"{RUN.format(strategy='uniform', **profile)}/grad_norms.parquet"
    if strategies.STRATEGIES[wildcards.strategy].rank_log:  # the adalora run of the same regime, first policy and seed
        inputs["rank_log"] = f"{RUN.format(strategy=DYNAMIC, **profile)}/ranks.parquet"
    return inputs


def grad_log_flag(wildcards, input):
    """The profiled strategies read the uniform run's gradient log, adalora-final the adalora run's rank log
    (derived from the input: no rerun trigger of its own, the input's is enough)."""
    if "rank_log" in input.keys():
        return f"--rank-log {input.rank_log}"
    return f"--grad-log {input.grad_log}" if "grad_log" in input.keys() else ""


def run_dir(wildcards):
    return RUN.format(**dict(wildcards.items()))


def evaluate_inputs(wildcards):
    run = run_dir(wildcards)  # run.json says what the adapter is: the evaluation records it
    return {"test": f"results/{wildcards.experiment}/data/test.parquet", **start_inputs(wildcards),
            "adapter": f"{run}/final", "run": f"{run}/run.json"}


def evaluation_files(experiment):
    """[metrics.json, predictions.parquet] of every evaluation: the base model's, then each arm's seeds."""
    dirs = [f"results/{experiment}/eval/base/seed{EVAL_SEED}"] + arm_files(EVAL, experiment)
    return [[f"{d}/metrics.json", f"{d}/predictions.parquet"] for d in dirs]


def run_files(experiment):
    """[run.json, grad_norms.parquet, trainer_log.jsonl (, ranks.parquet of an adalora run)] of every run with a
    gradient log: each arm's seeds, and the tiny model's full-weight warm-up."""
    runs = [(arm_path(RUN, experiment, arm, seed), arm.strategy == DYNAMIC) for arm in ARMS for seed in SEEDS]
    runs += [(f"results/{experiment}/warmup", False)] if TINY else []
    return [[f"{d}/run.json", f"{d}/grad_norms.parquet", f"{d}/trainer_log.jsonl"]
            + ([f"{d}/ranks.parquet"] if dynamic else []) for d, dynamic in runs]


def grouped(flag, groups):
    """The commands get every file they read as an argument, grouped per run: `--run A B C --run ...`."""
    return " ".join(f"{flag} " + " ".join(shlex.quote(f) for f in files) for files in groups)


def summary_inputs(wildcards):
    return {"evaluations": [f for files in evaluation_files(wildcards.experiment) for f in files],
            "gradients": f"results/{wildcards.experiment}/summary/gradient_stats.json"}


def summary_args(wildcards):
    return grouped("--eval", evaluation_files(wildcards.experiment))


def analysis_inputs(wildcards):
    return {"runs": [f for files in run_files(wildcards.experiment) for f in files]}


def analysis_args(wildcards):
    return grouped("--run", run_files(wildcards.experiment))


# heatmap file names: every arm on each metric the table draws one for; the full-weight warm-up ('W' rows)
# on those of them it can give
HEATMAPS = [gradmetrics.heatmap_file(m, arm.name) for arm in ARMS for m in gradmetrics.HEATMAPS]
HEATMAPS += [gradmetrics.heatmap_file(m, "warmup") for m in gradmetrics.HEATMAPS
             if m in gradmetrics.readable(["W"])] if TINY else []
# AdaLoRA's rank trajectories, one panel per adalora arm: a figure only where there is one
RANK_FIGURES = ["ranks"] if DYNAMIC in STRATEGIES else []


# Cluster resources (Slurm). The tiny model runs on CPUs; a pretrained model gets GPUs. GPU count is
# an experiment fact (`grpo.gpus`, it sets the per-device batch), memory and runtime are site
# defaults sized for a 1.5B model, overridable with --set-resources.
GPUS = config["grpo"]["gpus"] if SOURCE == "pretrained" else 0
# A compute job's threads are the numerics profile's (lorarank.numerics): the order of parallel sums depends
# on them, so they are an experiment fact in the config, not a profile setting; Snakemake and Slurm reserve
# that many cores.
THREADS = config["numerics"]["threads"]


def train_resources():
    if not GPUS:
        return {"cpus_per_task": THREADS, "mem_mb": 4000, "runtime": 60}
    return {"gpu": GPUS, "cpus_per_task": 8 * GPUS, "mem_mb": 32000 * GPUS, "runtime": 24 * 60}


def eval_resources():
    if not GPUS:
        return {"cpus_per_task": THREADS, "mem_mb": 4000, "runtime": 30}
    return {"gpu": 1, "cpus_per_task": 8, "mem_mb": 48000, "runtime": 4 * 60}


def launcher(wildcards):
    """One process per GPU through accelerate (DeepSpeed config from grpo.deepspeed), else plain python."""
    if GPUS > 1:
        return f"accelerate launch --num_processes {GPUS} --num_machines 1 -m"
    return "python -m"


def archive_inputs(wildcards):
    """Every file the DAG produced for this experiment: the outputs of each rule, expanded."""
    exp = wildcards.experiment
    files = list(rules.prepare_data.output) + list(rules.analyze_gradients.output) + list(rules.summarize_results.output)
    files += list(rules.evaluate_base.output)
    if TINY:
        files += list(rules.build_model.output) + list(rules.run_warmup.output)
    if SOURCE == "gguf":
        files += list(rules.import_model.output)
    for r, s, p in ARMS:
        arm = dict(regime=r, strategy=s, policy=p)
        files += expand(list(rules.allocate_ranks.output) + list(rules.write_lora_config.output), **arm, allow_missing=True)
        train = getattr(rules, regimes.REGIMES[r].rule)
        files += expand(list(train.output) + list(rules.evaluate_model.output), **arm, seed=SEEDS, allow_missing=True)
    return sorted(set(expand(files, experiment=exp, seed=EVAL_SEED, allow_missing=True)))


def resource_records(wildcards):
    """Records of what was fetched from outside results/ (the archive embeds them in its manifest)."""
    return [f"resources/{wildcards.experiment}/model/fetch.json"] if HUB else []


def config_json(wildcards):
    """The config the archive records (and reruns for): without operational keys (checkpoint cadence...)."""
    return json.dumps(workflow_config.result_config(config), sort_keys=True)
