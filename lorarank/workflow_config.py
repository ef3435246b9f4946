"""The workflow's config, mapped onto the commands' settings: one mapping, two uses.

`WIRING` says which config key feeds which field of which command's settings dataclass
(`lorarank.options`). The rules build their flags from it (`flags`), and `check` runs the same
cross-field checks the commands run (`AllocationSpec.check`, `GRPOSettings.check`, ...) on the config
before any job is planned, naming config keys instead of flags. A test keeps every schema key either
wired here (with the flag's default as its schema default) or listed in `WORKFLOW_KEYS`.

Standard library only (and the settings classes, whose modules import their heavy libraries lazily):
the Snakefile imports this on a submit host that may have nothing but Snakemake.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
from pathlib import Path

from lorarank import options
from lorarank.allocation.adalora_settings import check_schedule, refuse_deepspeed
from lorarank.allocation.lora import LoraSettings
from lorarank.allocation.spec import AllocationSpec
from lorarank.allocation.strategies import DYNAMIC, FROZEN_DYNAMIC
from lorarank.data.prepare import DataSettings
from lorarank.errors import UserError
from lorarank.evaluation.evaluate import EvalSettings
from lorarank.models.build_model import TinyModel
from lorarank.models.fetch_model import HubModel
from lorarank.models.import_model import GGUFSource
from lorarank.numerics import Numerics
from lorarank.report.verdicts import VerdictSettings
from lorarank.study import DEFAULT_MODULES
from lorarank.training.regimes import REGIMES, settings_class
from lorarank.training.sft import SFTSettings


def _same(prefix: str, *names: str) -> dict[str, str]:
    return {f"{prefix}.{n}": n for n in names}


# rule (or job kind) -> (settings class, {config key: field})
WIRING = {
    "prepare_data": (DataSettings, {**_same("data", "source", "path", "hub_id", "hub_config", "revision",
                                            "warmup_fraction", "validation"),
                                    **_same("data.synthetic", "n_train", "n_test", "levels", "seed", "informal_items",
                                            "informal_share")}),
    "import_model": (GGUFSource, _same("model.gguf", "path", "package", "file")),
    "fetch_model": (HubModel, {"model.name_or_path": "model", "model.revision": "revision"}),
    "build_model": (TinyModel, _same("model.tiny", "layers", "hidden", "heads", "kv_heads", "intermediate",
                                     "vocab_size", "seed")),
    "run_warmup": (SFTSettings, {"layout": "layout", "report_to": "report_to",
                                 **_same("warmup", "steps", "batch_size", "lr", "warmup_steps", "save_steps")}),
    "evaluate_model": (EvalSettings, {"layout": "layout", **_same("evaluation", "n", "seed", "batch_size",
                                                                   "max_new_tokens")}),
    "allocate_ranks": (AllocationSpec, {
        **_same("allocation", "budget", "granularity", "target_modules", "min_rank", "max_rank", "fraction",
                "alpha", "metric"),
        **_same("allocation.random", "low", "high", "seed"), "allocation.manual_ranks": "ranks",
        # not lr_scale: the workflow folds it into each adalora run's rate (`rates`), the axis it selects on
        **_same("allocation.adalora", "init_r", "tinit", "tfinal", "delta_t", "beta1", "beta2", "orth_reg_weight")}),
    "write_lora_config": (LoraSettings, {"allocation.dropout": "dropout"}),
    "summarize_results": (VerdictSettings, _same("report", "alpha", "min_accuracy", "min_share", "min_correlation",
                                                 "power")),
    # each regime's train rule: its config section (and the answer layout) -> its settings (lorarank.training.regimes)
    # and the trackers every training job reports to (operational: how a job runs, not what it produces)
    **{r.rule: (settings_class(r.name), {"layout": "layout", "report_to": "report_to", **_same(r.name, *r.wired)})
       for r in REGIMES.values()},
}

# The numerics profile (lorarank.numerics): one config section, passed by every rule whose command runs
# torch kernels, among the flags that trigger reruns (it changes the bits; the machine a job lands on does not).
NUMERICS = (Numerics, _same("numerics", "kernels", "threads", "deterministic"))
COMPUTE_RULES = ("build_model", "import_model", "run_warmup", *(r.rule for r in REGIMES.values()), "evaluate_model")

# schema keys the workflow reads itself (not a command's flag), and why
WORKFLOW_KEYS = {
    "experiment": "names results/{experiment}/",
    "regimes": "an axis: the arms of each training regime (lorarank.training.regimes; one train rule each)",
    **{r.name: "a section" for r in REGIMES.values()},
    "allocation.alpha_policies": "an axis: every strategy under each policy (the allocation's --alpha-policy)",
    "data": "a section", "data.synthetic": "a section",
    "model": "a section", "model.source": "chooses build_model + run_warmup or a pretrained model",
    "model.tiny": "a section", "model.gguf": "a section",
    "warmup": "a section", "warmup.seeds": "an outer axis: one base model and one whole study per seed (bases)",
    "evaluation": "a section", "allocation": "a section",
    "allocation.random": "a section", "allocation.adalora": "a section",
    "allocation.strategies": "the arms: one allocate/train/evaluate chain each",
    "grpo.gpus": "Slurm resources and the accelerate launcher",
    "seeds": "one training run per arm and seed",
    **{f"{r.name}.lr": "an axis: the rates each arm is tried at (`rates`); each run gets its own" for r in REGIMES.values()},
    "allocation.adalora.lr_scale": "an axis: the adalora arm's rates are the regime's times each scale (`rates`)",
    "allocation.profile_seed": "the seed of the runs whose gradient (or rank) log sets the profiled arms' ranks",
    "report": "a section", "selection": "a section", "selection.seeds": "the seeds each arm runs at every rate of its list",
    "selection.n": "validation questions each selection run is evaluated on",
    "selection.metric": "the grading that chooses the rate (lorarank select-rate --metric)",
    "selection.rule": "the rule that chooses the rate (lorarank select-rate --rule)",
    "numerics": "a section", "containers": "a section", "containers.train": "the image rules run in",
    "containers.analysis": "the image rules run in",
    "slurm": "a section: where cluster jobs go (a site's, not the study's: SITE_KEYS)",
    "slurm.partition": "the slurm_partition resource of every cluster job",
    "slurm.gpu_partition": "the slurm_partition resource of the jobs that ask for GPUs",
    "slurm.account": "the slurm_account resource of every cluster job",
}

# sections that say where a study runs, not what it computes: the archive's config leaves them out, so
# another site reruns (and checks) the same study with its own partitions and account
SITE_KEYS = ("slurm",)


def operational_keys() -> list[str]:
    """Config keys wired to operational fields: how jobs run, not what they produce."""
    out = []
    for cls, keys in WIRING.values():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out += [key for key, field in keys.items() if fields[field].metadata.get("operational")]
    return sorted(set(out))


def result_config(config: dict) -> dict:
    """The config without its operational keys: what the results depend on (the archive records this,
    so that a new checkpoint interval does not rebuild the archive either)."""
    out = copy.deepcopy(config)
    for key in [*operational_keys(), *SITE_KEYS]:
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    return out


def local_paths(config: dict) -> dict[str, str]:
    """Config key -> the local file or directory it names, for the keys in use that read one: what a job in a
    container must see (Apptainer binds them; README: Containers). A hub id names nothing here."""
    data, model = config["data"], config["model"]
    found = {"data.path": data.get("path") if data["source"] == "local" else None,
             "model.name_or_path": model.get("name_or_path") if model["source"] == "pretrained" else None,
             "model.gguf.path": (model.get("gguf") or {}).get("path") if model["source"] == "gguf" else None,
             **{f"{r}.deepspeed": (config.get(r) or {}).get("deepspeed") for r in config["regimes"]}}
    return {key: str(path) for key, path in found.items() if path and Path(str(path)).exists()}


def _listed(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def rates(config: dict, regime: str, strategy: str) -> list[str]:
    """The learning rates an arm is tried at, as run directories name them (`lr<rate>`), ascending: its
    regime's list, and for the adalora arm each of those times each `allocation.adalora.lr_scale` (its run
    gets the product as its rate; its LoRA config keeps scale 1, so the rate a run records is the rate it
    used). One rate: no selection runs, no selection job."""
    from lorarank.report.selection import rate_name

    lrs = [float(x) for x in _listed(config[regime]["lr"])]
    scales = [float(x) for x in _listed(config["allocation"]["adalora"]["lr_scale"])] if strategy == DYNAMIC else [1.0]
    return sorted({rate_name(lr * s) for lr in lrs for s in scales}, key=float)


def lookup(config: dict, key: str):
    value = config
    for part in key.split("."):
        value = value[part]
    return value


def values(config: dict, rule: str, **extra) -> dict:
    """field -> value for a rule's settings, from the config (plus values the rule knows, e.g. the strategy)."""
    _, keys = WIRING[rule]
    return {**{field: lookup(config, key) for key, field in keys.items()}, **extra}


def _flags(config: dict, rule: str, operational: bool = False, **extra) -> str:
    cls, _ = WIRING[rule]
    return options.to_flags(cls, values(config, rule, **extra), operational)


def flags(config: dict, rule: str, operational: bool = False, **extra) -> str:
    """The command-line flags a rule passes: the settings that change results (its rerun-triggering
    params, with the numerics profile for a compute rule), or with `operational` those that only change
    how the job runs."""
    out = _flags(config, rule, operational, **extra)
    if rule in COMPUTE_RULES and not operational:
        out += " " + _numerics_flags(config)
    return out.strip()


def _numerics_flags(config: dict) -> str:
    cls, keys = NUMERICS
    return options.to_flags(cls, {field: lookup(config, key) for key, field in keys.items()})


def numerics_settings(config: dict) -> Numerics:
    """The numerics profile exactly as a compute command builds it from the rule's flags."""
    return options.parse(NUMERICS[0], shlex.split(_numerics_flags(config)))


def settings(config: dict, rule: str, **extra):
    """A rule's settings object, exactly as its command will build it from the flags the rule passes."""
    cls, _ = WIRING[rule]
    argv = _flags(config, rule, **extra) + " " + _flags(config, rule, operational=True, **extra)
    return options.parse(cls, shlex.split(argv))


def _config_names(message: str, rule: str) -> str:
    """A command's message with its flags renamed to the config keys that set them."""
    _, keys = NUMERICS if rule == "numerics" else WIRING[rule]
    by_field = {field: key for key, field in keys.items()}

    def rename(m):
        field = m.group(1).replace("-", "_")
        return by_field.get(field, m.group(0))

    return re.sub(r"--([a-z][a-z0-9-]*)", rename, message)


def num_layers(config: dict) -> int | None:
    """The model's layer count where it is known without loading anything (else None)."""
    model = config["model"]
    if model["source"] == "tiny":
        return model["tiny"]["layers"]
    spec = Path(str(model.get("name_or_path") or ""))
    cfg = spec / "config.json" if spec.is_dir() else spec
    if cfg.suffix == ".json" and cfg.is_file():
        return json.loads(cfg.read_text()).get("num_hidden_layers")
    return None  # a hub id: known once the allocation job reads its config


# The projections of the architectures whose module names are known from config.json alone (no torch on a
# submit host): every one the workflow builds or imports. Another architecture is checked by its first
# job (lora-config names what the model has).
PROJECTIONS = {arch: set(DEFAULT_MODULES) for arch in ("qwen2", "llama", "mistral")}


def model_projections(config: dict) -> tuple[str, set[str]] | None:
    """(architecture, its adaptable projections) where known without loading anything, else None."""
    model = config["model"]
    if model["source"] == "tiny":
        return "tiny qwen2", PROJECTIONS["qwen2"]
    spec = Path(str(model.get("name_or_path") or ""))
    cfg = spec / "config.json" if spec.is_dir() else spec
    arch = json.loads(cfg.read_text()).get("model_type") if cfg.suffix == ".json" and cfg.is_file() else None
    return (arch, PROJECTIONS[arch]) if arch in PROJECTIONS else None


def check_target_modules(config: dict) -> None:
    known = model_projections(config)
    targets = config["allocation"]["target_modules"]
    unknown = [m for m in targets if known and m not in known[1]]
    if unknown:
        raise UserError(f"allocation.target_modules {targets}: {', '.join(unknown)} is not a projection of the "
                        f"{known[0]} model (allowed: {', '.join(m for m in DEFAULT_MODULES if m in known[1])})")


def _split_size(config: dict) -> int | None:
    data = config["data"]
    if data["source"] == "synthetic":
        return data["synthetic"]["n_test"]
    if data["source"] == "local" and data.get("path"):
        test = Path(data["path"]) / "test.jsonl"
        if test.is_file():
            return sum(1 for line in test.read_bytes().splitlines() if line.strip())  # the command checks UTF-8
    return None


def check_schema(config: dict, schema_path: str) -> None:
    """The config against the JSON schema, the first violation as one line naming the key."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise UserError(f"{where or 'the config'}: {error.message}")


def load(config: dict, schema_path: str) -> None:
    """What the Snakefile does to a config when it loads, in place: the schema first, its first violation as one
    line naming the key (Snakemake's own message is a page); then Snakemake's validation, which fills in the
    schema's defaults; then the cross-field checks (`check`). Raises UserError; the tests call it in-process."""
    from snakemake.utils import validate

    check_schema(config, schema_path)
    validate(config, schema_path)
    check(config)


# A base model's training seeds: base s trains seed k as SEED_STRIDE * s + k, so that every base model has runs
# of its own (a nested design: the spread between bases then carries the seeds' variance too; with shared
# seeds, a seed's effect common to every base would drop out of it). Base 0 keeps `seeds` as they are.
SEED_STRIDE = 1000


def bases(config: dict) -> dict[str, int]:
    """Experiment name -> warm-up seed, one per base model (`warmup.seeds`): the first keeps the experiment's
    own name (one seed, 0: today's layout and bits); each other runs the whole study as `<experiment>.warmup<s>`.
    Base s's tiny model is initialised with `model.tiny.seed + s` and warmed up with seed s (another draw of
    the whole base-model procedure, not only another data order), and its runs train at seeds of their own
    (`training_seed`)."""
    seeds = list(config["warmup"].get("seeds") or [0])
    exp = config["experiment"]
    return {exp if i == 0 else f"{exp}.warmup{s}": s for i, s in enumerate(seeds)}


def training_seed(base: int, seed: int) -> int:
    """The seed a run of base model `base` trains at for the config's `seed` (seeds, selection.seeds,
    allocation.profile_seed): the seed itself on base 0, `SEED_STRIDE * base + seed` on the others."""
    return SEED_STRIDE * base + seed


def base_config(config: dict, name: str) -> dict:
    """The config as one base model's study is: its name and its one warm-up seed. What its archive records,
    so that the study can be rerun, and checked, on its own."""
    out = copy.deepcopy(config)
    out["experiment"] = name
    out["warmup"]["seeds"] = [bases(config)[name]]
    return out


def base_seeds(config: dict, rule: str, seed: int) -> dict:
    """The settings a base model's warm-up seed changes: the tiny model's initialisation and the warm-up's seed
    (left to the command's default, 0, on base 0: the flags of a study without bases)."""
    if rule == "build_model":
        return {"seed": config["model"]["tiny"]["seed"] + seed}
    return {"seed": seed} if rule == "run_warmup" and seed else {}


def check_bases(config: dict) -> None:
    """Several base models: tiny ones only, whole-number seeds, and training seeds below SEED_STRIDE so that
    no two base models share a run's seed."""
    seeds = config["warmup"].get("seeds") or [0]
    own = re.search(r"\.warmup(\d+)$", config["experiment"])
    if own and list(seeds) != [int(own.group(1))]:  # a base model's own config (`base_config`) is its name
        raise UserError(f"experiment {config['experiment']!r} ends in '.warmup<n>', the name of another study's base "
                        f"model n (`warmup.seeds`), whose results it would share: choose another name")
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool)]
    if bad:
        raise UserError(f"warmup.seeds {seeds}: {bad[0]!r} is not a whole number (allowed: integers >= 0)")
    if len(seeds) == 1 and seeds[0] == 0:
        return
    source = config["model"]["source"]
    if source != "tiny":
        raise UserError(f"warmup.seeds {seeds}: base models other than the first need model.source tiny (built and "
                        f"warmed up here); a {source} model is one base model (allowed: [0])")
    for key, values in (("seeds", config["seeds"]), ("selection.seeds", config["selection"]["seeds"]),
                        ("allocation.profile_seed", [config["allocation"]["profile_seed"]])):
        big = [v for v in values if v >= SEED_STRIDE]
        if big:
            raise UserError(f"{key} {big[0]} is {SEED_STRIDE} or more, but with warmup.seeds {seeds} base s trains "
                            f"seed k as {SEED_STRIDE}*s + k (allowed: seeds below {SEED_STRIDE})")


def hub_model(config: dict) -> bool:
    """A pretrained model named by a hub id (not a local directory): fetched once by a local rule."""
    model = config["model"]
    return model["source"] == "pretrained" and not Path(str(model.get("name_or_path") or "")).is_dir()


def model_rules(config: dict) -> list[str]:
    """The wired rules that bring the base model into results/: they depend on model.source."""
    return {"tiny": ["build_model", "run_warmup"], "gguf": ["import_model"],
            "pretrained": ["fetch_model"] if hub_model(config) else []}[config["model"]["source"]]


def check(config: dict) -> None:
    """Refuse a config whose mistakes would otherwise surface minutes into a job: one UserError line,
    naming the config keys. The checks are the commands' own."""
    source = config["model"]["source"]
    tiny = source == "tiny"
    if source == "pretrained" and not config["model"].get("name_or_path"):
        raise UserError("model.name_or_path is required when model.source is 'pretrained'")
    check_bases(config)
    if tiny and not config["data"].get("warmup_fraction"):
        raise UserError("data.warmup_fraction is 0, but the tiny model's warm-up needs rows of its own "
                        "(the arms must not train on what the warm-up saw): set it in (0, 1), e.g. 0.5")
    gpus = config["grpo"]["gpus"] if source == "pretrained" else 1
    world = {**{r.rule: {"world": gpus} for r in REGIMES.values()},
             "evaluate_model": {"split_size": _split_size(config)}}
    for rule in model_rules(config) + ["prepare_data", *(r.rule for r in REGIMES.values()), "evaluate_model",
                                       "write_lora_config", "summarize_results"]:
        try:
            settings(config, rule).check(**world.get(rule, {}))
        except UserError as e:
            raise UserError(_config_names(str(e), rule)) from None
    try:  # on the submit host: a cluster's compute nodes are refused again by the job itself
        numerics_settings(config).check()
    except UserError as e:
        raise UserError(_config_names(str(e), "numerics")) from None
    check_adalora(config)
    check_selection(config)
    check_target_modules(config)
    n = num_layers(config)
    for policy in config["allocation"]["alpha_policies"]:
        for strategy in dict.fromkeys(["uniform", *config["allocation"]["strategies"]]):
            try:
                settings(config, "allocate_ranks", strategy=strategy, alpha_policy=policy).check(n)
            except UserError as e:
                raise UserError(f"allocation ({strategy} arm): " + _config_names(str(e), "allocate_ranks")) from None


def check_adalora(config: dict) -> None:
    """The adalora arms need a pruning phase in every regime's run, no DeepSpeed, and adalora-final its adalora
    (AdaLoRA's own checks, `lorarank.allocation.adalora_settings`, naming config keys)."""
    strategies = config["allocation"]["strategies"]
    if FROZEN_DYNAMIC in strategies and DYNAMIC not in strategies:
        raise UserError(f"allocation.strategies has {FROZEN_DYNAMIC} but not {DYNAMIC}: the frozen arm takes the final "
                        f"ranks of the {DYNAMIC} run, add {DYNAMIC}")
    if DYNAMIC not in strategies:
        return
    adalora = config["allocation"]["adalora"]
    for regime in config["regimes"]:
        try:
            refuse_deepspeed(config[regime].get("deepspeed"))
        except UserError as e:
            raise UserError(_config_names(str(e), REGIMES[regime].rule)) from None
        try:
            check_schedule(adalora["tinit"], adalora["tfinal"], config[regime]["steps"], f"{regime}.steps")
        except UserError as e:
            raise UserError(f"{e} (allocation.adalora.tinit, tfinal)") from None


def check_selection(config: dict) -> None:
    """The rate lists and the seeds around them: the profiling run must not be a run the arms are compared with
    (its noise would enter the ranks with one sign and the shift with the other), and the validation questions
    a selection run is graded on must exist."""
    for regime in config["regimes"]:
        lrs = _listed(config[regime]["lr"])
        if len(rates(config, regime, "uniform")) != len(lrs):
            raise UserError(f"{regime}.lr {lrs}: two rates are the same at 6 significant digits (allowed: distinct rates)")
    profile = config["allocation"]["profile_seed"]
    if profile in config["seeds"]:
        raise UserError(f"allocation.profile_seed {profile} is one of seeds {config['seeds']}: the run that sets the "
                        f"ranks must not be a run the arms are compared with (allowed: any other seed)")
    sel = config["selection"]
    validation = config["data"].get("validation")
    if validation is not None and sel["n"] > validation:
        raise UserError(f"selection.n {sel['n']} is larger than the validation split (data.validation {validation})")
