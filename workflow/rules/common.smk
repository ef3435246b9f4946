# Helpers shared by the stage files: config lookups, flags and input functions, no side effects
# (those are in setup.smk). Rules spell out their paths; flags come from lorarank.workflow_config,
# the one mapping from config keys to command flags.

import json
import os

SOURCE = config["model"]["source"]
TINY = SOURCE == "tiny"
# a pretrained model given as a hub id is fetched once by a local rule (fetch_model) into resources/
HUB = workflow_config.hub_model(config)
REGIMES = config["regimes"]
# uniform always runs: it is the arm the others are compared with and the profiling run
STRATEGIES = list(dict.fromkeys(["uniform"] + config["allocation"]["strategies"]))
POLICIES = config["allocation"]["alpha_policies"]
PROFILED = ("proportional", "reduced", "inverse")
SEEDS = config["seeds"]
# the profiled strategies of a regime read its uniform run under the first policy and seed, so that
# every policy allocates the same ranks: the policies then differ in their scaling alone
PROFILE_POLICY, PROFILE_SEED = POLICIES[0], SEEDS[0]
EVAL_SEED = config["evaluation"]["seed"]
ARMS = [(regime, strategy, policy) for regime in REGIMES for policy in POLICIES for strategy in STRATEGIES]


def arm_files(pattern, experiment, seeds=True):
    """`pattern` ({experiment}, {regime}, {strategy}, {policy}, {seed}) for every arm (and seed)."""
    return [pattern.format(experiment=experiment, regime=r, strategy=s, policy=p, seed=seed)
            for r, s, p in ARMS for seed in (SEEDS if seeds else [None])]


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
    if wildcards.strategy in PROFILED:
        run = f"results/{wildcards.experiment}/runs/{wildcards.regime}/uniform/{PROFILE_POLICY}/seed{PROFILE_SEED}"
        inputs["grad_log"] = f"{run}/grad_norms.parquet"
    if wildcards.strategy == "adalora-final":  # the adalora run of the same regime, first policy and seed
        run = f"results/{wildcards.experiment}/runs/{wildcards.regime}/adalora/{PROFILE_POLICY}/seed{PROFILE_SEED}"
        inputs["rank_log"] = f"{run}/ranks.parquet"
    return inputs


def grad_log_flag(wildcards, input):
    """The profiled strategies read the uniform run's gradient log, adalora-final the adalora run's rank log
    (derived from the input: no rerun trigger of its own, the input's is enough)."""
    if "rank_log" in input.keys():
        return f"--rank-log {input.rank_log}"
    return f"--grad-log {input.grad_log}" if "grad_log" in input.keys() else ""


def run_dir(wildcards):
    w = wildcards
    return f"results/{w.experiment}/runs/{w.regime}/{w.strategy}/{w.policy}/seed{w.seed}"


def evaluate_inputs(wildcards):
    run = run_dir(wildcards)  # run.json says what the adapter is: the evaluation records it
    return {"test": f"results/{wildcards.experiment}/data/test.parquet", **start_inputs(wildcards),
            "adapter": f"{run}/final", "run": f"{run}/run.json"}


def summary_inputs(wildcards):
    exp = wildcards.experiment
    return {"metrics": [f"results/{exp}/eval/base/seed{EVAL_SEED}/metrics.json"]
            + arm_files("results/{experiment}/eval/{regime}/{strategy}/{policy}/seed{seed}/metrics.json", exp),
            "gradients": f"results/{exp}/summary/gradient_stats.json"}


def analysis_inputs(wildcards):
    """Every gradient log with the run.json that says what it is (the warm-up's too: a full-weight SFT)
    and the trainer log the training trend is read from."""
    dirs = arm_files("results/{experiment}/runs/{regime}/{strategy}/{policy}/seed{seed}", wildcards.experiment)
    dirs += [f"results/{wildcards.experiment}/warmup"] if TINY else []
    return {"grad_logs": [f"{d}/grad_norms.parquet" for d in dirs], "runs": [f"{d}/run.json" for d in dirs],
            "trainer_logs": [f"{d}/trainer_log.jsonl" for d in dirs],
            "rank_logs": [f"results/{wildcards.experiment}/runs/{r}/{s}/{p}/seed{seed}/ranks.parquet"
                          for r, s, p in ARMS if s == "adalora" for seed in SEEDS]}


# heatmap_<metric>_<regime>-<strategy>-<policy>.png: every arm on the study's and the rank-neutral metric
HEATMAPS = [f"{metric}_{r}-{s}-{p}" for r, s, p in ARMS for metric in ("lora", "weight")]
HEATMAPS += ["weight_warmup"] if TINY else []
# AdaLoRA's rank trajectories, one panel per adalora arm: a figure only where there is one
RANK_FIGURES = ["ranks"] if "adalora" in STRATEGIES else []


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
        train = rules.train_grpo if r == "grpo" else rules.train_sft
        files += expand(list(train.output) + list(rules.evaluate_model.output), **arm, seed=SEEDS, allow_missing=True)
    return sorted(set(expand(files, experiment=exp, seed=EVAL_SEED, allow_missing=True)))


def resource_records(wildcards):
    """Records of what was fetched from outside results/ (the archive embeds them in its manifest)."""
    return [f"resources/{wildcards.experiment}/model/fetch.json"] if HUB else []


def config_json(wildcards):
    """The config the archive records (and reruns for): without operational keys (checkpoint cadence...)."""
    return json.dumps(workflow_config.result_config(config), sort_keys=True)
