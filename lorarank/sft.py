"""`lorarank sft`: supervised fine-tuning on the training split, with the gradient profiler on.

    python -m lorarank sft --model model/base --data data/synth/train.parquet --steps 500 --out warmup
    python -m lorarank sft --model warmup/final --lora lora/uniform.json --data ... --out runs/sft/uniform/seed0

Full-parameter by default: the tiny local model's warm-up, which gives GRPO a signal (an untrained
model earns equal rewards, hence zero advantages and zero gradients); its gradient log rows have
matrix 'W'. With `--lora lora.json` it trains a verified LoRA adapter instead (rows 'A'/'B'): the SFT
arms of the study's SFT-vs-GRPO contrast. The loss covers the completion (the answer) only.
Outputs as for `lorarank train` (see `lorarank.runs`); the trained model or adapter is `OUT/final/`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from lorarank.argtypes import positive_float, positive_int
from lorarank.errors import UserError
from lorarank.options import add_arguments, from_args, opt
from lorarank.prompts import LAYOUTS


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

    def check(self) -> None:
        if self.warmup_steps < 0:
            raise UserError(f"--warmup-steps {self.warmup_steps} must be >= 0")
        if self.max_grad_norm < 0:
            raise UserError(f"--max-grad-norm {self.max_grad_norm} must be >= 0 (0 turns clipping off)")


def dataset(df, layout: str):
    from datasets import Dataset

    from lorarank.prompts import messages, target

    return Dataset.from_list([
        {"prompt": messages(q, layout), "completion": [{"role": "assistant", "content": target(a, layout)}]}
        for q, a in zip(df["question"], df["answer"])
    ])


def run_sft(model: str, data: str, out: str | Path, settings: SFTSettings, lora: str | None = None) -> dict:
    """Train into `out` (resuming there if it was interrupted): all weights, or the adapter of `lora`."""
    from lorarank import adalora, runs
    from lorarank.data import load_split
    from lorarank.lora import read_lora

    settings.check()
    ds_cfg = runs.deepspeed_config(settings.deepspeed)
    adalora.check(read_lora(lora) if lora else None, settings.steps, settings.deepspeed)
    df = load_split(data)
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from lorarank.lora import load_model_and_lora
    from lorarank.profiler import GradProfiler, ProfiledTrainerMixin
    from lorarank.study import DEFAULT_MODULES

    out = Path(out)
    if ds_cfg:
        runs.ensure_distributed_env()
    s = settings
    set_seed(s.seed)
    lm, tokenizer, lora_doc = load_model_and_lora(model, lora, s.seed, s.bf16, total_step=s.steps)
    dynamic = adalora.control(lm, lora_doc)
    modules = [m["module"] for m in lora_doc["modules"]] if lora_doc else list(DEFAULT_MODULES)
    profiler = GradProfiler(lm, sorted(set(modules)), s.weight_grad_every)
    train = dataset(df, s.layout)

    class Trainer(adalora.AdaLoraTrainerMixin, ProfiledTrainerMixin, SFTTrainer):
        pass

    cfg = SFTConfig(
        **runs.common_args(out, s.steps, adalora.learning_rate(s.lr, lora_doc), s.seed, s.save_steps, s.max_grad_norm, s.bf16, ds_cfg, s.warmup_steps),
        per_device_train_batch_size=s.batch_size, gradient_accumulation_steps=1,
        max_length=s.max_length, packing=False, completion_only_loss=True,
    )
    kind = "sft" if lora else "warmup"
    record = runs.run_record(kind, settings, model, {"data": data, "lora": lora, "deepspeed": s.deepspeed}, lora_doc)
    trainer = Trainer(model=lm, args=cfg, train_dataset=train, processing_class=tokenizer, profiler=profiler,
                      adalora=dynamic,
                      callbacks=[c for c in (dynamic, runs.CheckpointGradLog(profiler, runs.run_key(record), dynamic)) if c])
    extra = {"allocation": lora_doc.get("allocation"), "learning_rate": cfg.learning_rate,
             "expected_trainable_params": lora_doc["expected_trainable_params"]} if lora_doc else {}
    return runs.train_and_record(trainer, out, record, extra, lora_doc)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory or hub id")
    p.add_argument("--data", required=True, help="training split (parquet)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--lora", help="lora.json: train this adapter instead of all weights")
    add_arguments(p, SFTSettings)


def run(args) -> int:
    settings = from_args(SFTSettings, args)
    info = run_sft(args.model, args.data, args.out, settings, args.lora)
    print(f"sft: {info['trainable_params']:,} trainable params, {settings.steps} steps -> {args.out}/final")
    return 0
