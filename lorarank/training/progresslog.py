"""The live progress log of a training run, `<run>/progress.jsonl`: written while it trains, read by
`lorarank progress` (`lorarank.report.progress`) and by anyone with `tail -f`.

One JSON object per line, appended and flushed as each happens:
  {"event": "start", "step": 40, "max_steps": 60, "time": ...}    a training process began (at step 40:
                                                                  resumed from checkpoint-40)
  {"step": 41, "max_steps": 60, "time": ..., "loss": ..., "reward": ..., "rewards/correctness/mean": ...}
                                                                  what the trainer logged at that step
`time` is the writer's clock, in seconds since the epoch. A start keeps the lines of the steps up to the
checkpoint it resumes from and drops the rest (the killed process's steps after it are trained again),
so a step appears once per process that logged it; a reader merges the lines of a step, later ones winning
(the trainer's end-of-training summary shares the last step's number). Not a workflow output: the run's
record of its logs is `trainer_log.jsonl`, written whole when training ends. Standard library only.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lorarank.io import atomic_path

NAME = "progress.jsonl"


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _records(text: str) -> list[dict]:
    """The records of a log's text; a line that does not parse (the one being written as it is read, or cut
    short by a kill) is skipped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append(record)
    return out


def _dumps(record: dict) -> str:
    return json.dumps(record, default=str) + "\n"  # an odd logged value must never stop training


def start(path: Path, step: int, max_steps: int) -> None:
    """A training process begins at `step` (0, or the checkpoint it resumes from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _text(path)
    kept = "".join(_dumps(r) for r in _records(text) if r["step"] < step or (r["step"] == step and "event" not in r))
    if kept != text:  # rewritten only when something goes (so `tail -f` keeps following it otherwise)
        with atomic_path(path) as tmp:
            tmp.write_text(kept)
    _append(path, {"event": "start", "step": step, "max_steps": max_steps, "time": time.time()})


def append(path: Path, step: int, max_steps: int, logs: dict) -> None:
    """What the trainer logged at `step`."""
    _append(path, {"step": step, "max_steps": max_steps, "time": time.time(), **logs})


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:  # closed, hence flushed, at once: a reader sees each step as it is logged
        f.write(_dumps(record))


@dataclass
class Progress:
    """Where a run stands, from its progress log."""

    step: int  # the last step logged (or the step it started or resumed at)
    max_steps: int
    updated: float  # the time of the last line
    seconds_per_step: float | None  # over the last `window` steps of the latest process
    logs: dict = field(default_factory=dict)  # the last value of each logged key


def read(path: str | os.PathLike, window: int = 10) -> Progress | None:
    """The progress of the run whose log is `path`; None when there is none (not started)."""
    records = _records(_text(Path(path)))
    if not records:
        return None
    logs: dict = {}
    for r in records:
        if r.get("event") is None:
            logs.update({k: v for k, v in r.items() if k not in ("step", "max_steps", "time")})
    last = records[-1]
    # the rate of the latest process alone: the pause before a resume is not training time
    begun = max((i for i, r in enumerate(records) if r.get("event") == "start"), default=0)
    session = [r for r in records[begun:] if isinstance(r.get("time"), (int, float))]
    rate = None
    if len(session) >= 2:
        ref = next((r for r in session if r["step"] >= session[-1]["step"] - window), session[0])
        if session[-1]["step"] > ref["step"]:
            rate = (session[-1]["time"] - ref["time"]) / (session[-1]["step"] - ref["step"])
    return Progress(last["step"], last.get("max_steps") or 0, float(last.get("time") or 0), rate, logs)
