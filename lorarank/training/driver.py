"""The one training driver: what a run of every regime does, in order, whatever its trainer.

Cheap checks first (bad input fails in a second, before TRL is imported), then the DeepSpeed config, the
base model with its verified LoRA allocation (`lorarank.allocation.lora`), the gradient profiler, AdaLoRA's control
where the allocation is dynamic, the TRL trainer with both mixins, and the run record and outputs
(`lorarank.training.runs`). A regime (`lorarank.training.regimes`) supplies only what differs, as a `Recipe`: its rows, its
TRL trainer and config classes, and their arguments (reward functions, loss options, batch shape).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lorarank.errors import UserError
from lorarank.options import add_arguments, from_args, opt
from lorarank.training.regimes import WARMUP

# The trackers a run can report its logged steps to (TRL's `report_to`) -> the packages that provide each
# (transformers' TensorBoard writer takes tensorboard's or, without it, tensorboardX's).
TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",)}


def trackers(text: str) -> list[str]:
    """`--report-to`'s value: a comma list of TRACKERS (argparse type)."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in TRACKERS]
    if bad:
        raise argparse.ArgumentTypeError(f"{bad[0]!r} is not a tracker (allowed: {', '.join(TRACKERS)})")
    return names


def report_to():
    """The settings field of every regime: operational, since a tracker watches a run and changes none of its bits."""
    return opt([], "report each logged step to these trackers too (comma list: tensorboard, trackio, wandb; "
                   "TensorBoard writes OUT/tensorboard/)", type=trackers, operational=True)


def check_trackers(names: list[str]) -> None:
    """Refuse, before anything loads, a tracker whose package is not installed here (the job's environment, which
    the workflow's submit host need not share)."""
    from importlib.util import find_spec

    missing = [t for t in names if not any(find_spec(m) for m in TRACKERS[t])]
    if missing:
        have = [t for t in TRACKERS if any(find_spec(m) for m in TRACKERS[t])]
        raise UserError(f"--report-to {','.join(names)}: {missing[0]} is not installed here (installed: "
                        f"{', '.join(have) or 'none'}; pip install {TRACKERS[missing[0]][0]})")


def run_name(kind: str, doc: dict | None, lr: float, seed: int) -> str:
    """A run as trackers name it: its place among the study's runs (`grpo/uniform/ratio/lr0.001/seed0`, the path
    under `runs/` the workflow gives it; `warmup/seed0`)."""
    if not doc:
        return f"{kind}/seed{seed}"
    return f"{kind}/{doc['allocation']['strategy']}/{doc['alpha_policy']['name']}/lr{lr:g}/seed{seed}"


@dataclass(frozen=True)
class Recipe:
    regime: str  # its name in `lorarank.training.regimes`
    trl: Callable[[], tuple[type, type]]  # () -> (TRL trainer class, its config class), imported when run
    dataset: Callable  # (rows DataFrame, settings) -> datasets.Dataset
    config_args: Callable[..., dict]  # (settings, world) -> the regime's own fields of the TRL config
    trainer_args: Callable[..., dict] = lambda settings: {}  # (settings) -> extra trainer arguments


def train(recipe: Recipe, model: str, data: str, out: str | Path, settings, lora: str | None = None) -> dict:
    """Train one run into `out` (resuming there if it was interrupted): the adapter of `lora`, or all weights
    without one (the warm-up). Returns what run.json records."""
    from lorarank.allocation.lora import read_lora
    from lorarank.data.prepare import load_split
    from lorarank.training import adalora, runs

    world = int(os.environ.get("WORLD_SIZE", "1"))
    settings.check(world)
    check_trackers(settings.report_to)
    ds_cfg = runs.deepspeed_config(settings.deepspeed)
    adalora.check(read_lora(lora) if lora else None, settings.steps, settings.deepspeed)
    df = load_split(data)
    from transformers import set_seed

    from lorarank.allocation.lora import load_model_and_lora
    from lorarank.study import DEFAULT_MODULES
    from lorarank.training.profiler import GradProfiler, ProfiledTrainerMixin

    trainer_class, config_class = recipe.trl()
    out, s = Path(out), settings
    if ds_cfg:
        runs.ensure_distributed_env()
    rows = recipe.dataset(df, s)
    set_seed(s.seed)
    lm, tokenizer, doc = load_model_and_lora(model, lora, s.seed, s.bf16, total_step=s.steps)
    modules = sorted({m["module"] for m in doc["modules"]}) if doc else sorted(DEFAULT_MODULES)
    profiler = GradProfiler(lm, modules, s.weight_grad_every)
    dynamic = adalora.control(lm, doc)

    class Trainer(adalora.AdaLoraTrainerMixin, ProfiledTrainerMixin, trainer_class):
        pass

    kind = recipe.regime if doc else WARMUP
    if "tensorboard" in s.report_to:  # transformers' TensorBoard writer takes its folder from here; by default
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")  # it is under checkpoints/, deleted at the end
    common = runs.common_args(out, s.steps, adalora.learning_rate(s.lr, doc), s.seed, s.save_steps,
                              s.max_grad_norm, s.bf16, ds_cfg, s.report_to, run_name(kind, doc, s.lr, s.seed))
    cfg = config_class(**{**common, **recipe.config_args(s, world)})
    record = runs.run_record(kind, s, model, {"data": data, "lora": lora, "deepspeed": s.deepspeed}, doc)
    callbacks = [c for c in (dynamic, runs.CheckpointGradLog(profiler, runs.run_key(record), dynamic),
                             runs.ProgressLog(out)) if c]
    trainer = Trainer(model=lm, args=cfg, train_dataset=rows, processing_class=tokenizer, profiler=profiler,
                      adalora=dynamic, callbacks=callbacks, **recipe.trainer_args(s))
    extra = {"deepspeed": ds_cfg, "learning_rate": cfg.learning_rate}
    if doc:
        extra |= {"allocation": doc.get("allocation"), "expected_trainable_params": doc["expected_trainable_params"]}
    return runs.train_and_record(trainer, out, record, extra, doc)


def configure(p: argparse.ArgumentParser, settings_class: type, lora_help: str, lora_required: bool) -> None:
    """The flags every regime's command takes: its inputs, its output and its settings."""
    p.add_argument("--model", required=True, help="base model: directory or hub id")
    p.add_argument("--lora", required=lora_required, help=lora_help)
    p.add_argument("--data", required=True, help="training split (parquet with question, answer)")
    p.add_argument("--out", required=True, help="run directory")
    add_arguments(p, settings_class)


def run(recipe: Recipe, settings_class: type, args) -> int:
    settings = from_args(settings_class, args)
    info = train(recipe, args.model, args.data, args.out, settings, args.lora)
    print(f"{info['identity']['kind']}: {info['trainable_params']:,} trainable params, {settings.steps} steps -> {args.out}/final")
    return 0

