# Helpers shared by the stage files: config lookups and input functions. Rules spell out their paths.

import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import DeploymentMethod

sys.path.insert(0, workflow.basedir)  # lorarank.fingerprint and .containers are standard library only
from lorarank.containers import COMMAND_ENV, references, stale
from lorarank.fingerprint import fingerprints

# Container images by digest, one per environment (config `containers:`); used with --sdm apptainer
# (the slurm profile sets it), and then required: an unset image would silently mean the host.
APPTAINER = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
try:
    CONTAINERS = references(config["containers"], required=APPTAINER)
except ValueError as e:
    raise WorkflowError(str(e)) from None
if APPTAINER:
    for warning in stale(workflow.basedir, CONTAINERS):
        logger.warning(warning)


def image(command):
    """Pinned image that `lorarank <command>` runs in; None where unset (host only)."""
    return CONTAINERS[COMMAND_ENV[command]]


# Rules run `python -m lorarank` with this checkout's code, also in the images (which do not install
# lorarank, so that a code edit needs no rebuild) and from another working directory: the code the
# fingerprints below hash is the code that runs. Apptainer binds the working directory, not this one.
def _prepend(var, path, sep):
    parts = [p for p in os.environ.get(var, "").split(sep) if p]
    os.environ[var] = sep.join([path] + [p for p in parts if p != path])


_prepend("PYTHONPATH", workflow.basedir, os.pathsep)
if APPTAINER:
    _prepend("APPTAINER_BIND", workflow.basedir, ",")
    # inside an image, this checkout alone: host entries would shadow the image's pinned packages
    os.environ.update(APPTAINERENV_PYTHONPATH=workflow.basedir)


# Each rule's params carry its command's code fingerprint (import closure, code without comments
# or docstrings, versions of the packages it imports, or in a container the image digest instead):
# Snakemake's params trigger then reruns a stage when, and only when, what it executes changed.
# See lorarank/fingerprint.py.
CODE = fingerprints(workflow.basedir, {c: image(c) for c in COMMAND_ENV if APPTAINER})

ALLOC = config["allocation"]
GRPO = config["grpo"]
EVAL = config["evaluation"]
TINY = config["model"]["source"] == "tiny"
# uniform always runs: it is the arm the others are compared with and the profiling run
STRATEGIES = list(dict.fromkeys(["uniform"] + ALLOC["strategies"]))
PROFILED = ("proportional", "reduced", "inverse")
SEEDS = config["seeds"]
PROFILE_SEED = SEEDS[0]
HEATMAPS = STRATEGIES + (["sft"] if TINY else [])


def flag(name, value):
    return "" if value is None else f"--{name} {value}"


def prepare_data_args(wildcards):
    d = config["data"]
    if d["source"] == "local":
        return f"--source local --path {d['path']}"
    if d["source"] == "hub":
        return f"--source hub --hub-id {d['hub_id']} --hub-config {d['hub_config']}"
    s = d["synthetic"]
    levels = ",".join(map(str, s["levels"]))
    return f"--source synthetic --n-train {s['n_train']} --n-test {s['n_test']} --levels {levels} --seed {s['seed']}"


def prepare_data_inputs(wildcards):
    d = config["data"]
    if d["source"] != "local":
        return {}
    return {"train": f"{d['path']}/train.jsonl", "test": f"{d['path']}/test.jsonl"}


def build_model_args(wildcards):
    t = config["model"]["tiny"]
    return (f"--layers {t['layers']} --hidden {t['hidden']} --heads {t['heads']} --kv-heads {t['kv_heads']} "
            f"--intermediate {t['intermediate']} --vocab-size {t['vocab_size']} --seed {t['seed']}")


def sft_args(wildcards):
    s = config["sft"]
    return (f"--steps {s['steps']} --batch-size {s['batch_size']} --lr {s['lr']} "
            f"--warmup-steps {s['warmup_steps']} --layout {config['layout']}")


# The architecture (for allocation and LoRA configs) and the weights GRPO starts from.
def shape_inputs(wildcards):
    return {"model": f"results/{wildcards.experiment}/model/base"} if TINY else {}


def shape_spec(wildcards):
    return f"results/{wildcards.experiment}/model/base" if TINY else config["model"]["name_or_path"]


def start_inputs(wildcards):
    return {"model": f"results/{wildcards.experiment}/sft/final"} if TINY else {}


def start_spec(wildcards):
    return f"results/{wildcards.experiment}/sft/final" if TINY else config["model"]["name_or_path"]


def allocate_inputs(wildcards):
    inputs = shape_inputs(wildcards)
    if wildcards.strategy in PROFILED:
        inputs["grad_log"] = f"results/{wildcards.experiment}/runs/uniform/seed{PROFILE_SEED}/grad_norms.parquet"
    return inputs


def allocate_args(wildcards):
    """Flags for `lorarank allocate`: only what this strategy reads, so that changing another
    strategy's setting (the random seed, say) reruns nothing here."""
    s = wildcards.strategy
    args = [f"--granularity {ALLOC['granularity']}", f"--target-modules {','.join(ALLOC['target_modules'])}",
            f"--alpha-policy {ALLOC['alpha_policy']}", flag("alpha", ALLOC["alpha"])]
    if s == "manual":
        return " ".join(args + [f"--ranks {','.join(map(str, ALLOC['manual_ranks']))}"])
    args += [f"--budget {ALLOC['budget']}", f"--min-rank {ALLOC['min_rank']}", flag("max-rank", ALLOC["max_rank"])]
    if s in PROFILED:
        args.append(f"--grad-log results/{wildcards.experiment}/runs/uniform/seed{PROFILE_SEED}/grad_norms.parquet")
    if s == "reduced":
        args.append(f"--fraction {ALLOC['fraction']}")
    if s == "random":
        r = ALLOC["random"]
        args.append(f"--low {r['low']} --high {r['high']} --seed {r['seed']}")
    return " ".join(a for a in args if a)


def train_args(wildcards):
    g = GRPO
    args = [f"--layout {config['layout']}", f"--steps {g['steps']}", f"--prompts-per-step {g['prompts_per_step']}",
            f"--generations {g['generations']}", f"--max-completion-length {g['max_completion_length']}",
            f"--lr {g['lr']}", f"--beta {g['beta']}", f"--loss-type {g['loss_type']}",
            f"--temperature {g['temperature']}", f"--max-grad-norm {g['max_grad_norm']}",
            f"--save-steps {g['save_steps']}", flag("deepspeed", g["deepspeed"])]
    if not g["partial_credit"]:
        args.append("--no-partial-credit")
    if g["bf16"]:
        args.append("--bf16")
    return " ".join(a for a in args if a)


def evaluate_inputs(wildcards):
    inputs = {"test": f"results/{wildcards.experiment}/data/test.parquet", **start_inputs(wildcards)}
    if wildcards.strategy != "base":
        inputs["adapter"] = f"results/{wildcards.experiment}/runs/{wildcards.strategy}/seed{wildcards.seed}/final"
    return inputs


def adapter_flag(wildcards):
    if wildcards.strategy == "base":
        return ""
    return f"--adapter results/{wildcards.experiment}/runs/{wildcards.strategy}/seed{wildcards.seed}/final"


def evaluate_args(wildcards):
    e = EVAL
    return (f"--n {e['n']} --seed {e['seed']} --batch-size {e['batch_size']} "
            f"--max-new-tokens {e['max_new_tokens']} --layout {config['layout']} --quiet")


def summary_inputs(wildcards):
    runs = expand("results/{experiment}/eval/{strategy}/seed{seed}/metrics.json",
                  experiment=wildcards.experiment, strategy=STRATEGIES, seed=SEEDS)
    base = [f"results/{wildcards.experiment}/eval/base/seed{EVAL['seed']}/metrics.json"]
    lora = expand("results/{experiment}/lora/{strategy}.json", experiment=wildcards.experiment, strategy=STRATEGIES)
    return {"metrics": base + runs, "lora": lora}


def analysis_inputs(wildcards):
    inputs = {
        "grad_logs": expand("results/{experiment}/runs/{strategy}/seed{seed}/grad_norms.parquet",
                            experiment=wildcards.experiment, strategy=STRATEGIES, seed=SEEDS),
        "allocations": expand("results/{experiment}/allocations/{strategy}.json",
                              experiment=wildcards.experiment, strategy=STRATEGIES),
    }
    if TINY:
        inputs["sft"] = f"results/{wildcards.experiment}/sft/grad_norms.parquet"
    return inputs


def sft_flag(wildcards):
    return f"--sft results/{wildcards.experiment}/sft/grad_norms.parquet" if TINY else ""


# Cluster resources (Slurm). The tiny model runs on CPUs; a pretrained model gets GPUs. GPU count is
# an experiment fact (`grpo.gpus`, it sets the per-device batch), memory and runtime are site
# defaults sized for a 1.5B model, overridable with --set-resources.
GPUS = 0 if TINY else GRPO["gpus"]


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
        files += list(rules.build_model.output) + list(rules.run_sft.output)
    files += expand(list(rules.allocate_ranks.output) + list(rules.write_lora_config.output), strategy=STRATEGIES,
                    allow_missing=True)
    files += expand(list(rules.train_grpo.output), strategy=STRATEGIES, seed=SEEDS, allow_missing=True)
    evals = list(rules.evaluate_model.output)
    files += expand(evals, strategy=STRATEGIES, seed=SEEDS, allow_missing=True)
    files += expand(evals, strategy="base", seed=EVAL["seed"], allow_missing=True)
    return sorted(set(expand(files, experiment=exp)))


def config_json(wildcards):
    return json.dumps(config, sort_keys=True)
