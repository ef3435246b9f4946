"""`lorarank train`: GRPO (TRL `GRPOTrainer`) with a verified LoRA allocation and the gradient profiler.

    python -m lorarank train --model warmup/final --lora lora/uniform.json \
        --data data/synth/train.parquet --steps 60 --prompts-per-step 8 --generations 8 --out runs/uniform/seed0
    # DeepSpeed ZeRO-2 (zero3.json: ZeRO-3; one process here, `accelerate launch` for several GPUs):
    python -m lorarank train ... --deepspeed config/deepspeed/zero2.json
    # watched while it trains: OUT/progress.jsonl, `lorarank progress`, and trackers (--report-to tensorboard)

Rewards: `format` and `correctness` (`lorarank.training.rewards`, graded by the evaluation's grader). The
LoRA config is verified on the real model before anything trains: every module's r, alpha and
scaling and the trainable total must be what `lora.json` promises. Outputs (see `lorarank.training.runs`):
`final/` (adapter, safetensors), `grad_norms.parquet`, `trainer_log.jsonl`, `run.json`.
Rerunning the same command after an interruption resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from lorarank.argtypes import positive_float, positive_int
from lorarank.data.prompts import LAYOUTS
from lorarank.errors import UserError
from lorarank.options import opt
from lorarank.training import driver

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
    report_to: list[str] = driver.report_to()

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


def dataset(df, settings: GRPOSettings):
    from datasets import Dataset

    from lorarank.data.prompts import messages

    return Dataset.from_list([{"prompt": messages(q, settings.layout), "gold": g}
                              for q, g in zip(df["question"], df["gold"])])


def reward_functions(layout: str, partial_credit: bool):
    from lorarank.training import rewards

    def format(completions, **_):
        return rewards.format_reward(completions, layout=layout)

    def correctness(completions, gold, **_):
        return rewards.correctness_reward(completions, gold, partial_credit=partial_credit)

    return [format, correctness]


def _trl():
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def config_args(s: GRPOSettings, world: int) -> dict:
    return dict(per_device_train_batch_size=s.prompts_per_step * s.generations // world,
                gradient_accumulation_steps=1, num_generations=s.generations,
                max_completion_length=s.max_completion_length, temperature=s.temperature,
                beta=s.beta, loss_type=s.loss_type, log_completions=False, shuffle_dataset=True,
                gradient_checkpointing=s.gradient_checkpointing)


RECIPE = driver.Recipe("grpo", _trl, dataset, config_args,
                lambda s: {"reward_funcs": reward_functions(s.layout, s.partial_credit)})


def configure(p: argparse.ArgumentParser) -> None:
    driver.configure(p, GRPOSettings, "lora.json from `lorarank lora-config`", lora_required=True)


def run(args) -> int:
    return driver.run(RECIPE, GRPOSettings, args)
