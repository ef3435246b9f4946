"""How long allocation targets and PEFT verification take on the study's shape (goal: well under 2 s each).

    python benchmarks/lora_config.py [--repeat 5]

Qwen2.5-1.5B-Instruct's published shape (28 layers x 7 projections), built on the meta device from a
config alone: enumerating the 196 targets and verifying a uniform r = 32 LoraConfig module by module.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import table

QWEN25_15B = dict(model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                  max_position_embeddings=32768)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from lorarank.allocation import lora
    from lorarank.allocation.ranks import build
    from lorarank.allocation.spec import AllocationSpec
    from lorarank.models.loading import load_config, targets
    from lorarank.study import DEFAULT_MODULES

    work = Path(tempfile.mkdtemp(prefix="lorarank-bench-"))
    (work / "config.json").write_text(json.dumps(QWEN25_15B))
    config = load_config(str(work / "config.json"))
    doc = build(AllocationSpec(strategy="uniform", budget=896, num_layers=28))
    (work / "alloc.json").write_text(json.dumps(doc))
    rows = []
    for name, fn in (("enumerate targets", lambda: targets(config, list(DEFAULT_MODULES))),
                     ("lora-config --verify", lambda: lora.lora_config(str(work / "alloc.json"),
                                                                       str(work / "config.json"), check=True))):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rows.append([name, args.repeat, statistics.median(times), max(times)])
    print(table(["step (Qwen2.5-1.5B shape)", "runs", "median s", "max s"], rows))


if __name__ == "__main__":
    main()
