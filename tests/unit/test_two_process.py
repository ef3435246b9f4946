"""Two real processes on the CPU, gloo backend: the full-weight gradient G is all-reduced and averaged as DDP
averages the LoRA gradients, and `lorarank train` runs under `accelerate launch` with two processes.

Launchers on a CPU-only host (accelerate 1.x, measured): the workflow's `accelerate launch --num_processes 2
--num_machines 1` and `accelerate launch --cpu --num_processes 2` both start ONE process (accelerate's simple
launcher: no RANK/WORLD_SIZE); `--multi_gpu` starts two (torch.distributed.run underneath), and the Trainer's
`use_cpu` then takes the gloo backend (accelerate's MULTI_CPU). `--main_process_port 0` takes a free port.

This file is also the per-process worker of the first test: `torchrun ... test_two_process.py OUT`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lorarank.study import DEFAULT_MODULES

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
MODULES = DEFAULT_MODULES  # all 7 projections
SCENARIOS = {"one micro-batch": (2, 1), "gradient accumulation x2": (1, 2)}  # -> (optimizer steps, micro-batches)
# the tiny model's parameters by (layer, module, matrix): LoRA A/B, and the base weight W (its gradient is G)
KEY = re.compile(r"layers\.(\d+)\.\w+\.(\w+_proj)\.(?:lora_(A|B)\.default|(base_layer))\.weight$")


def key(name: str) -> tuple[int, str, str] | None:
    m = KEY.search(name)
    return None if m is None else (int(m.group(1)), m.group(2), m.group(3) or "G")


def tiny_lora(w_trainable: bool = False):
    """A 2-layer Qwen2 with LoRA on all 7 projections (random B, so A has gradients too), the same weights in
    every process; with `w_trainable` the base weights get autograd's dL/dW (the independent reference)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(Qwen2ForCausalLM(cfg), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(MODULES), init_lora_weights=False))
    for name, p in model.named_parameters():
        if w_trainable and key(name) and key(name)[2] == "G":
            p.requires_grad_(True)
    model.train()
    return model


def batch(scenario: str, step: int, micro: int, rank: int) -> dict:
    """Each process's own micro-batch: ragged (a padded row the loss ignores), different on every rank."""
    g = torch.Generator().manual_seed(1000 * list(SCENARIOS).index(scenario) + 100 * step + 10 * micro + rank)
    ids = torch.randint(3, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7 + rank:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def worker(out: str) -> None:
    """One of WORLD processes: the profiler on a DDP-wrapped model, this rank's batches; its frame to `out`."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from lorarank.training.profiler import GradProfiler

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    assert dist.get_world_size() == WORLD and dist.get_backend() == "gloo"
    for scenario, (steps, micro) in SCENARIOS.items():
        model = tiny_lora()  # afresh: one DDP wrapper per model
        profiler = GradProfiler(model, list(MODULES), accumulation_steps=micro)
        ddp = DistributedDataParallel(model)
        for step in range(1, steps + 1):
            profiler.begin(step)
            for m in range(micro):  # as the Trainer accumulates: DDP syncs on the last micro-batch only
                with ddp.no_sync() if m < micro - 1 else contextlib.nullcontext():
                    (ddp(**batch(scenario, step, m, rank)).loss / micro).backward()
            profiler.record(step)
            model.zero_grad(set_to_none=True)
        profiler.frame().to_parquet(Path(out) / f"{list(SCENARIOS).index(scenario)}.rank{rank}.parquet")
    dist.destroy_process_group()


def reference(scenario: str) -> tuple[pd.Series, pd.Series]:
    """One process, no distribution: autograd's gradients of W (made trainable) and of A/B on each rank's
    batches; the norm of their average over ranks, and of rank 0's own, per (step, layer, module, matrix)."""
    steps, micro = SCENARIOS[scenario]
    model = tiny_lora(w_trainable=True)
    params = {key(n): p for n, p in model.named_parameters() if key(n)}
    mean, own = {}, {}
    for step in range(1, steps + 1):
        grads = []
        for rank in range(WORLD):
            model.zero_grad(set_to_none=True)
            for m in range(micro):
                (model(**batch(scenario, step, m, rank)).loss / micro).backward()
            grads.append({k: p.grad.detach().double().clone() for k, p in params.items()})
        for k in params:
            mean[(step, *k)] = float(torch.linalg.vector_norm(sum(g[k] for g in grads) / WORLD))
            own[(step, *k)] = float(torch.linalg.vector_norm(grads[0][k]))
    index = pd.MultiIndex.from_tuples(list(mean), names=["step", "layer", "module", "matrix"])
    return pd.Series(list(mean.values()), index), pd.Series(list(own.values()), index)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """This file's worker in WORLD gloo processes (torchrun, a free rendezvous port): their gradient frames."""
    out = tmp_path_factory.mktemp("gloo")
    # this process's environment, numerics profile included (conftest set it): the workers take the kernels
    # the reference takes here; one thread each, as two processes share two cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(WORLD), __file__, str(out)]
    from conftest import run_group  # here: this file is also torchrun's worker script, where conftest is not

    r = run_group(cmd, 300, env=env, cwd=ROOT)  # torchrun's workers go with it at the timeout
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return out


@pytest.mark.train  # two processes' forward and backward passes: the training tier, not the edit loop
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_G_and_AB_norms_are_those_of_the_gradients_averaged_over_both_processes(two_ranks, scenario):
    steps, _ = SCENARIOS[scenario]
    frames = [pd.read_parquet(two_ranks / f"{list(SCENARIOS).index(scenario)}.rank{r}.parquet") for r in range(WORLD)]
    mean, own = reference(scenario)
    assert len(mean) == steps * 2 * len(MODULES) * 3  # 2 layers, every projection's A, B and G
    # the ranks saw different batches: a norm left un-reduced (rank 0's own gradient) is far from the average
    assert ((own - mean).abs() / mean > 1e-2).groupby("matrix").mean().min() > 0.9
    for rank, df in enumerate(frames):
        got = df.set_index(["step", "layer", "module", "matrix"])["grad_norm"].astype(float)
        assert sorted(got.index) == sorted(mean.index), rank
        assert (got > 0).all()
        expected = mean.reindex(got.index)
        for matrix in ("G", "A", "B"):  # G: all-reduced by `weightgrad`; A/B: averaged by DDP, read by the profiler
            rows = got.index.get_level_values("matrix") == matrix
            np.testing.assert_allclose(got[rows], expected[rows], rtol=1e-5, err_msg=f"rank {rank}, {matrix}")
    # both processes hold the same norms (process 0 writes the log; the other's must not differ)
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=False, rtol=1e-6, atol=0)


@pytest.mark.train
def test_grpo_trains_under_accelerate_launch_with_two_cpu_processes(tiny_model, synth_data, tmp_path):
    """The real command, GRPO through TRL and accelerate's DDP on gloo. The tiny model's random weights suffice
    (no SFT warm-up): its 486-token vocabulary has `####` as one token, so some sampled completions earn the
    0.25 format reward and their groups have a non-zero advantage (measured: 1 or 2 groups of 8 without)."""
    from conftest import child_env, run_group, run_lorarank

    run_lorarank("allocate", "--strategy", "random", "--budget", 16, "--num-layers", 4, "--low", 2, "--high", 6,
                 "--seed", 1, "--out", tmp_path / "alloc.json")
    lora = tmp_path / "lora.json"
    run_lorarank("lora-config", "--allocation", tmp_path / "alloc.json", "--model", tiny_model, "--dropout", 0,
                 "--out", lora, "--verify")
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(WORLD),
              "--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"]
    train = ["-m", "lorarank", "train", "--model", tiny_model, "--lora", lora, "--data", synth_data / "train.parquet",
             "--out", out, "--steps", 2, "--prompts-per-step", 8, "--generations", 4, "--max-completion-length", 64,
             "--save-steps", 10, "--seed", 7, "--threads", 1]  # one thread per process: 2 processes, 2 cores
    # HF_HOME: no accelerate config of this machine's user (default_config.yaml) changes the launch
    env = child_env({"PYTHONHASHSEED": "0", "HF_HOME": str(tmp_path / "hf")})
    r = run_group([*launch, *map(str, train)], 600, env=env, cwd=ROOT)  # and accelerate's
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert r.stdout.count(f"2 steps -> {out}/final") == WORLD  # each process trained and says so

    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == WORLD and run["steps"] == 2
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    steps = [row for row in log if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(row["frac_reward_zero_std"] < 1 for row in steps)  # some group had a signal: G cannot be zero

    from lorarank.training import gradlog

    df = gradlog.validate(pd.read_parquet(out / "grad_norms.parquet"))
    doc = json.loads(lora.read_text())
    assert sorted(df["step"].unique()) == [1, 2] and len(df) == 2 * 3 * len(doc["modules"])
    g = df[df.matrix == "G"]["grad_norm"].to_numpy(float)
    assert len(g) == 2 * len(doc["modules"]) and np.isfinite(g).all() and (g > 0).all()
    # process 0's A/B rows are the DDP-averaged, pre-clip gradients the Trainer clips: they combine to its norm
    ab = df[df.matrix.isin(["A", "B"])]
    ours = (ab.grad_norm.astype(float) ** 2).groupby(ab.step).sum() ** 0.5
    np.testing.assert_allclose(ours.to_numpy(), [row["grad_norm"] for row in steps], rtol=1e-4)


if __name__ == "__main__":
    worker(sys.argv[1])
