"""Dry-run time of the workflow (goal for config/paper.yaml: <= 3 s, code fingerprints included).

    python benchmarks/dry_run.py [--repeat 3] [--config config/paper.yaml ...]

The test suite's toy run plans one config once (`--repeat 1 --config config/config.yaml`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time

from common import ROOT, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--config", action="append", help="a config to plan, relative to the repository (repeatable; "
                                                      "default: config/paper.yaml and config/config.yaml)")
    args = ap.parse_args()
    rows = []
    for cfg in args.config or ("config/paper.yaml", "config/config.yaml"):
        times = []
        with tempfile.TemporaryDirectory() as work:  # an empty results tree: every job planned
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = subprocess.run(["snakemake", "-s", f"{ROOT}/workflow/Snakefile", "--configfile", f"{ROOT}/{cfg}", "-n",
                                    "--cores", "1", "-q"], cwd=work, capture_output=True, text=True)
                times.append(time.perf_counter() - t0)
                if r.returncode:
                    raise SystemExit(f"snakemake -n on {cfg} failed:\n{(r.stdout + r.stderr)[-2000:]}")
        rows.append([cfg, args.repeat, statistics.median(times), min(times)])
    print(table(["config", "runs", "median s", "min s"], rows))


if __name__ == "__main__":
    main()
