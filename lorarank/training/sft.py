"""`lorarank sft`: supervised fine-tuning on the training split, with the gradient profiler on.

    python -m lorarank sft --model model/base --data data/synth/train.parquet --steps 500 --out warmup
    python -m lorarank sft --model warmup/final --lora lora/uniform.json --data ... --out runs/sft/uniform/seed0

Full-parameter by default: the tiny local model's warm-up, which gives GRPO a signal (an untrained
model earns equal rewards, hence zero advantages and zero gradients); its gradient log rows have
matrix 'W'. With `--lora lora.json` it trains a verified LoRA adapter instead (rows 'A'/'B'): the SFT
arms of the study's SFT-vs-GRPO contrast. The loss covers the completion (the answer) only.
Outputs as for `lorarank train` (see `lorarank.training.runs`); the trained model or adapter is `OUT/final/`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from lorarank.argtypes import positive_float, positive_int
from lorarank.data.prompts import LAYOUTS
from lorarank.errors import UserError
from lorarank.options import opt
from lorarank.training import driver


@dataclass
class SFTSettings:
    """The flags of `lorarank sft`; config `warmup` (the full-weight warm-up) and `sft` (the LoRA-SFT arms)."""

    layout: str = opt("hash", "answer layout of the target completions", choices=LAYOUTS)
    steps: int = opt(500, "optimizer steps", type=positive_int)
    batch_size: int = opt(16, "examples per step", type=positive_int)
    lr: float = opt(1e-3, "peak learning rate (cosine schedule)", type=positive_float)
    warmup_steps: int = opt(30, "linear learning-rate warm-up steps")
    max_length: int = opt(256, "tokens per example at most (prompt + completion)", type=positive_int)
    max_grad_norm: float = opt(1.0, "gradient clipping (0 = off); gradients are profiled before it")
    seed: int = opt(0, "training seed (shuffling, LoRA init)")
    bf16: bool = opt(False, "bf16 mixed precision (GPU only; ignored on CPU)")
    deepspeed: str | None = opt(None, "DeepSpeed JSON (e.g. config/deepspeed/zero2.json)")
    weight_grad_every: int = opt(1, "LoRA runs: log the full-weight gradient norm of every adapted projection "
                                    "every k-th step", type=positive_int)
    save_steps: int = opt(200, "checkpoint interval: where a killed run resumes", type=positive_int, operational=True)
    report_to: list[str] = driver.report_to()

    def check(self, world: int = 1) -> None:
        if self.warmup_steps < 0:
            raise UserError(f"--warmup-steps {self.warmup_steps} must be >= 0")
        if self.max_grad_norm < 0:
            raise UserError(f"--max-grad-norm {self.max_grad_norm} must be >= 0 (0 turns clipping off)")


def dataset(df, settings: SFTSettings):
    from datasets import Dataset

    from lorarank.data.prompts import messages, target

    layout = settings.layout
    return Dataset.from_list([
        {"prompt": messages(q, layout), "completion": [{"role": "assistant", "content": target(a, layout)}]}
        for q, a in zip(df["question"], df["answer"])
    ])


def _trl():
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer, SFTConfig


def config_args(s: SFTSettings, world: int) -> dict:
    # the loss covers the completion (the answer) only
    return dict(warmup_steps=s.warmup_steps, per_device_train_batch_size=s.batch_size,
                gradient_accumulation_steps=1, max_length=s.max_length, packing=False, completion_only_loss=True)


RECIPE = driver.Recipe("sft", _trl, dataset, config_args)


def configure(p: argparse.ArgumentParser) -> None:
    driver.configure(p, SFTSettings, "lora.json: train this adapter instead of all weights", lora_required=False)


def run(args) -> int:
    return driver.run(RECIPE, SFTSettings, args)
