"""`lorarank progress`: where every training run of an experiment stands, while it trains.

    python -m lorarank progress results/default          # a table: one row per run
    python -m lorarank progress results/default --json   # the same rows as JSON

With several base models (`warmup.seeds`), results/<exp> lists theirs too (results/<exp>.warmup<s>).
It reads only files, so it works alike for local and Slurm jobs (from any machine that sees results/): the
warm-up (`warmup/`) and every run directory of the workflow's layout (`runs/<regime>/<strategy>/<policy>/
lr<rate>/seed<seed>`, RUN in workflow/rules/common.smk). A run is *done* once its run.json exists; *running*
while its progress log (`lorarank.training.progresslog`) grows; *stalled* when that log has not grown for
`--stalled-after` seconds (and ten steps' time): killed, preempted or waiting to be resubmitted; *not
started* before its first line (the job is loading the model, or failed before training). Per run: the
step it reached of its total, the latest value of what it optimises (GRPO: the reward; SFT and the warm-up:
the loss), seconds per step over its last ten steps, and the time left at that pace.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from lorarank.argtypes import positive_float
from lorarank.errors import UserError
from lorarank.study import read_record
from lorarank.training import progresslog
from lorarank.training.regimes import WARMUP, signal

STATES = ("done", "running", "stalled", "not started")


def experiment_dir(path: str) -> Path:
    """`path` as an experiment's results directory, or one UserError line."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{path!r} is not a directory (expected an experiment's results, results/<experiment>)")
    if not ((p / "runs").is_dir() or (p / "warmup").is_dir() or (p / "data" / "manifest.json").is_file()):
        raise UserError(f"{path!r} is not an experiment directory: it holds no runs/, warmup/ or data/manifest.json "
                        f"(expected results/<experiment>)")
    return p


def run_dirs(exp: Path) -> list[tuple[str, Path]]:
    """(name, directory) of every training run: the warm-up, then the runs by their place in `runs/`."""
    found = [(WARMUP, exp / WARMUP)] if (exp / WARMUP).is_dir() else []
    runs = exp / "runs"
    found += [(d.relative_to(runs).as_posix(), d) for d in sorted(runs.glob("*/*/*/lr*/seed*")) if d.is_dir()]
    return found


def _last(path: Path, key: str):
    """The last value of `key` in a trainer log (runs that finished before progress logs existed)."""
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    values = [r.get(key) for r in records if isinstance(r, dict)]
    return next((v for v in reversed(values) if v is not None), None)


def row(name: str, run: Path, now: float, stalled_after: float) -> dict:
    """Where one run stands (the `--json` row)."""
    kind = WARMUP if name == WARMUP else name.split("/")[0]
    key = signal(kind)
    progress = progresslog.read(run / progresslog.NAME)
    out = {"run": name, "state": "not started", "step": None, "total": None, "signal": key, "value": None,
           "seconds_per_step": None, "eta_seconds": None, "updated": None}
    if progress is not None:
        out.update(step=progress.step, total=progress.max_steps, value=progress.logs.get(key),
                   seconds_per_step=progress.seconds_per_step, updated=progress.updated)
        quiet = now - progress.updated
        out["state"] = "stalled" if quiet > max(stalled_after, 10 * (progress.seconds_per_step or 0)) else "running"
        if out["state"] == "running" and progress.seconds_per_step is not None:
            out["eta_seconds"] = max(progress.max_steps - progress.step, 0) * progress.seconds_per_step
    if (run / "run.json").is_file():
        record = read_record(run / "run.json", "run record")
        steps = record.get("steps")
        pace = None if record.get("resumed_from") or not steps else (record.get("train_seconds") or 0) / steps
        out.update(state="done", step=steps, total=(record.get("settings") or {}).get("steps", steps), eta_seconds=0,
                   seconds_per_step=out["seconds_per_step"] or pace or None)
        if out["value"] is None:
            out["value"] = _last(run / "trainer_log.jsonl", key)
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def table(rows: list[dict]) -> str:
    """The rows as an aligned text table, and a count per state."""
    head = ["run", "state", "step", "latest", "s/step", "ETA"]
    lines = [[r["run"], r["state"], "-" if r["step"] is None else f"{r['step']}/{r['total']}",
              "-" if r["value"] is None else f"{r['signal']} {r['value']:.4g}",
              "-" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.3g}",
              "-" if r["state"] == "done" else _duration(r["eta_seconds"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    text = ["  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *lines]]
    counts = ", ".join(f"{sum(r['state'] == s for r in rows)} {s}" for s in STATES if any(r["state"] == s for r in rows))
    return "\n".join(text + [f"{len(rows)} runs: {counts}"])


def other_bases(exp: Path) -> list[Path]:
    """The experiment's other base models (`warmup.seeds`: results/<exp>.warmup<s> beside results/<exp>), each a
    whole study of its own; none for a base model's directory itself."""
    if re.search(r"\.warmup\d+$", exp.name):
        return []
    pattern = re.compile(re.escape(exp.name) + r"\.warmup(\d+)")
    found = [(int(m[1]), d) for d in exp.parent.iterdir() if d.is_dir() and (m := pattern.fullmatch(d.name))]
    return [d for _, d in sorted(found)]


def progress(experiment: str, stalled_after: float = 600.0, now: float | None = None) -> list[dict]:
    """One row per training run of the experiment whose results are in `experiment`, and of its other base
    models (their rows named `<exp>.warmup<s>/<run>`)."""
    exp = experiment_dir(experiment)
    now = time.time() if now is None else now
    rows = [row(name, d, now, stalled_after) for name, d in run_dirs(exp)]
    for base in other_bases(exp):
        rows += [{**row(name, d, now, stalled_after), "run": f"{base.name}/{name}"} for name, d in run_dirs(base)]
    return rows


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="an experiment's results directory, results/<experiment>")
    p.add_argument("--json", action="store_true", help="the rows as JSON (step, total, value, seconds_per_step, ...)")
    p.add_argument("--stalled-after", type=positive_float, default=600.0, metavar="SECONDS",
                   help="a run whose progress log has not grown for this long (and for ten steps' time) is stalled")


def run(args) -> int:
    rows = progress(args.experiment, args.stalled_after)
    if args.json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print(f"{args.experiment}: no training run has started yet")
    else:
        print(table(rows))
    return 0
