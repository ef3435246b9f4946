"""`lorarank allocate`: an allocation spec to integer per-layer ranks at an exact budget (the package: `lorarank.allocation`)."""

from __future__ import annotations

import argparse

from lorarank.allocation.ranks import build
from lorarank.allocation.spec import AllocationSpec
from lorarank.io import write_json
from lorarank.options import add_arguments, from_args


def configure(p: argparse.ArgumentParser) -> None:
    add_arguments(p, AllocationSpec)
    p.add_argument("--out", required=True)


def run(args) -> int:
    doc = build(from_args(AllocationSpec, args))
    write_json(args.out, doc)
    flat = [v for r in doc["ranks"] for v in (r.values() if isinstance(r, dict) else [r])]
    print(f"{doc['strategy']}: {len(flat)} units, ranks {min(flat)}-{max(flat)}, budget {doc['budget']} -> {args.out}")
    return 0
