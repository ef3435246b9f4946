"""`lorarank sft`: supervised warm-up on the training split, with the gradient profiler on.

    python -m lorarank sft --model model/base --data data/synth/train.parquet --steps 600 --out runs/sft

For the tiny local model this is what gives GRPO a signal (an untrained model earns equal rewards,
hence zero advantages and zero gradients). Full-parameter by default (gradient log rows have
matrix 'W'); with `--lora lora.json` it trains a verified LoRA adapter instead (rows 'A'/'B'),
which is the SFT side of the study's SFT-vs-GRPO gradient contrast on a real model.
The trained model (or adapter) is `OUT/final/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorarank.cli import positive_int
from lorarank.errors import UserError


def dataset(df, layout: str):
    from datasets import Dataset

    from lorarank.prompts import messages, target

    return Dataset.from_list([
        {"prompt": messages(q, layout), "completion": [{"role": "assistant", "content": target(a, layout)}]}
        for q, a in zip(df["question"], df["answer"])
    ])


def run_sft(args) -> dict:
    from lorarank import runs
    from lorarank.data import load_split

    ds_cfg = runs.deepspeed_config(args.deepspeed)
    df = load_split(args.data)
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from lorarank.profiler import GradProfiler, ProfiledTrainerMixin
    from lorarank.lora import load_model_and_lora
    from lorarank.spec import DEFAULT_MODULES

    out = Path(args.out)
    if ds_cfg:
        runs.ensure_distributed_env()
    set_seed(args.seed)
    model, tokenizer, lora_doc = load_model_and_lora(args.model, args.lora, args.seed)
    modules = [m["module"] for m in lora_doc["modules"]] if lora_doc else list(DEFAULT_MODULES)
    profiler = GradProfiler(model, sorted(set(modules)))
    train = dataset(df, args.layout)

    class Trainer(ProfiledTrainerMixin, SFTTrainer):
        pass

    cfg = SFTConfig(
        **runs.common_args(out, args.steps, args.lr, args.seed, args.save_steps, args.max_grad_norm, args.bf16, ds_cfg,
                           args.warmup_steps),
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        max_length=args.max_length, packing=False, completion_only_loss=True,
    )
    identity = runs.run_identity(args)  # hashes the inputs once
    trainer = Trainer(model=model, args=cfg, train_dataset=train, processing_class=tokenizer,
                      callbacks=[runs.CheckpointGradLog(profiler, runs.run_key(identity))])
    return runs.train_and_record(trainer, profiler, out, args, identity, {"kind": "sft"})

def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory or hub id")
    p.add_argument("--data", required=True, help="training split (parquet)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--lora", help="lora.json: train this adapter instead of all weights")
    p.add_argument("--layout", choices=("hash", "tags"), default="hash")
    p.add_argument("--steps", type=positive_int, default=600)
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--max-length", type=positive_int, default=256)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--save-steps", type=positive_int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU only; ignored on CPU)")
    p.add_argument("--deepspeed", help="DeepSpeed JSON (e.g. config/deepspeed/zero2.json)")


def run(args) -> int:
    if args.lr <= 0:
        raise UserError(f"--lr {args.lr} must be > 0")
    info = run_sft(args)
    print(f"sft: {info['trainable_params']:,} trainable params, {args.steps} steps -> {args.out}/final")
    return 0
