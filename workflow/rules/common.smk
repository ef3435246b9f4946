# Helpers shared by the stage files: config lookups, flags and input functions, no side effects
# (those are in setup.smk). Rules spell out their paths; flags come from lorarank.workflow_config,
# the one mapping from config keys to command flags.

import json

TINY = config["model"]["source"] == "tiny"
# uniform always runs: it is the arm the others are compared with and the profiling run
STRATEGIES = list(dict.fromkeys(["uniform"] + config["allocation"]["strategies"]))
PROFILED = ("proportional", "reduced", "inverse")
SEEDS = config["seeds"]
PROFILE_SEED = SEEDS[0]
EVAL_SEED = config["evaluation"]["seed"]


def image(command):
    """Pinned image that `lorarank <command>` runs in; None where unset (host only)."""
    return CONTAINERS[COMMAND_ENV[command]]


def settings_flags(rule):
    """Params function: the flags of the settings that change `rule`'s results (so they trigger reruns)."""

    def result_flags(wildcards):
        extra = {"strategy": wildcards.strategy} if rule == "allocate_ranks" else {}
        return workflow_config.flags(config, rule, **extra)

    return result_flags


def operational_flags(rule):
    """Params function: the flags that change only how a job runs (checkpoint cadence, batch size).
    It takes the job's `threads`, which makes it a derived param, and Snakemake leaves derived params
    out of its rerun trigger: changing one of these reruns nothing."""

    def ops(wildcards, threads):
        return workflow_config.flags(config, rule, operational=True)

    return ops


# The architecture (for allocation and LoRA configs) and the weights training starts from: the
# tiny model's are files this workflow makes; a pretrained model is a hub id or a local directory.
def shape_inputs(wildcards):
    return {"model": f"results/{wildcards.experiment}/model/base"} if TINY else {}


def shape_spec(wildcards):
    return shape_inputs(wildcards).get("model", config["model"]["name_or_path"])


def start_inputs(wildcards):
    return {"model": f"results/{wildcards.experiment}/warmup/final"} if TINY else {}


def start_spec(wildcards):
    return start_inputs(wildcards).get("model", config["model"]["name_or_path"])


def prepare_data_inputs(wildcards):
    d = config["data"]
    if d["source"] != "local":
        return {}
    return {"train": f"{d['path']}/train.jsonl", "test": f"{d['path']}/test.jsonl"}


def allocate_inputs(wildcards):
    inputs = shape_inputs(wildcards)
    if wildcards.strategy in PROFILED:
        inputs["grad_log"] = f"results/{wildcards.experiment}/runs/uniform/seed{PROFILE_SEED}/grad_norms.parquet"
    return inputs


def grad_log_flag(wildcards, input):
    """The profiled strategies read the uniform run's gradient log (derived from the input: no rerun trigger
    of its own, the input's is enough)."""
    return f"--grad-log {input.grad_log}" if "grad_log" in input.keys() else ""


def evaluate_inputs(wildcards):
    inputs = {"test": f"results/{wildcards.experiment}/data/test.parquet", **start_inputs(wildcards)}
    if wildcards.strategy != "base":
        run = f"results/{wildcards.experiment}/runs/{wildcards.strategy}/seed{wildcards.seed}"
        inputs.update(adapter=f"{run}/final", run=f"{run}/run.json")  # run.json: what the adapter is
    return inputs


def adapter_flag(wildcards, input):
    return f"--adapter {input.adapter}" if "adapter" in input.keys() else ""


def run_dirs(experiment):
    return expand("results/{experiment}/runs/{strategy}/seed{seed}", experiment=experiment, strategy=STRATEGIES,
                  seed=SEEDS)


def summary_inputs(wildcards):
    runs = expand("results/{experiment}/eval/{strategy}/seed{seed}/metrics.json",
                  experiment=wildcards.experiment, strategy=STRATEGIES, seed=SEEDS)
    base = [f"results/{wildcards.experiment}/eval/base/seed{EVAL_SEED}/metrics.json"]
    return {"metrics": base + runs, "gradients": f"results/{wildcards.experiment}/summary/gradient_stats.json"}


def analysis_inputs(wildcards):
    """Every gradient log with the run.json that says what it is (the warm-up's too: the SFT side)."""
    dirs = run_dirs(wildcards.experiment) + ([f"results/{wildcards.experiment}/warmup"] if TINY else [])
    return {"grad_logs": [f"{d}/grad_norms.parquet" for d in dirs], "runs": [f"{d}/run.json" for d in dirs]}


# heatmap_<metric>_<arm>.png: every arm on the study's and the rank-neutral metric; the warm-up's weights
HEATMAPS = [f"{metric}_grpo-{s}-{config['allocation']['alpha_policy']}" for s in STRATEGIES for metric in ("lora", "weight")]
HEATMAPS += ["weight_warmup"] if TINY else []


# Cluster resources (Slurm). The tiny model runs on CPUs; a pretrained model gets GPUs. GPU count is
# an experiment fact (`grpo.gpus`, it sets the per-device batch), memory and runtime are site
# defaults sized for a 1.5B model, overridable with --set-resources.
GPUS = 0 if TINY else config["grpo"]["gpus"]


def train_resources():
    if TINY:
        return {"cpus_per_task": 2, "mem_mb": 4000, "runtime": 60}
    return {"gpu": GPUS, "cpus_per_task": 8 * GPUS, "mem_mb": 32000 * GPUS, "runtime": 24 * 60}


def eval_resources():
    if TINY:
        return {"cpus_per_task": 2, "mem_mb": 4000, "runtime": 30}
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
    if TINY:
        files += list(rules.build_model.output) + list(rules.run_warmup.output)
    files += expand(list(rules.allocate_ranks.output) + list(rules.write_lora_config.output), strategy=STRATEGIES,
                    allow_missing=True)
    files += expand(list(rules.train_grpo.output), strategy=STRATEGIES, seed=SEEDS, allow_missing=True)
    evals = list(rules.evaluate_model.output)
    files += expand(evals, strategy=STRATEGIES, seed=SEEDS, allow_missing=True)
    files += expand(evals, strategy="base", seed=EVAL_SEED, allow_missing=True)
    return sorted(set(expand(files, experiment=exp)))


def config_json(wildcards):
    """The config the archive records (and reruns for): without operational keys (checkpoint cadence...)."""
    return json.dumps(workflow_config.result_config(config), sort_keys=True)
