"""GRPO step time on the plain and DeepSpeed ZeRO-2 paths, and what the gradient profiler costs.

    python benchmarks/training.py [--layers 28] [--steps 10]

A 28-layer tiny Qwen2 with LoRA on all 7 projections (392 profiled A/B matrices and 196 full-weight
gradients G, as in the study). Profiler cost is measured inside the same run: time spent in
`GradProfiler.record` (A/B norms; goal <= 1% of step time) and in forming and measuring G
(`lorarank.weightgrad`; goal <= 10% every step, <= 1% every 10th step), over the Trainer's train_runtime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import ROOT, lorarank, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--generations", type=int, default=4)
    args = ap.parse_args()
    s = Path(tempfile.mkdtemp(prefix="lorarank-bench-"))
    lorarank("prepare-data", "--source", "synthetic", "--n-train", 500, "--n-test", 20, "--out", s / "d")
    lorarank("build-model", "--data", s / "d/train.parquet", "--layers", args.layers, "--hidden", 64,
             "--intermediate", 176, "--out", s / "m")
    lorarank("allocate", "--strategy", "uniform", "--budget", 8 * args.layers, "--model", s / "m", "--out", s / "a.json")
    lorarank("lora-config", "--allocation", s / "a.json", "--model", s / "m", "--out", s / "l.json", "--verify")
    rows = []
    paths = (("plain, G every step", ["--weight-grad-every", 1]),
             ("plain, G every 10th step", ["--weight-grad-every", 10]),
             ("deepspeed-zero2, G every step", ["--deepspeed", ROOT / "config/deepspeed/zero2.json"]))
    for i, (path, extra) in enumerate(paths):
        out = s / f"run{i}"
        lorarank("train", "--model", s / "m", "--lora", s / "l.json", "--data", s / "d/train.parquet", "--out", out,
                 "--steps", args.steps, "--prompts-per-step", args.prompts_per_step, "--generations", args.generations,
                 "--max-completion-length", 32, "--save-steps", 1000, *extra)
        run = json.loads((out / "run.json").read_text())
        matrices = len(json.loads((s / "l.json").read_text())["modules"]) * 2
        per_step = run["train_seconds"] / args.steps
        rows.append([path, args.steps, matrices, per_step, 1000 * run["profiler_seconds"] / args.steps,
                     f"{100 * run['profiler_seconds'] / run['train_seconds']:.2f}%",
                     1000 * run["weight_grad_seconds"] / args.steps,
                     f"{100 * run['weight_grad_seconds'] / run['train_seconds']:.2f}%"])
    print(table(["path", "steps", "A/B matrices", "s/step", "A/B ms/step", "A/B share", "G ms/step", "G share"], rows))


if __name__ == "__main__":
    main()
