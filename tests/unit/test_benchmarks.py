"""Every script in benchmarks/ runs here at a toy size, so that none can rot: a change in the package that
breaks a benchmark breaks this test, not the next person who measures. The times they print mean nothing
here; each test checks that its script exits 0 and prints its table (the columns, and rows whose numbers parse).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, child_env

BENCH = Path(ROOT) / "benchmarks"


def run(script: str, *args, tmp: Path) -> str:
    """The stdout of `python benchmarks/<script> args`, which must exit 0. Its scratch directories (tempfile)
    go under `tmp`."""
    r = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=ROOT, capture_output=True,
                       text=True, env=child_env({"TMPDIR": str(tmp)}), timeout=600)
    assert r.returncode == 0, f"{script} exited {r.returncode}:\n{r.stderr[-3000:]}"
    return r.stdout


def table(text: str, header: list[str]) -> list[dict[str, str]]:
    """The rows of the table with this header in a benchmark's output (`benchmarks/common.table`'s layout)."""
    lines = text.splitlines()
    cells = lambda line: [c.strip() for c in line.strip()[1:-1].split("|")]
    at = next((i for i, line in enumerate(lines) if line.startswith("|") and cells(line) == header), None)
    assert at is not None, f"no table with columns {header} in:\n{text}"
    assert set(lines[at + 1]) <= {"|", "-"}, lines[at + 1]
    rows = []
    for line in lines[at + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, cells(line))))
    assert rows, f"the table {header} has no rows:\n{text}"
    return rows


def num(cell: str) -> float:
    """A number the table printed, with its unit ("1.5x", "0.25%") stripped."""
    return float(cell.rstrip("x%"))


def test_stage_times_reads_snakemake_benchmark_files(tmp_path):
    """On a made-up run directory: one file per job as Snakemake's `benchmark:` writes it, and a log."""
    bench = tmp_path / "run" / "benchmarks" / "toy"
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, s, rss in (("train_grpo/uniform/ratio/seed1", 7.25, "NA"), ("a_new_rule", 0.5, "12.0"),
                        ("train_grpo/uniform/ratio/seed0", 12.75, "300.5"), ("prepare_data", 1.0, "80.0")):
        (bench / rel).parent.mkdir(parents=True, exist_ok=True)
        (bench / f"{rel}.tsv").write_text(head + f"{s}\t0:00:{s}\t{rss}\t0\t0\t0\t0\t0\t0\t{s}\n")
    log = tmp_path / "run" / ".snakemake" / "log" / "2026-01-01T000000.snakemake.log"
    log.parent.mkdir(parents=True)
    log.write_text("[Thu Jan  1 00:00:00 2026]\nrule prepare_data:\n[Thu Jan  1 00:01:30 2026]\nFinished job 0.\n")
    out = run("stage_times.py", "--experiment", "toy", "--root", tmp_path / "run", tmp=tmp_path / "bench")
    jobs = table(out, ["stage", "job", "seconds", "peak MB"])
    assert [(r["stage"], r["job"]) for r in jobs] == [  # pipeline order, an unknown rule last
        ("prepare_data", "-"), ("train_grpo", "uniform/ratio/seed0"), ("train_grpo", "uniform/ratio/seed1"),
        ("a_new_rule", "-")]
    assert [num(r["seconds"]) for r in jobs] == [1.0, 12.75, 7.25, 0.5]
    assert jobs[1]["peak MB"] == "300.500" and jobs[2]["peak MB"] == "nan"
    stages = table(out, ["stage", "jobs", "seconds"])
    assert [(r["stage"], int(r["jobs"]), num(r["seconds"])) for r in stages] == [
        ("prepare_data", 1, 1.0), ("train_grpo", 2, 20.0), ("a_new_rule", 1, 0.5), ("all jobs", 4, 21.5)]
    assert "wall time of the latest Snakemake run: 90 s (1.5 min)" in out


def test_stage_times_are_wall_seconds_not_cpu_time_and_the_latest_run(tmp_path):
    """A job's seconds are its wall time, Snakemake's `s` column, never `cpu_time` (a job on 2 threads spends about
    twice its wall time in CPU; one waiting on I/O almost none); the run's wall time is the newest log's."""
    bench = tmp_path / "run" / "benchmarks" / "toy"
    bench.mkdir(parents=True)
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (bench / "prepare_data.tsv").write_text(head + "10.5\t0:00:10\t80.0\t900.0\t70.0\t75.0\t1\t2\t190\t19.75\n")
    (bench / "run_warmup.tsv").write_text(head + "30.25\t0:00:30\t200.0\t999.0\t150.0\t160.0\t1\t2\t1\t0.5\n")
    logs = tmp_path / "run" / ".snakemake" / "log"
    logs.mkdir(parents=True)
    (logs / "2026-01-01T000000.snakemake.log").write_text("[Thu Jan  1 00:00:00 2026]\n[Thu Jan  1 01:00:00 2026]\n")
    (logs / "2026-01-02T000000.snakemake.log").write_text(
        "[Fri Jan  2 00:00:00 2026]\nrule prepare_data:\n[Fri Jan  2 00:00:41 2026]\nFinished job 0.\n")
    out = run("stage_times.py", "--experiment", "toy", "--root", tmp_path / "run", tmp=tmp_path / "bench")
    jobs = table(out, ["stage", "job", "seconds", "peak MB"])
    assert [(r["stage"], num(r["seconds"]), num(r["peak MB"])) for r in jobs] == [
        ("prepare_data", 10.5, 80.0), ("run_warmup", 30.25, 200.0)]
    stages = table(out, ["stage", "jobs", "seconds"])
    assert (stages[-1]["stage"], num(stages[-1]["seconds"])) == ("all jobs", 40.75)
    assert "wall time of the latest Snakemake run: 41 s (0.7 min)" in out


def test_lora_config_times_the_study_shape(tmp_path):
    rows = table(run("lora_config.py", "--repeat", 1, tmp=tmp_path),
                 ["step (Qwen2.5-1.5B shape)", "runs", "median s", "max s"])
    assert [r["step (Qwen2.5-1.5B shape)"] for r in rows] == ["enumerate targets", "lora-config --verify"]
    assert all(r["runs"] == "1" and 0 < num(r["median s"]) <= num(r["max s"]) for r in rows)


@pytest.mark.dag
def test_dry_run_plans_the_default_config(tmp_path):
    """One dry run of one config: a Snakemake start costs seconds, the repeats and paper.yaml add nothing new."""
    rows = table(run("dry_run.py", "--repeat", 1, "--config", "config/config.yaml", tmp=tmp_path),
                 ["config", "runs", "median s", "min s"])
    assert [(r["config"], r["runs"]) for r in rows] == [("config/config.yaml", "1")]
    assert num(rows[0]["median s"]) == num(rows[0]["min s"]) > 0


@pytest.mark.train
def test_eval_batching_gives_the_same_completions(warm_model, synth_data, tmp_path):
    out = run("eval_batching.py", "--model", warm_model / "final", "--data", synth_data / "test.parquet", "--n", 8,
              "--batch-size", 4, "--max-new-tokens", 8, tmp=tmp_path)
    rows = table(out, ["batch size", "questions", "seconds", "questions/s", "tokens/s", "speed-up"])
    assert [(r["batch size"], r["questions"]) for r in rows] == [("1", "8"), ("4", "8")]
    assert rows[0]["speed-up"] == "1.0x" and num(rows[1]["speed-up"]) > 0
    assert all(num(r["seconds"]) > 0 and num(r["tokens/s"]) > 0 for r in rows)
    assert "identical completions (batch 4 vs 1): 8/8" in out


@pytest.mark.train
def test_training_times_every_path(tiny_model, synth_data, tmp_path):
    out = run("training.py", "--model", tiny_model, "--data", synth_data / "train.parquet", "--steps", 4,
              "--prompts-per-step", 2, "--generations", 2, "--max-completion-length", 8, tmp=tmp_path)
    rows = table(out, ["path", "steps", "A/B matrices", "s/step", "A/B ms/step", "A/B share", "G ms/step",
                       "G share", "allocator ms/step"])
    assert [r["path"] for r in rows] == ["plain, G every step", "plain, G every 10th step",
                                         "deepspeed-zero2, G every step", "adalora 12 -> 8, G every step"]
    assert all(r["steps"] == "4" and r["A/B matrices"] == str(4 * 7 * 2) for r in rows)  # tiny model: 4 layers
    assert all(num(r["s/step"]) > 0 and num(r["A/B ms/step"]) > 0 and num(r["G ms/step"]) > 0 for r in rows)
    assert [num(r["allocator ms/step"]) > 0 for r in rows] == [False, False, False, True]


@pytest.mark.train
def test_numerics_compares_both_kernel_choices(tmp_path):
    rows = table(run("numerics.py", "--toy", tmp=tmp_path),
                 ["what", "portable s", "native s", "portable / native", "bits"])
    assert [r["what"] for r in rows] == ["warm-up step (SFT, full weights), default model",
                                         "GRPO step, default model", "evaluation batch of 4, default model"]
    assert all(num(r["portable s"]) > 0 and num(r["native s"]) > 0 and r["bits"] in ("same", "differ")
               for r in rows)
    assert all(r["portable / native"].endswith("x") for r in rows)
