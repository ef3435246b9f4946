"""Batched vs one-at-a-time greedy evaluation on the tiny model: questions per second, same outputs.

    python benchmarks/eval_batching.py [--n 200] [--batch-size 100] [--model DIR --data TEST.parquet]

Without --model it prepares synthetic data, builds the tiny model and gives it a short SFT warm-up
(so completions end at EOS, as real ones do) in a scratch directory.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import lorarank, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lorarank-bench-"))
    if not args.model:
        lorarank("prepare-data", "--source", "synthetic", "--n-train", 2000, "--n-test", 200, "--out", scratch / "d")
        lorarank("build-model", "--data", scratch / "d/train.parquet", "--out", scratch / "m")
        lorarank("sft", "--model", scratch / "m", "--data", scratch / "d/train.parquet", "--steps", 150,
                 "--lr", "1e-3", "--save-steps", 1000, "--out", scratch / "sft")
        args.model, args.data = scratch / "sft/final", scratch / "d/test.parquet"

    from lorarank.data.prepare import load_split
    from lorarank.evaluation.evaluate import EvalSettings, generate, load_model, subset

    model, tok = load_model(str(args.model), None)
    questions = list(subset(load_split(args.data), EvalSettings(n=args.n, seed=0))["question"])
    rows, outputs = [], {}
    for bs in (1, args.batch_size):
        t0 = time.perf_counter()
        texts, n_tok = generate(model, tok, questions, "hash", bs, args.max_new_tokens, progress=False)
        dt = time.perf_counter() - t0
        outputs[bs] = texts
        rows.append([bs, len(questions), dt, len(questions) / dt, n_tok / dt])
    base = rows[0][3]
    same = sum(a == b for a, b in zip(outputs[1], outputs[args.batch_size]))
    for r in rows:
        r.append(f"{r[3] / base:.1f}x")
    print(table(["batch size", "questions", "seconds", "questions/s", "tokens/s", "speed-up"], rows))
    print(f"identical completions (batch {args.batch_size} vs 1): {same}/{len(questions)}")


if __name__ == "__main__":
    main()
