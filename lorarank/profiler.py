"""Per-layer gradient profiler: the pre-clip L2 norm of every LoRA A and B matrix at every optimizer step.

One `torch._foreach_norm` over all tracked gradients and one host transfer per step, so profiling
stays cheap on the 392 matrices of the study. Rows follow the gradient-log contract
(`lorarank.gradlog`): matrix 'A'/'B' for LoRA runs, 'W' (the projection's full weight, rank 0)
for full-parameter runs such as the tiny model's SFT warm-up.

Where the norms are read, so that they are pre-clip on both paths:
  plain    `ProfiledTrainerMixin` reads `param.grad` in the Trainer's clip step, before clipping
           (the `on_pre_optimizer_step` callback would see clipped gradients);
  DeepSpeed the engine's backward and step run inside accelerate's `DeepSpeedEngineWrapper.backward`,
           where no callback sees gradients: the wrapper is replaced by one that reads
           `deepspeed.utils.safe_get_full_grad` between the engine's backward and its step.
Step-1 A gradients are exactly 0 (B starts at zero) and are logged as 0.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lorarank.gradlog import SCHEMA

# layers.<i>.<path>.<module>[.lora_A|B.<adapter>].weight; the lazy path keeps <module> the projection.
PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:\w+\.)*?(\w+)\.(?:lora_(A|B)\.\w+\.)?weight$")


class GradProfiler:
    def __init__(self, model: torch.nn.Module, modules: list[str]):
        lora = any("lora_A" in n for n, _ in model.named_parameters())
        self.entries = []  # (layer, module, matrix, rank, param)
        for name, p in model.named_parameters():
            m = PARAM.search(name)
            if not m or m.group(2) not in modules or not p.requires_grad:
                continue
            matrix = m.group(3) or "W"
            if lora and matrix == "W":
                continue
            rank = p.shape[0] if matrix == "A" else p.shape[1] if matrix == "B" else 0
            self.entries.append((int(m.group(1)), m.group(2), matrix, int(rank), p))
        if not self.entries:
            raise ValueError(f"no trainable {modules} weights found to profile")
        self.params = [e[4] for e in self.entries]
        self.steps: list[int] = []
        self.norms: list[np.ndarray] = []
        self.seconds = 0.0  # time spent recording, for the overhead benchmark

    def record(self, step: int, grads: list[torch.Tensor | None] | None = None) -> None:
        """Log the norms of `grads` (default: each tracked param's .grad) as optimizer step `step`."""
        t0 = time.perf_counter()
        grads = [p.grad for p in self.params] if grads is None else grads
        present = [g.detach().float() for g in grads if g is not None]
        device = present[0].device if present else torch.device("cpu")
        norms = iter(torch._foreach_norm(present) if present else [])
        zero = torch.zeros((), dtype=torch.float32, device=device)
        # stacked where the gradients live, then one transfer to the host for the whole step
        row = torch.stack([next(norms).to(device) if g is not None else zero for g in grads]).cpu()
        if self.steps and self.steps[-1] == step:  # a retried step replaces its row: each step once
            self.norms[-1] = row.numpy()
        else:
            self.steps.append(step)
            self.norms.append(row.numpy())
        self.seconds += time.perf_counter() - t0

    def frame(self) -> pd.DataFrame:
        n = len(self.entries)
        k = len(self.steps)
        layer, module, matrix, rank = (np.array([e[i] for e in self.entries]) for i in range(4))
        df = pd.DataFrame({
            "step": np.repeat(np.array(self.steps, dtype=np.int32), n),
            "layer": np.tile(layer, k), "module": np.tile(module, k), "matrix": np.tile(matrix, k),
            "rank": np.tile(rank, k),
            "grad_norm": np.concatenate(self.norms) if self.norms else np.zeros(0, np.float32),
        })
        return df.astype(SCHEMA)

    def load(self, path: str | Path) -> None:
        """Restore rows logged before a checkpoint (resume): they must fit this model's matrices."""
        df = pd.read_parquet(path)
        n = len(self.entries)
        for step, group in df.groupby("step", sort=True):
            if len(group) != n:
                raise ValueError(f"checkpoint gradient log has {len(group)} rows at step {step}, expected {n}")
            self.steps.append(int(step))
            self.norms.append(group["grad_norm"].to_numpy(np.float32))

    def truncate(self, last_step: int) -> None:
        keep = [i for i, s in enumerate(self.steps) if s <= last_step]
        self.steps = [self.steps[i] for i in keep]
        self.norms = [self.norms[i] for i in keep]


class ProfiledTrainerMixin:
    """Mix into a transformers/TRL Trainer (`profiler=` at construction): records pre-clip norms each
    optimizer step."""

    def __init__(self, *args, profiler: GradProfiler, **kwargs):
        self.profiler = profiler
        super().__init__(*args, **kwargs)

    def _clip_grad_norm(self, model):  # called before clipping when max_grad_norm > 0
        if not self.is_deepspeed_enabled:  # under DeepSpeed this runs after the engine's step
            self.profiler.record(self.state.global_step + 1)
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model, grad_norm=None):  # called without clipping otherwise
        if grad_norm is None and not self.is_deepspeed_enabled:
            self.profiler.record(self.state.global_step + 1)
        return super()._get_grad_norm(model, grad_norm)

    def _wrap_deepspeed_backward(self) -> None:
        """Read full gradients between DeepSpeed's backward and its step (clip + update)."""
        wrapper = getattr(self.accelerator, "deepspeed_engine_wrapped", None)
        if wrapper is None or getattr(wrapper, "_lorarank_profiled", False):
            return
        from deepspeed.utils import safe_get_full_grad

        engine, profiler, trainer = wrapper.engine, self.profiler, self

        def backward(loss, sync_gradients=True, **kwargs):
            engine.set_gradient_accumulation_boundary(is_boundary=sync_gradients)
            engine.backward(loss, **kwargs)
            if sync_gradients:
                t0 = time.perf_counter()  # gathering the partitioned gradients is profiling cost too
                grads = [safe_get_full_grad(p) for p in profiler.params]
                profiler.seconds += time.perf_counter() - t0
                profiler.record(trainer.state.global_step + 1, grads)
                engine.step()

        wrapper.backward = backward
        wrapper._lorarank_profiled = True

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.is_deepspeed_enabled:
            self._wrap_deepspeed_backward()
        return super().training_step(model, inputs, num_items_in_batch)
