"""GRPO step time on the plain and DeepSpeed ZeRO-2 paths, and with AdaLoRA, and what the gradient
profiler and AdaLoRA's allocator cost.

    python benchmarks/training.py [--layers 28] [--steps 10] [--model DIR --data TRAIN.parquet]

A 28-layer tiny Qwen2 with LoRA on all 7 projections (392 profiled A/B matrices and 196 full-weight
gradients G, as in the study). Profiler cost is measured inside the same run: time spent in
`GradProfiler.record` (A/B norms; goal <= 1% of step time) and in forming and measuring G
(`lorarank.training.weightgrad`; goal <= 10% every step, <= 1% every 10th step), over the Trainer's train_runtime.
The AdaLoRA row starts every matrix at rank 12 and prunes to the same budget (mean 8); its allocator's
time (`update_and_allocate` each step) is the last column.

Without --model it prepares synthetic data and builds the tiny model in a scratch directory. The test suite's
toy run: `--model` its tiny model, `--steps 4` (AdaLoRA's pruning needs more than tinit + tfinal = 3 steps),
`--prompts-per-step 2 --generations 2 --max-completion-length 8`.
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
    ap.add_argument("--max-completion-length", type=int, default=32)
    ap.add_argument("--model", type=Path, help="a built model directory (default: build one with --layers)")
    ap.add_argument("--data", type=Path, help="its training split (with --model)")
    args = ap.parse_args()
    if (args.model is None) != (args.data is None):
        ap.error("--model and --data go together")
    s = Path(tempfile.mkdtemp(prefix="lorarank-bench-"))
    model, data = args.model, args.data
    if model is None:
        lorarank("prepare-data", "--source", "synthetic", "--n-train", 500, "--n-test", 20, "--out", s / "d")
        model, data = s / "m", s / "d/train.parquet"
        lorarank("build-model", "--data", data, "--layers", args.layers, "--hidden", 64, "--intermediate", 176,
                 "--out", model)
    layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    lorarank("allocate", "--strategy", "uniform", "--budget", 8 * layers, "--num-layers", layers, "--out", s / "a.json")
    lorarank("lora-config", "--allocation", s / "a.json", "--model", model, "--out", s / "l.json", "--verify")
    lorarank("allocate", "--strategy", "adalora", "--budget", 8 * layers, "--init-r", 12, "--tinit", 1,
             "--tfinal", 2, "--num-layers", layers, "--out", s / "ada.json")
    lorarank("lora-config", "--allocation", s / "ada.json", "--model", model, "--out", s / "ada-lora.json", "--verify")
    rows = []
    paths = (("plain, G every step", s / "l.json", ["--weight-grad-every", 1]),
             ("plain, G every 10th step", s / "l.json", ["--weight-grad-every", 10]),
             ("deepspeed-zero2, G every step", s / "l.json", ["--deepspeed", ROOT / "config/deepspeed/zero2.json"]),
             ("adalora 12 -> 8, G every step", s / "ada-lora.json", ["--weight-grad-every", 1]))
    for i, (path, lora, extra) in enumerate(paths):
        out = s / f"run{i}"
        lorarank("train", "--model", model, "--lora", lora, "--data", data, "--out", out,
                 "--steps", args.steps, "--prompts-per-step", args.prompts_per_step, "--generations", args.generations,
                 "--max-completion-length", args.max_completion_length, "--save-steps", 1000, *extra)
        run = json.loads((out / "run.json").read_text())
        matrices = len(json.loads(lora.read_text())["modules"]) * 2
        per_step = run["train_seconds"] / args.steps
        rows.append([path, args.steps, matrices, per_step, 1000 * run["profiler_seconds"] / args.steps,
                     f"{100 * run['profiler_seconds'] / run['train_seconds']:.2f}%",
                     1000 * run["weight_grad_seconds"] / args.steps,
                     f"{100 * run['weight_grad_seconds'] / run['train_seconds']:.2f}%",
                     1000 * run.get("allocator_seconds", 0.0) / args.steps])
    print(table(["path", "steps", "A/B matrices", "s/step", "A/B ms/step", "A/B share", "G ms/step", "G share",
                 "allocator ms/step"], rows))


if __name__ == "__main__":
    main()
