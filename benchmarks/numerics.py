"""What the portable numerics profile costs against the CPU's native kernels (lorarank/numerics.py).

    python benchmarks/numerics.py [--steps 10] [--repeats 2] [--toy]

For the default study's model (8 layers x 128, `config/config.yaml`) a warm-up (full-weight SFT) step, a
GRPO step (8 prompts x 8 generations, LoRA rank 8 on the 7 projections) and an evaluation batch of 100
questions, and a GRPO step of the 28-layer benchmark shape (`benchmarks/training.py`). Each row runs the same
command under `--kernels portable` and `--kernels native` (2 threads both) and reads the time the command
itself measured (run.json's train_runtime, metrics.json's generation seconds: no process start or imports),
the best of `--repeats`. The last column says whether the two gave the same bits on this CPU.

`--toy` runs every command once at the smallest sizes (the test suite does, so that the script cannot rot;
its times mean nothing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from common import lorarank, table


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timed(kind: str, argv: list, out: Path, repeats: int) -> tuple[float, str]:
    """(best seconds, sha256 of the main output) of one command under one kernel choice."""
    best, digest = float("inf"), ""
    for i in range(repeats):
        d = out / f"{kind}{i}"
        lorarank(*argv, "--kernels", kind, "--threads", 2, "--out", d)
        if (d / "run.json").is_file():
            seconds = json.loads((d / "run.json").read_text())["train_seconds"]
            digest = sha(next((d / "final").glob("*.safetensors")))
        else:
            seconds = json.loads((d / "metrics.json").read_text())["seconds"]
            digest = sha(d / "predictions.parquet")
        best = min(best, seconds)
    return best, digest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10, help="training steps per measured run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per cell; the fastest counts")
    ap.add_argument("--layers", type=int, default=8, help="layers of the default-shaped model")
    ap.add_argument("--deep-layers", type=int, default=28, help="layers of the benchmark shape (0: skip its row)")
    ap.add_argument("--questions", type=int, default=100, help="questions in the evaluation batch")
    ap.add_argument("--toy", action="store_true", help="1 step, 1 repeat, 2 layers, no deep row, 4 questions, "
                                                       "2 prompts x 2 generations, 8 new tokens")
    args = ap.parse_args()
    grpo_shape, new_tokens = (8, 8, 32), 48
    if args.toy:
        args.steps, args.repeats, args.layers, args.deep_layers, args.questions = 1, 1, 2, 0, 4
        grpo_shape, new_tokens = (2, 2, 8), 8
    s = Path(tempfile.mkdtemp(prefix="lorarank-numerics-"))
    lorarank("prepare-data", "--source", "synthetic", "--n-train", 1000, "--n-test", max(args.questions, 20),
             "--out", s / "d")
    train, test = s / "d/train.parquet", s / "d/test.parquet"
    shapes = {"default": ["--layers", args.layers, "--hidden", 128, "--heads", 4, "--kv-heads", 2,
                          "--intermediate", 352, "--vocab-size", 512]}
    if args.deep_layers:
        shapes["benchmark"] = ["--layers", args.deep_layers, "--hidden", 64, "--intermediate", 176]
    for name, shape in shapes.items():
        lorarank("build-model", "--data", train, *shape, "--out", s / name)
        n = args.layers if name == "default" else args.deep_layers
        lorarank("allocate", "--strategy", "uniform", "--budget", 8 * n, "--num-layers", n, "--out", s / f"{name}.a.json")
        lorarank("lora-config", "--allocation", s / f"{name}.a.json", "--model", s / name, "--out", s / f"{name}.l.json")
    steps = ["--steps", args.steps, "--save-steps", 1000]
    prompts, generations, completion = grpo_shape
    grpo = ["--data", train, *steps, "--prompts-per-step", prompts, "--generations", generations,
            "--max-completion-length", completion]
    cases = [
        ("warm-up step (SFT, full weights), default model", "step",
         ["sft", "--model", s / "default", "--data", train, *steps, "--batch-size", 16]),
        ("GRPO step, default model", "step", ["train", "--model", s / "default", "--lora", s / "default.l.json", *grpo]),
        (f"evaluation batch of {args.questions}, default model", "batch",
         ["evaluate", "--model", s / "default", "--data", test, "--n", args.questions, "--batch-size", args.questions,
          "--max-new-tokens", new_tokens, "--quiet"]),
    ]
    if args.deep_layers:
        cases.append((f"GRPO step, {args.deep_layers} layers x 64", "step",
                      ["train", "--model", s / "benchmark", "--lora", s / "benchmark.l.json", *grpo]))
    rows = []
    for label, unit, argv in cases:
        per = args.steps if unit == "step" else 1
        port, port_sha = timed("portable", argv, s / f"{len(rows)}", args.repeats)
        nat, nat_sha = timed("native", argv, s / f"{len(rows)}", args.repeats)
        rows.append([label, port / per, nat / per, f"{port / nat:.2f}x", "same" if port_sha == nat_sha else "differ"])
    print(table(["what", "portable s", "native s", "portable / native", "bits"], rows))


if __name__ == "__main__":
    main()
