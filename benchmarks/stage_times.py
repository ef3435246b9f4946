"""The stage times of a finished workflow run, from the files Snakemake's `benchmark:` directives write.

    python benchmarks/stage_times.py                 # the default experiment, in this checkout
    python benchmarks/stage_times.py --experiment mini --root /path/to/a/run

Prints one row per job (stage, job, seconds, peak memory), one per stage (jobs, sum of seconds), and the
wall time of the latest Snakemake run from its log, so the default run's time budget can be watched:
the jobs' seconds add up to more than the wall time when two jobs share the cores.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, table  # noqa: E402

from lorarank.training.regimes import REGIMES  # noqa: E402

# the order the stages run in; a rule not listed sorts last
STAGES = ["prepare_data", "fetch_model", "import_model", "build_model", "run_warmup", "evaluate_base",
          "allocate_ranks", "write_lora_config", *(r.rule for r in REGIMES.values()), "evaluate_model",
          "analyze_gradients", "summarize_results", "archive_results"]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]")


def jobs(bench: Path) -> list[tuple[str, str, float, float]]:
    """(stage, job, seconds, peak RSS in MB) for every benchmark file under benchmarks/{experiment}/."""
    out = []
    for f in sorted(bench.rglob("*.tsv")):
        rel = f.relative_to(bench).with_suffix("")
        stage, job = rel.parts[0], "/".join(rel.parts[1:]) or "-"
        with f.open() as fh:
            row = list(csv.DictReader(fh, delimiter="\t"))[-1]
        rss = float(row["max_rss"]) if row.get("max_rss") not in (None, "", "NA", "-") else float("nan")
        out.append((stage, job, float(row["s"]), rss))
    rank = {s: i for i, s in enumerate(STAGES)}
    return sorted(out, key=lambda r: (rank.get(r[0], len(STAGES)), r[1]))


def wall_seconds(root: Path) -> float | None:
    """First to last timestamp of the newest Snakemake log (None if there is none)."""
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    stamps = [datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
              for line in logs[-1].read_text().splitlines() if (m := STAMP.match(line))]
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="default")
    p.add_argument("--root", type=Path, default=ROOT, help="the run's working directory (default: this checkout)")
    a = p.parse_args(argv)
    bench = a.root / "benchmarks" / a.experiment
    rows = jobs(bench)
    if not rows:
        print(f"no benchmark files under {bench}: run the workflow first (make run)", file=sys.stderr)
        return 2
    print(table(["stage", "job", "seconds", "peak MB"], [list(r) for r in rows]))
    print()
    totals: dict[str, list[float]] = {}
    for stage, _, s, _ in rows:
        totals.setdefault(stage, []).append(s)
    stage_rows = [[stage, len(t), sum(t)] for stage, t in totals.items()]
    stage_rows.append(["all jobs", len(rows), sum(r[2] for r in rows)])
    print(table(["stage", "jobs", "seconds"], stage_rows))
    wall = wall_seconds(a.root)
    if wall is not None:
        print(f"\nwall time of the latest Snakemake run: {wall:.0f} s ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
