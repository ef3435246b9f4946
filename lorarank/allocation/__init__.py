"""Rank allocation: turn an allocation spec into integer LoRA ranks at an exact budget.

    python -m lorarank allocate --strategy uniform --budget 896 --num-layers 28 --out allocations/uniform.json
    python -m lorarank allocate --strategy proportional --budget 896 \
        --grad-log runs/uniform/seed0/grad_norms.parquet --out allocations/proportional.json

The budget is the sum of per-layer ranks (the study: 896 = 28 x 32). The package, in the order a spec
travels through it:

  strategies        the registry: what each strategy reads and how it weighs the units
  spec              AllocationSpec (the command's flags, the config's `allocation:` keys) and its checks
  adalora_settings  AdaLoRA's settings and their checks, shared with the LoRA config, training and the workflow
  ranks             the inputs a strategy reads, integer ranks at the exact budget, the allocation document
  rounding          the one rounding rule: water-filling, then largest remainder, in exact arithmetic
"""

from __future__ import annotations

import argparse

from lorarank.allocation.ranks import build
from lorarank.allocation.spec import AllocationSpec
from lorarank.io import write_json
from lorarank.options import add_arguments, from_args

__all__ = ["AllocationSpec", "build", "configure", "run"]


def configure(p: argparse.ArgumentParser) -> None:
    add_arguments(p, AllocationSpec)
    p.add_argument("--out", required=True)


def run(args) -> int:
    doc = build(from_args(AllocationSpec, args))
    write_json(args.out, doc)
    flat = [v for r in doc["ranks"] for v in (r.values() if isinstance(r, dict) else [r])]
    print(f"{doc['strategy']}: {len(flat)} units, ranks {min(flat)}-{max(flat)}, budget {doc['budget']} -> {args.out}")
    return 0
