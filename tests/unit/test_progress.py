"""Watching a run: the live progress log (`lorarank.training.progresslog`), `lorarank progress` over an
experiment's run directories, and `--report-to` (the trackers TRL reports to) — on a real training run."""

import json
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from conftest import ROOT, child_env, write_run
from lorarank.report.progress import progress
from lorarank.training import progresslog


def _log(path, *records):
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


# --- the progress log ---------------------------------------------------------------------------------
def test_a_resume_drops_the_steps_after_its_checkpoint(tmp_path):
    path = tmp_path / progresslog.NAME
    progresslog.start(path, 0, 10)
    for step in range(1, 6):
        progresslog.append(path, step, 10, {"loss": float(step)})
    progresslog.start(path, 3, 10)  # killed after step 5, resumed from checkpoint-3
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["step"], r.get("event")) for r in lines] == [(0, "start"), (1, None), (2, None), (3, None), (3, "start")]
    assert progresslog.read(path).logs["loss"] == 3.0  # steps 4 and 5 are trained again: their old lines are gone
    path.write_text(path.read_text() + '{"step": 4, "max_steps": 10, "ti')  # killed while writing a line
    progresslog.start(path, 3, 10)
    lines = [json.loads(line) for line in path.read_text().splitlines()]  # every line whole again
    assert [(r["step"], r.get("event")) for r in lines] == [(0, "start"), (1, None), (2, None), (3, None), (3, "start")]


def test_a_steps_lines_merge_and_the_pace_is_the_latest_process(tmp_path):
    path = tmp_path / progresslog.NAME
    _log(path, {"event": "start", "step": 0, "max_steps": 10, "time": 0.0},
         *({"step": s, "max_steps": 10, "time": 10.0 * s, "loss": 1.0} for s in (1, 2, 3)),
         {"event": "start", "step": 3, "max_steps": 10, "time": 1000.0},  # resumed after a long wait in the queue
         {"step": 4, "max_steps": 10, "time": 1002.0, "loss": 0.4},
         {"step": 5, "max_steps": 10, "time": 1004.0, "loss": 0.5},
         {"step": 5, "max_steps": 10, "time": 1004.1, "train_runtime": 9.0})  # the trainer's end summary
    path.write_text(path.read_text() + '{"step": 6, "max_st')  # a line being written as it is read
    got = progresslog.read(path)
    assert (got.step, got.max_steps, got.updated) == (5, 10, 1004.1)
    assert got.logs["loss"] == 0.5 and got.logs["train_runtime"] == 9.0  # a step's lines merge, later ones win
    assert got.seconds_per_step == pytest.approx(4.1 / 2)  # since the resume: the wait is not training time


def test_a_fresh_start_empties_the_log_of_an_earlier_run(tmp_path):
    path = tmp_path / progresslog.NAME
    _log(path, {"event": "start", "step": 0, "max_steps": 4, "time": 1.0}, {"step": 1, "max_steps": 4, "time": 2.0})
    progresslog.start(path, 0, 8)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["event"] == "start" and lines[0]["max_steps"] == 8
    assert progresslog.read(tmp_path / "absent.jsonl") is None


# --- lorarank progress ----------------------------------------------------------------------------------
def _experiment(tmp_path, now):
    exp = tmp_path / "results" / "exp"
    runs = exp / "runs"
    done = runs / "grpo/uniform/ratio/lr0.001/seed0"
    write_run(done, kind="grpo", seed=0)
    record = json.loads((done / "run.json").read_text())
    (done / "run.json").write_text(json.dumps({**record, "steps": 20, "settings": {"steps": 20},
                                               "train_seconds": 40.0, "resumed_from": None}))
    _log(done / "trainer_log.jsonl", {"loss": 0.1, "reward": 0.75, "step": 20})
    live = runs / "grpo/uniform/ratio/lr0.001/seed1"
    live.mkdir(parents=True)
    _log(live / progresslog.NAME, {"event": "start", "step": 0, "max_steps": 20, "time": now - 30},
         *({"step": s, "max_steps": 20, "time": now - 30 + 3 * s, "reward": s / 10} for s in range(1, 9)))
    stalled = runs / "sft/uniform/ratio/lr0.001/seed0"
    stalled.mkdir(parents=True)
    _log(stalled / progresslog.NAME, {"event": "start", "step": 0, "max_steps": 50, "time": now - 5000},
         {"step": 1, "max_steps": 50, "time": now - 4990, "loss": 2.5})  # 10 s a step, then silence
    (runs / "sft/uniform/ratio/lr0.001/seed1").mkdir(parents=True)
    return exp


def test_every_run_of_an_experiment_is_reported_by_its_state(tmp_path, cli):
    now = time.time()
    exp = _experiment(tmp_path, now)
    rows = {r["run"]: r for r in progress(str(exp), now=now)}
    assert list(rows) == ["grpo/uniform/ratio/lr0.001/seed0", "grpo/uniform/ratio/lr0.001/seed1",
                          "sft/uniform/ratio/lr0.001/seed0", "sft/uniform/ratio/lr0.001/seed1"]
    done, live, stalled, waiting = rows.values()
    assert (done["state"], done["step"], done["total"], done["value"], done["seconds_per_step"]) == ("done", 20, 20, 0.75, 2.0)
    assert (live["state"], live["step"], live["total"], live["signal"], live["value"]) == ("running", 8, 20, "reward", 0.8)
    assert live["seconds_per_step"] == pytest.approx(3.0) and live["eta_seconds"] == pytest.approx(12 * 3.0)
    assert (stalled["state"], stalled["step"], stalled["signal"], stalled["value"]) == ("stalled", 1, "loss", 2.5)
    assert waiting["state"] == "not started" and waiting["step"] is None
    code, out, err = cli("progress", exp)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "state", "step", "latest", "s/step", "ETA"]
    assert lines[2].split() == ["grpo/uniform/ratio/lr0.001/seed1", "running", "8/20", "reward", "0.8", "3", "36s"]
    assert lines[-1] == "4 runs: 1 done, 1 running, 1 stalled, 1 not started"


def test_the_other_base_models_of_an_experiment_are_reported_too(tmp_path):
    """warmup.seeds [0, 1, 10]: results/exp, results/exp.warmup1 and exp.warmup10 are one study's three bases."""
    now = time.time()
    exp = _experiment(tmp_path, now)
    for s in (10, 1):
        (exp.parent / f"exp.warmup{s}/runs/grpo/uniform/ratio/lr0.001/seed{1000 * s}").mkdir(parents=True)
    (exp.parent / "exp.warmupx/runs/grpo/uniform/ratio/lr0.001/seed0").mkdir(parents=True)  # not a base model
    (exp.parent / "expo.warmup1/runs/grpo/uniform/ratio/lr0.001/seed0").mkdir(parents=True)  # another study's
    names = [r["run"] for r in progress(str(exp), now=now)]
    assert names[4:] == ["exp.warmup1/grpo/uniform/ratio/lr0.001/seed1000",
                         "exp.warmup10/grpo/uniform/ratio/lr0.001/seed10000"] and len(names) == 6
    # a base model's own directory lists itself alone
    assert [r["run"] for r in progress(str(exp.parent / "exp.warmup1"), now=now)] == \
        ["grpo/uniform/ratio/lr0.001/seed1000"]


def test_stalled_after_defaults_to_600_seconds(tmp_path, cli):
    """README: *stalled* is no step for `--stalled-after` seconds, default 600. Two runs at 1 s a step (ten steps'
    time, 10 s, is far below the default), one quiet for 585 s, one for 615 s: only the second is stalled, both
    by the command's default and by the function's; a larger --stalled-after makes both running."""
    now = time.time()
    exp = tmp_path / "results" / "exp"
    for seed, quiet in ((0, 585), (1, 615)):  # 15 s either side: the command reads the clock itself
        run = exp / f"runs/grpo/uniform/ratio/lr0.001/seed{seed}"
        run.mkdir(parents=True)
        last = now - quiet
        _log(run / progresslog.NAME, {"event": "start", "step": 0, "max_steps": 50, "time": last - 5},
             *({"step": s, "max_steps": 50, "time": last - 5 + s, "reward": 0.5} for s in range(1, 6)))
    want = {"grpo/uniform/ratio/lr0.001/seed0": "running", "grpo/uniform/ratio/lr0.001/seed1": "stalled"}
    assert {r["run"]: r["state"] for r in progress(str(exp), now=now)} == want
    code, out, err = cli("progress", exp, "--json")  # the command's own default, no flag
    assert code == 0, err
    assert {r["run"]: r["state"] for r in json.loads(out)} == want
    code, out, err = cli("progress", exp, "--json", "--stalled-after", "700")
    assert code == 0, err
    assert {r["state"] for r in json.loads(out)} == {"running"}


@pytest.mark.parametrize("make,expected", [
    (lambda p: p / "missing", "is not a directory"),
    (lambda p: p, "is not an experiment directory"),  # e.g. results/ itself, or a run directory
])
def test_a_path_that_is_not_an_experiment_is_refused_in_one_line(tmp_path, cli, make, expected):
    (tmp_path / "some").mkdir()
    code, out, err = cli("progress", make(tmp_path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err and repr(str(make(tmp_path))) in err
    assert "results/<experiment>" in err


# --- --report-to ----------------------------------------------------------------------------------------
def test_report_to_is_operational_and_wired_to_every_training_job():
    import yaml
    from snakemake.utils import validate

    from lorarank import workflow_config
    from lorarank.training.regimes import REGIMES

    config = yaml.safe_load(Path(ROOT, "config/config.yaml").read_text())
    validate(config, str(Path(ROOT, "workflow/schemas/config.schema.yaml")))  # fills the defaults, as the workflow does
    config["report_to"] = ["tensorboard", "wandb"]
    for rule in ["run_warmup", *(r.rule for r in REGIMES.values())]:
        assert "--report-to tensorboard,wandb" in workflow_config.flags(config, rule, operational=True), rule
        assert "--report-to" not in workflow_config.flags(config, rule), rule  # not a rerun trigger
        assert workflow_config.settings(config, rule).report_to == ["tensorboard", "wandb"]
    assert "report_to" in workflow_config.operational_keys()
    assert "report_to" not in workflow_config.result_config(config)  # nor part of the archived study


def test_the_trackers_reach_the_trl_config_under_the_runs_name(tmp_path):
    from trl import GRPOConfig

    from lorarank.training import runs

    args = runs.common_args(tmp_path, 4, 1e-3, 0, 2, 1.0, False, None, ["tensorboard"], "grpo/uniform/ratio/lr0.001/seed0")
    cfg = GRPOConfig(**args)
    assert cfg.report_to == ["tensorboard"] and cfg.run_name == "grpo/uniform/ratio/lr0.001/seed0"
    assert GRPOConfig(**runs.common_args(tmp_path, 4, 1e-3, 0, 2, 1.0, False, None)).report_to == []


@pytest.mark.parametrize("value,expected", [
    ("tensorbored", "argument --report-to: 'tensorbored' is not a tracker (allowed: tensorboard, trackio, wandb)"),
    ("missing", " is not installed here (installed: "),
])
def test_an_unknown_or_missing_tracker_is_refused_in_one_line_before_training(value, expected, tmp_path, cli):
    from lorarank.training.driver import TRACKERS

    if value == "missing":
        absent = [t for t, modules in TRACKERS.items() if not any(find_spec(m) for m in modules)]
        if not absent:
            pytest.skip("every tracker is installed here")
        value, expected = absent[0], f"--report-to {absent[0]}: {absent[0]}{expected}"
    argv = ["sft", "--model", tmp_path / "no-model", "--data", tmp_path / "no-data.parquet", "--out", tmp_path / "out",
            "--report-to", value]
    code, _, err = cli(*argv)  # past parsing the command applies its numerics profile: `cli` restores ours
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()


# --- a real run, watched while it trains ------------------------------------------------------------------
def _rows(cli, exp):
    code, out, err = cli("progress", exp, "--json")
    assert code == 0, err
    return {r["run"]: r for r in json.loads(out)}


@pytest.mark.train
def test_a_live_run_is_reported_while_it_trains_and_done_when_it_ends(tiny_model, synth_data, tmp_path, cli):
    exp = tmp_path / "results" / "exp"
    run = exp / "warmup"
    steps = 60  # ~0.08 s a step here: a window of seconds to see it mid-run, polled every 0.05 s
    proc = subprocess.Popen(
        [sys.executable, "-m", "lorarank", "sft", "--model", str(tiny_model), "--data", str(synth_data / "train.parquet"),
         "--steps", str(steps), "--batch-size", "4", "--max-length", "96", "--save-steps", "1000",
         "--report-to", "tensorboard", "--out", str(run)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env({"PYTHONHASHSEED": "0"}))
    seen = None
    deadline = time.time() + 600
    try:
        while proc.poll() is None and time.time() < deadline:
            row = _rows(cli, exp).get("warmup", {}) if run.is_dir() else {}
            if row.get("state") == "running" and 0 < (row.get("step") or 0) < steps:
                seen = row
                break
            time.sleep(0.05)
        alive = proc.poll() is None
        code, out, _ = cli("progress", exp)  # the table, while it trains
    finally:
        _, err = proc.communicate(timeout=600)
    assert seen is not None and alive, f"never saw the run mid-training (exit {proc.returncode}): {err[-2000:]}"
    assert proc.returncode == 0, err[-2000:]
    assert seen["total"] == steps and seen["signal"] == "loss" and seen["value"] > 0 and seen["eta_seconds"] is not None
    assert code == 0 and out.splitlines()[1].split()[:2] == ["warmup", "running"]
    done = _rows(cli, exp)["warmup"]
    assert (done["state"], done["step"], done["total"], done["eta_seconds"]) == ("done", steps, steps, 0)
    # a finished run keeps its results alone: the live log goes, its steps are in trainer_log.jsonl
    assert not (run / progresslog.NAME).exists() and (run / "run.json").is_file()
    last = [json.loads(line) for line in (run / "trainer_log.jsonl").read_text().splitlines()]
    assert done["value"] == [r["loss"] for r in last if "loss" in r][-1] > 0
    # --report-to tensorboard: TRL's TensorBoard writer got every step, in the run directory, under the run's name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, steps + 1))
    args_text = b"".join(v for e in events.Tensors("args/text_summary") for v in e.tensor_proto.string_val)
    assert b'"run_name": "warmup/seed0"' in args_text and b'"report_to": [\n    "tensorboard"' in args_text
