# Helpers shared by the stage files: config lookups, flags and input functions, no side effects
# (those are in setup.smk). Rules build their paths from the patterns below (LORA, RUN, EVAL); flags come
# from lorarank.workflow_config, the one mapping from config keys to command flags.

import json
import os
import shlex

from lorarank.allocation import strategies
from lorarank.allocation.strategies import DYNAMIC, PROFILED
from lorarank.report import selection
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
# The base models (`warmup.seeds`): experiment name -> warm-up seed. Every arm inherits its study's one base
# model, so with several each runs the whole study as an experiment of its own (results/{experiment} the
# first, results/{experiment}.warmup<s> the others), at training seeds of its own (`seeds_of`), and
# combine_bases judges the claims across them.
BASES = workflow_config.bases(config)
EXPERIMENT = config["experiment"]


def seeds_of(experiment, key="seeds"):
    """An experiment's training seeds for a config list (`seeds`, `selection.seeds`; base 0: as listed)."""
    values = config["selection"]["seeds"] if key == "selection" else config[key]
    return [workflow_config.training_seed(BASES[experiment], s) for s in values]


def profile_seed(experiment):
    return workflow_config.training_seed(BASES[experiment], config["allocation"]["profile_seed"])


# The profiled strategies of a regime read its uniform run (adalora-final: its adalora run) under the first
# policy, so that every policy allocates the same ranks (the policies then differ in their scaling alone), at
# a seed of its own, `allocation.profile_seed`, never one of `seeds`: were the profiling run also the
# reference the arm's shift is measured against, its noise would enter the ranks with one sign and the
# shift with the other. A run of its own per regime is the price; per-seed profiles would need one
# allocation per seed and still pair each arm with its own profiling run. It trains at the first rate of
# its arm's list, not at the chosen one: fixed, so that adding a rate to a list changes no allocation and
# reruns no other arm (a profile that waited on a selection would be replanned by every new rate).
PROFILE_POLICY = POLICIES[0]
SELECTION = config["selection"]
EVAL_SEED = config["evaluation"]["seed"]
ARMS = [Arm(regime, strategy, policy) for regime in REGIMES for policy in POLICIES for strategy in STRATEGIES]

# The file layout of an arm, spelled once: its LoRA config, its runs (one directory per rate and seed,
# `lorarank.training.runs`), their evaluations on a split, and its rate selection. Rules and input functions
# build every path from these. The rate is in the path so that adding a rate to a list adds runs and
# moves none.
LORA = "results/{experiment}/lora/{regime}/{strategy}/{policy}.json"
RUN = "results/{experiment}/runs/{regime}/{strategy}/{policy}/lr{lr}/seed{seed}"
EVAL = "results/{experiment}/eval/{split}/{regime}/{strategy}/{policy}/lr{lr}/seed{seed}"
BASE_EVAL = "results/{experiment}/eval/test/base/seed{seed}"
SELECT = "results/{experiment}/selection/{regime}/{strategy}/{policy}.json"


def rates(arm):
    """The rates an arm is tried at, as its run directories name them (lorarank.workflow_config.rates)."""
    return workflow_config.rates(config, arm.regime, arm.strategy)


def selects(arm):
    """Whether the arm's rate is chosen on validation (a list of several), by a selection job."""
    return len(rates(arm)) > 1


def chosen_rate(experiment, arm):
    """The rate the arm's seeds train at: its only one, or the one its selection chose. Input functions only:
    with several rates it asks the select_rate checkpoint, so what depends on it is planned once it has run."""
    if not selects(arm):
        return rates(arm)[0]
    done = checkpoints.select_rate.get(
        experiment=experiment, regime=arm.regime, strategy=arm.strategy, policy=arm.policy
    )
    return selection.read(done.output[0])["chosen_name"]


def profile_of(strategy):
    """(the strategy of the profiling run, the log it reads) for an arm whose allocation reads one, else None."""
    if strategy in PROFILED:
        return "uniform", "grad_norms.parquet"
    if strategies.STRATEGIES[strategy].rank_log:
        return DYNAMIC, "ranks.parquet"
    return None


def arm_runs(experiment, arm):
    """(rate, seed) of every run of the arm: its seeds at the chosen rate, every rate on the selection seeds,
    and the profiling run where another arm reads one."""
    chosen = chosen_rate(experiment, arm)
    runs = {(chosen, s) for s in seeds_of(experiment)}
    if selects(arm):
        runs |= {(lr, s) for lr in rates(arm) for s in seeds_of(experiment, "selection")}
    profiled = any((profile_of(s) or (None,))[0] == arm.strategy for s in STRATEGIES)
    if profiled and arm.policy == PROFILE_POLICY:
        runs.add((rates(arm)[0], profile_seed(experiment)))
    return sorted(runs, key=lambda r: (float(r[0]), r[1]))


def arm_evaluations(experiment, arm):
    """(split, rate, seed) of every evaluation of the arm: its seeds on test at the chosen rate, and with a
    rate list every rate's selection runs on validation."""
    out = [("test", chosen_rate(experiment, arm), s) for s in seeds_of(experiment)]
    if selects(arm):
        out += [("validation", lr, s) for lr in rates(arm) for s in seeds_of(experiment, "selection")]
    return out


def of_regime(pattern, regime):
    """`pattern` with its {regime} filled in: the paths of one regime's train rule."""
    return pattern.replace("{regime}", regime.name)


def arm_path(pattern, experiment, arm, seed=None, lr=None, split="test"):
    """`pattern` for one arm (regime, strategy, policy), rate (by default its chosen one), seed and split."""
    regime, strategy, policy = arm
    lr = chosen_rate(experiment, arm) if lr is None and "{lr}" in pattern else lr
    return pattern.format(
        experiment=experiment, regime=regime, strategy=strategy, policy=policy, lr=lr, seed=seed, split=split
    )


def image(command):
    """Pinned image that `lorarank <command>` runs in; None where unset (host only)."""
    return CONTAINERS[COMMAND_ENV[command]]


def environment(command):
    """Conda environment of the same image, for --sdm conda: its Python and every package of its lock at the
    locked version and hash (envs/<env>.yaml, written from the def and the lock by scripts/conda-envs.py)."""
    return f"{ROOT}/envs/{COMMAND_ENV[command]}.yaml"


def settings_flags(rule):
    """Params function: the flags of the settings that change `rule`'s results (so they trigger reruns)."""

    def result_flags(wildcards):
        w = dict(wildcards.items())
        extra = {"strategy": w["strategy"], "alpha_policy": w["policy"]} if rule == "allocate_ranks" else {}
        if "lr" in w and "split" not in w:  # a training run (not its evaluation): the rate its path names
            extra["lr"] = float(w["lr"])
        if w.get("split") == "validation":  # a selection run's evaluation: selection.n validation questions
            extra["n"] = SELECTION["n"]
        extra.update(workflow_config.base_seeds(config, rule, BASES[w["experiment"]]))
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


def profile_inputs(wildcards):
    """The profiling run's log an arm's allocation reads (none for uniform, random, manual, adalora): that
    arm's run at its first rate and the profiling seed."""
    source = profile_of(wildcards.strategy)
    if source is None:
        return {}
    strategy, log = source
    arm = Arm(wildcards.regime, strategy, PROFILE_POLICY)
    run = arm_path(RUN, wildcards.experiment, arm, profile_seed(wildcards.experiment), rates(arm)[0])
    return {"grad_log" if strategy == "uniform" else "rank_log": f"{run}/{log}"}


def grad_log_flag(wildcards, input):
    """The profiled strategies read the uniform run's gradient log, adalora-final the adalora run's rank log
    (derived from the input: no rerun trigger of its own, the input's is enough)."""
    if "rank_log" in input.keys():
        return f"--rank-log {shlex.quote(input.rank_log)}"
    return f"--grad-log {shlex.quote(input.grad_log)}" if "grad_log" in input.keys() else ""


def run_dir(wildcards):
    return RUN.format(**dict(wildcards.items()))


def evaluate_inputs(wildcards):
    run = run_dir(wildcards)  # run.json says what the adapter is: the evaluation records it
    return {
        "data": f"results/{wildcards.experiment}/data/{wildcards.split}.parquet",
        **start_inputs(wildcards),
        "adapter": f"{run}/final",
        "run": f"{run}/run.json",
    }


def selection_inputs(wildcards):
    """An arm's validation evaluations at every rate and selection seed, and the manifest that says which file
    is the validation split (select-rate refuses any other): nothing a selection reads is from test."""
    arm, exp = Arm(wildcards.regime, wildcards.strategy, wildcards.policy), wildcards.experiment
    return {
        "manifest": f"results/{exp}/data/manifest.json",
        "evaluations": [
            f"{arm_path(EVAL, exp, arm, seed, lr, 'validation')}/metrics.json"
            for lr in rates(arm)
            for seed in seeds_of(exp, "selection")
        ],
    }


def evaluation_files(experiment):
    """[metrics.json, predictions.parquet] of every test evaluation: the base model's, then each arm's seeds at
    its chosen rate."""
    dirs = [BASE_EVAL.format(experiment=experiment, seed=EVAL_SEED)]
    dirs += [arm_path(EVAL, experiment, arm, seed) for arm in ARMS for seed in seeds_of(experiment)]
    return [[f"{d}/metrics.json", f"{d}/predictions.parquet"] for d in dirs]


def run_files(experiment):
    """[run.json, grad_norms.parquet, trainer_log.jsonl (, ranks.parquet of an adalora run)] of every run the
    analysis compares: each arm's seeds at its chosen rate, and the tiny model's full-weight warm-up."""
    runs = [
        (arm_path(RUN, experiment, arm, seed), arm.strategy == DYNAMIC) for arm in ARMS for seed in seeds_of(experiment)
    ]
    runs += [(f"results/{experiment}/warmup", False)] if TINY else []
    return [
        [f"{d}/run.json", f"{d}/grad_norms.parquet", f"{d}/trainer_log.jsonl"]
        + ([f"{d}/ranks.parquet"] if dynamic else [])
        for d, dynamic in runs
    ]


def selection_files(experiment):
    """The select_rate checkpoint's output of every arm with a rate list. Rule all names them as targets:
    Snakemake (9.x) defers its checks of a finished job that waits on a pending checkpoint to a second pass
    after that checkpoint has run, and runs the checkpoint only for a job that needs to run, so an arm or a
    regime added to a finished study was planned as "Nothing to be done" (measured on config/lr.yaml's SFT
    half). A checkpoint's output as a target always runs it."""
    return [arm_path(SELECT, experiment, arm) for arm in ARMS if selects(arm)]


def grouped(flag, groups):
    """The commands get every file they read as an argument, grouped per run: `--run A B C --run ...`."""
    return " ".join(f"{flag} " + " ".join(shlex.quote(f) for f in files) for files in groups)


# The params below are built from the job's input, never by asking a checkpoint again: a params function is
# no place to wait for one. Snakemake also evaluates them while a checkpoint is pending (the input is then
# the checkpoint's target, without these names), and again once it has run: hence the defaults.
# Each input function that may wait on a checkpoint stands for one named input of its rule; while the
# checkpoint is pending Snakemake puts its target in that name alone, and the rule's other inputs keep theirs.
def summary_evaluations(wildcards):
    return [f for files in evaluation_files(wildcards.experiment) for f in files]


def summary_selections(wildcards):
    return selection_files(wildcards.experiment)


def summary_args(wildcards, input):
    pairs = list(getattr(input, "evaluations", []))
    return grouped("--eval", [pairs[i : i + 2] for i in range(0, len(pairs), 2)])


def selection_args(wildcards, input):
    return " ".join(f"--selection {shlex.quote(f)}" for f in getattr(input, "selections", []))


def analysis_runs(wildcards):
    return [f for files in run_files(wildcards.experiment) for f in files]


def analysis_args(wildcards, input):
    groups = []
    for f in getattr(input, "runs", []):  # each run's files start with its run.json (run_files)
        if os.path.basename(f) == "run.json" or not groups:
            groups.append([])
        groups[-1].append(f)
    return grouped("--run", groups)


# heatmap file names: every arm on each metric the table draws one for; the full-weight warm-up ('W' rows)
# on those of them it can give
HEATMAPS = [gradmetrics.heatmap_file(m, arm.name) for arm in ARMS for m in gradmetrics.HEATMAPS]
HEATMAPS += (
    [gradmetrics.heatmap_file(m, "warmup") for m in gradmetrics.HEATMAPS if m in gradmetrics.readable(["W"])]
    if TINY
    else []
)
# AdaLoRA's rank trajectories, one panel per adalora arm: a figure only where there is one
RANK_FIGURES = ["ranks"] if DYNAMIC in STRATEGIES else []
# the validation curves of the arms whose rate was chosen: a figure only where one was
SELECTION_FIGURES = ["selection"] if any(selects(arm) for arm in ARMS) else []


# Cluster resources (Slurm). The tiny model runs on CPUs; a pretrained model gets GPUs. GPU count is
# an experiment fact (`grpo.gpus`, it sets the per-device batch), memory and runtime are site
# defaults sized for a 1.5B model, overridable with --set-resources.
GPUS = config["grpo"]["gpus"] if SOURCE == "pretrained" else 0
# A compute process's threads are the numerics profile's (lorarank.numerics): the order of parallel sums depends
# on them, so they are an experiment fact in the config, not a profile setting. A job reserves them for each of
# its processes (one per GPU under accelerate), and asks Slurm for exactly that many cores: every core it is
# given is used, and none is used that it was not given.
THREADS = config["numerics"]["threads"]
TRAIN_THREADS = THREADS * max(GPUS, 1)


# sbatch's own variables lose to the plugin's -p/-A (it passes the default partition when given none): say so
for _var, _key in (("SBATCH_PARTITION", "partition"), ("SBATCH_ACCOUNT", "account")):
    if os.environ.get(_var) and not config["slurm"][_key]:
        logger.warning(
            f"{_var} is set, but the Slurm executor plugin overrides it: set slurm.{_key} in the config "
            f"(README: On a Slurm cluster)"
        )


def site_resources(gpus):
    """Where a cluster job goes (config `slurm:`): the executor plugin's partition and account resources.
    Unset keys are left out, and the plugin then asks the cluster (its default partition, a guessed account)."""
    site = config["slurm"]
    partition = (site["gpu_partition"] or site["partition"]) if gpus else site["partition"]
    return {k: v for k, v in (("slurm_partition", partition), ("slurm_account", site["account"])) if v}


def train_resources():
    if not GPUS:
        return {"cpus_per_task": THREADS, "mem_mb": 4000, "runtime": 60, **site_resources(0)}
    return {
        "gpu": GPUS,
        "cpus_per_task": TRAIN_THREADS,
        "mem_mb": 32000 * GPUS,
        "runtime": 24 * 60,
        **site_resources(GPUS),
    }


def eval_resources():
    if not GPUS:
        return {"cpus_per_task": THREADS, "mem_mb": 4000, "runtime": 30, **site_resources(0)}
    return {"gpu": 1, "cpus_per_task": THREADS, "mem_mb": 48000, "runtime": 4 * 60, **site_resources(1)}


def launcher(wildcards):
    """One process per GPU through accelerate (DeepSpeed config from grpo.deepspeed), else plain python."""
    if GPUS > 1:
        return f"accelerate launch --num_processes {GPUS} --num_machines 1 -m"
    return "python -m"


def archive_inputs(wildcards):
    """Every file the DAG produced for this experiment: the outputs of each rule, expanded."""
    exp = wildcards.experiment
    files = (
        list(rules.prepare_data.output) + list(rules.analyze_gradients.output) + list(rules.summarize_results.output)
    )
    files += list(rules.evaluate_base.output)
    if TINY:
        files += list(rules.build_model.output) + list(rules.run_warmup.output)
    if SOURCE == "gguf":
        files += list(rules.import_model.output)
    for arm in ARMS:
        names = dict(regime=arm.regime, strategy=arm.strategy, policy=arm.policy)
        files += expand(
            list(rules.allocate_ranks.output) + list(rules.write_lora_config.output), **names, allow_missing=True
        )
        files += [arm_path(SELECT, exp, arm)] if selects(arm) else []
        train = getattr(rules, regimes.REGIMES[arm.regime].rule)
        for lr, seed in arm_runs(exp, arm):
            files += expand(list(train.output), **names, lr=lr, seed=seed, allow_missing=True)
        for split, lr, seed in arm_evaluations(exp, arm):
            files += expand(
                list(rules.evaluate_model.output), **names, split=split, lr=lr, seed=seed, allow_missing=True
            )
    return sorted(set(expand(files, experiment=exp, seed=EVAL_SEED, allow_missing=True)))


def resource_records(wildcards):
    """Records of what was fetched from outside results/ (the archive embeds them in its manifest)."""
    return [f"resources/{wildcards.experiment}/model/fetch.json"] if HUB else []


def config_json(wildcards):
    """The config the archive records (and reruns for): without operational keys (checkpoint cadence...), as its
    base model's study is (its name, its one warm-up seed): each base's archive reruns and checks on its own."""
    return json.dumps(
        workflow_config.result_config(workflow_config.base_config(config, wildcards.experiment)), sort_keys=True
    )
