"""`lorarank train`: GRPO (TRL `GRPOTrainer`) with a verified LoRA allocation and the gradient profiler.

    python -m lorarank train --model runs/sft/final --lora lora/uniform.json \
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
from pathlib import Path

from lorarank.cli import positive_int
from lorarank.errors import UserError
from lorarank.lora import load_model_and_lora

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")


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


def check(args) -> None:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.generations < 2:
        raise UserError(f"--generations {args.generations}: GRPO needs at least 2 completions per prompt")
    if (args.prompts_per_step * args.generations) % world:
        raise UserError(f"{args.prompts_per_step} prompts x {args.generations} generations = "
                        f"{args.prompts_per_step * args.generations} completions per step do not divide over {world} processes")
    if args.lr <= 0:
        raise UserError(f"--lr {args.lr} must be > 0")
    if args.beta < 0 or args.temperature <= 0:
        raise UserError(f"--beta {args.beta} must be >= 0 and --temperature {args.temperature} > 0")


def run_grpo(args) -> dict:
    from lorarank import runs
    from lorarank.data import load_split

    # cheap checks first: bad input fails in a second, before TRL is even imported
    check(args)
    ds_cfg = runs.deepspeed_config(args.deepspeed)
    df = load_split(args.data)
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    from lorarank.profiler import GradProfiler, ProfiledTrainerMixin

    out = Path(args.out)
    if ds_cfg:
        runs.ensure_distributed_env()
    train = dataset(df, args.layout)
    set_seed(args.seed)
    model, tokenizer, doc = load_model_and_lora(args.model, args.lora, args.seed)
    modules = sorted({m["module"] for m in doc["modules"]})
    profiler = GradProfiler(model, modules)
    world = int(os.environ.get("WORLD_SIZE", "1"))

    class Trainer(ProfiledTrainerMixin, GRPOTrainer):
        pass

    cfg = GRPOConfig(
        **runs.common_args(out, args.steps, args.lr, args.seed, args.save_steps, args.max_grad_norm, args.bf16, ds_cfg),
        per_device_train_batch_size=args.prompts_per_step * args.generations // world,
        gradient_accumulation_steps=1, num_generations=args.generations,
        max_completion_length=args.max_completion_length, temperature=args.temperature,
        beta=args.beta, loss_type=args.loss_type, log_completions=False, shuffle_dataset=True,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    identity = runs.run_identity(args)  # hashes the inputs once
    trainer = Trainer(model=model, reward_funcs=reward_functions(args.layout, args.partial_credit), args=cfg,
                      train_dataset=train, processing_class=tokenizer,
                      callbacks=[runs.CheckpointGradLog(profiler, runs.run_key(identity))])
    extra = {"kind": "grpo", "allocation": doc.get("allocation"), "deepspeed": ds_cfg,
             "expected_trainable_params": doc["expected_trainable_params"]}
    return runs.train_and_record(trainer, profiler, out, args, identity, extra)

def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="base model: directory or hub id")
    p.add_argument("--lora", required=True, help="lora.json from `lorarank lora-config`")
    p.add_argument("--data", required=True, help="training split (parquet with question, answer)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--layout", choices=("hash", "tags"), default="hash", help="answer layout the format reward wants")
    p.add_argument("--steps", type=positive_int, default=60)
    p.add_argument("--prompts-per-step", type=positive_int, default=8)
    p.add_argument("--generations", type=positive_int, default=8, help="completions per prompt")
    p.add_argument("--max-completion-length", type=positive_int, default=96)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=0.0, help="KL coefficient (TRL 1.x default 0)")
    p.add_argument("--loss-type", choices=LOSS_TYPES, default="dapo")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--save-steps", type=positive_int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-partial-credit", dest="partial_credit", action="store_false",
                   help="binary correctness reward (the study's); default gives 0.5 for a right last number")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU only; ignored on CPU)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="trade compute for memory (TRL turns it on by default; off here: small models)")
    p.add_argument("--deepspeed", help="DeepSpeed JSON (config/deepspeed/zero2.json)")


def run(args) -> int:
    info = run_grpo(args)
    print(f"grpo: {info['trainable_params']:,} trainable params, {args.steps} steps -> {args.out}")
    return 0
