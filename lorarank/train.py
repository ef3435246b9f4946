"""`lorarank train`: GRPO (TRL `GRPOTrainer`) with a verified LoRA allocation and the gradient profiler.

    python -m lorarank train --model warmup/final --lora lora/uniform.json \
        --data data/synth/train.parquet --steps 60 --prompts-per-step 8 --generations 8 --out runs/uniform/seed0
    # DeepSpeed ZeRO-2 (one process here; `accelerate launch` for several GPUs):
    python -m lorarank train ... --deepspeed config/deepspeed/zero2.json

Rewards: `format` and `correctness` (`lorarank.rewards`, graded by the evaluation's grader). The
LoRA config is verified on the real model before anything trains: every module's r, alpha and
scaling and the trainable total must be what `lora.json` promises. Outputs (see `lorarank.runs`):
`final/` (adapter, safetensors), `grad_norms.parquet`, `trainer_log.jsonl`, `run.json`.
Rerunning the same command after an interruption resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from lorarank.argtypes import positive_float, positive_int
from lorarank.errors import UserError
from lorarank.options import add_arguments, from_args, opt
from lorarank.prompts import LAYOUTS

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


@dataclass
class GRPOSettings:
    """The flags of `lorarank train`, config `grpo` (and `layout`)."""

    layout: str = opt("hash", "answer layout the format reward wants", choices=LAYOUTS)
    steps: int = opt(60, "optimizer steps", type=positive_int)
    prompts_per_step: int = opt(8, "prompts per step", type=positive_int)
    generations: int = opt(8, "completions per prompt", type=positive_int)
    max_completion_length: int = opt(96, "completion tokens at most", type=positive_int)
    lr: float = opt(5e-4, "learning rate", type=positive_float)
    beta: float = opt(0.0, "KL coefficient (TRL 1.x default 0)")
    loss_type: str = opt("dapo", "TRL loss aggregation", choices=LOSS_TYPES)
    temperature: float = opt(1.0, "sampling temperature", type=positive_float)
    max_grad_norm: float = opt(1.0, "gradient clipping (0 = off); gradients are profiled before it")
    partial_credit: bool = opt(True, "0.5 correctness reward for a right last number (--no-partial-credit: "
                                     "the study's binary reward)")
    seed: int = opt(0, "training seed (sampling, shuffling, LoRA init)")
    bf16: bool = opt(False, "bf16 mixed precision (GPU only; ignored on CPU)")
    gradient_checkpointing: bool = opt(False, "trade compute for memory (TRL turns it on by default; off here)")
    deepspeed: str | None = opt(None, "DeepSpeed JSON (config/deepspeed/zero2.json)")
    weight_grad_every: int = opt(1, "log the full-weight gradient norm of every adapted projection every k-th "
                                    "step (1 = every step; larger trades resolution for cost on big models)",
                                 type=positive_int)
    save_steps: int = opt(20, "checkpoint interval: where a killed run resumes", type=positive_int, operational=True)

    def check(self, world: int = 1) -> None:
        """Cross-field mistakes, in one line, before anything is loaded (the workflow calls it too)."""
        if self.generations < 2:
            raise UserError(f"--generations {self.generations}: GRPO needs at least 2 completions per prompt")
        if (self.prompts_per_step * self.generations) % world:
            raise UserError(f"--prompts-per-step {self.prompts_per_step} x --generations {self.generations} = "
                            f"{self.prompts_per_step * self.generations} completions per step do not divide "
                            f"over {world} processes (one per GPU)")
        if self.beta < 0:
            raise UserError(f"--beta {self.beta} must be >= 0")
        if self.max_grad_norm < 0:
            raise UserError(f"--max-grad-norm {self.max_grad_norm} must be >= 0 (0 turns clipping off)")


def dataset(df, layout: str):
    from datasets import Dataset

    from lorarank.prompts import messages

    return Dataset.from_list([{"prompt": messages(q, layout), "gold": g} for q, g in zip(df["question"], df["gold"])])


def reward_functions(layout: str, partial_credit: bool):
    from lorarank import rewards

    def format(completions, **_):
        return rewards.format_reward(completions, layout=layout)

    def correctness(completions, gold, **_):
        return rewards.correctness_reward(completions, gold, partial_credit=partial_credit)

    return [format, correctness]


def run_grpo(model: str, lora: str, data: str, out: str | Path, settings: GRPOSettings) -> dict:
    """Train one GRPO run into `out` (resuming there if it was interrupted); returns run.json."""
    from lorarank import adalora, runs
    from lorarank.data import load_split
    from lorarank.lora import read_lora

    # cheap checks first: bad input fails in a second, before TRL is even imported
    world = int(os.environ.get("WORLD_SIZE", "1"))
    settings.check(world)
    ds_cfg = runs.deepspeed_config(settings.deepspeed)
    adalora.check(read_lora(lora), settings.steps, settings.deepspeed)
    df = load_split(data)
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from lorarank.lora import load_model_and_lora
    from lorarank.profiler import GradProfiler, ProfiledTrainerMixin

    out = Path(out)
    if ds_cfg:
        runs.ensure_distributed_env()
    train = dataset(df, settings.layout)
    set_seed(settings.seed)
    lm, tokenizer, doc = load_model_and_lora(model, lora, settings.seed, settings.bf16, total_step=settings.steps)
    profiler = GradProfiler(lm, sorted({m["module"] for m in doc["modules"]}), settings.weight_grad_every)
    dynamic = adalora.control(lm, doc)

    class Trainer(adalora.AdaLoraTrainerMixin, ProfiledTrainerMixin, GRPOTrainer):
        pass

    s = settings
    cfg = GRPOConfig(
        **runs.common_args(out, s.steps, adalora.learning_rate(s.lr, doc), s.seed, s.save_steps, s.max_grad_norm, s.bf16, ds_cfg),
        per_device_train_batch_size=s.prompts_per_step * s.generations // world,
        gradient_accumulation_steps=1, num_generations=s.generations,
        max_completion_length=s.max_completion_length, temperature=s.temperature,
        beta=s.beta, loss_type=s.loss_type, log_completions=False, shuffle_dataset=True,
        gradient_checkpointing=s.gradient_checkpointing,
    )
    record = runs.run_record("grpo", settings, model, {"data": data, "lora": lora, "deepspeed": s.deepspeed}, doc)
    trainer = Trainer(model=lm, reward_funcs=reward_functions(s.layout, s.partial_credit), args=cfg,
                      train_dataset=train, processing_class=tokenizer, profiler=profiler, adalora=dynamic,
                      callbacks=[c for c in (dynamic, runs.CheckpointGradLog(profiler, runs.run_key(record), dynamic)) if c])
    extra = {"allocation": doc.get("allocation"), "deepspeed": ds_cfg, "learning_rate": cfg.learning_rate,
             "expected_trainable_params": doc["expected_trainable_params"]}
    return runs.train_and_record(trainer, out, record, extra, doc)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model: directory or hub id")
    p.add_argument("--lora", required=True, help="lora.json from `lorarank lora-config`")
    p.add_argument("--data", required=True, help="training split (parquet with question, answer)")
    p.add_argument("--out", required=True, help="run directory")
    add_arguments(p, GRPOSettings)


def run(args) -> int:
    settings = from_args(GRPOSettings, args)
    info = run_grpo(args.model, args.lora, args.data, args.out, settings)
    print(f"grpo: {info['trainable_params']:,} trainable params, {settings.steps} steps -> {args.out}")
    return 0
