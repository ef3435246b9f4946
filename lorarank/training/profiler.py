"""Per-layer gradient profiler: the pre-clip L2 norm of every LoRA A and B matrix at every optimizer step,
and of the full-weight gradient G of every adapted projection (`lorarank.training.weightgrad`).

One `torch._foreach_norm` over all tracked gradients and one host transfer per step, so profiling
stays cheap on the 392 matrices of the study. Rows follow the gradient-log contract
(`lorarank.training.gradlog`): matrix 'A'/'B' for LoRA runs ('A'/'E'/'B' for AdaLoRA, E its singular values)
plus 'G' (the adapted projection's full-weight gradient, rank = the module's r) on sampled steps, 'W'
(the projection's full weight, rank 0) for full-parameter runs such as the tiny model's SFT warm-up.

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

from lorarank.training.gradlog import SCHEMA
from lorarank.training.weightgrad import WeightGradients

# layers.<i>.<path>.<module>.weight, .lora_A|B.<adapter>.weight (LoRA) or .lora_A|B|E.<adapter> (AdaLoRA's
# parameter dicts); the lazy path keeps <module> the projection.
PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:\w+\.)*?(\w+)\.(?:lora_(A|B)\.\w+\.weight|lora_(A|B|E)\.\w+|weight)$")


# the adapted projection itself: layers.<i>.<path>.<module> (PEFT wraps it, keeping its name)
MODULE = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:\w+\.)*?(\w+)$")


class GradProfiler:
    """Pre-clip gradient norms of every tracked matrix, one row per optimizer step.

    LoRA models: the A and B matrices, and (every `weight_grad_every`-th step, see `lorarank.training.weightgrad`)
    the full-weight gradient G of each adapted projection. Full-parameter models: each projection's W.
    """

    def __init__(self, model: torch.nn.Module, modules: list[str], weight_grad_every: int = 1,
                 accumulation_steps: int = 1):
        lora = any("lora_A" in n for n, _ in model.named_parameters())
        self.entries = []  # (layer, module, matrix, rank, param or None for G)
        for name, p in model.named_parameters():
            m = PARAM.search(name)
            if not m or m.group(2) not in modules or not p.requires_grad:
                continue
            matrix = m.group(3) or m.group(4) or "W"
            if lora and matrix == "W":
                continue
            # AdaLoRA: A is (r, in), E (r, 1), B (out, r), r its init_r: the live rank is in the rank log
            rank = p.shape[0] if matrix in "AE" else p.shape[1] if matrix == "B" else 0
            self.entries.append((int(m.group(1)), m.group(2), matrix, int(rank), p))
        if not self.entries:
            raise ValueError(f"no trainable {modules} weights found to profile")
        self.params = [e[4] for e in self.entries]
        self.weights = None
        if lora:
            bases = []
            for name, mod in model.named_modules():
                m = MODULE.search(name)
                if m and m.group(2) in modules and hasattr(mod, "base_layer") and "default" in getattr(mod, "r", {}):
                    self.entries.append((int(m.group(1)), m.group(2), "G", int(mod.r["default"]), None))
                    bases.append(mod)
            self.weights = WeightGradients(bases, weight_grad_every, accumulation_steps)
        self.steps: list[int] = []
        self.norms: list[np.ndarray] = []  # per step, one value per entry; NaN where G was not sampled
        self.seconds = 0.0  # time spent recording A/B/W norms, for the overhead benchmark

    @property
    def weight_seconds(self) -> float:
        """Time spent forming, reducing and measuring G (inside backward and at the step)."""
        return self.weights.seconds if self.weights else 0.0

    def begin(self, step: int) -> None:
        """Called before every micro-batch of optimizer step `step` (G is taken on sampled steps only)."""
        if self.weights:
            self.weights.begin(step)

    def record(self, step: int, grads: list[torch.Tensor | None] | None = None) -> None:
        """Log the norms of `grads` (default: each tracked param's .grad) and of G as optimizer step `step`."""
        t0 = time.perf_counter()
        grads = [p.grad for p in self.params] if grads is None else grads
        present = [g.detach().float() for g in grads if g is not None]
        device = present[0].device if present else torch.device("cpu")
        norms = iter(torch._foreach_norm(present) if present else [])
        zero = torch.zeros((), dtype=torch.float32, device=device)
        values = [next(norms).to(device) if g is not None else zero for g in grads]
        if self.weights:
            g_norms = self.weights.collect()
            nan = torch.full((), float("nan"), device=device)
            values += [nan] * len(self.weights.norms) if g_norms is None else \
                [zero if g is None else g.to(device) for g in g_norms]
        # stacked where the gradients live, then one transfer to the host for the whole step
        row = torch.stack(values).cpu().numpy()
        if self.steps and self.steps[-1] == step:  # a retried step replaces its row: each step once
            self.norms[-1] = row
        else:
            self.steps.append(step)
            self.norms.append(row)
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
        return df[df["grad_norm"].notna()].reset_index(drop=True).astype(SCHEMA)  # G only where sampled

    def load(self, path: str | Path) -> None:
        """Restore rows logged before a checkpoint (resume): they must fit this model's matrices."""
        df = pd.read_parquet(path)
        index = {(e[0], e[1], e[2]): i for i, e in enumerate(self.entries)}
        for step, group in df.groupby("step", sort=True):
            row = np.full(len(self.entries), np.nan, np.float32)
            keys = list(zip(group["layer"], group["module"], group["matrix"]))
            if any(k not in index for k in keys) or len(set(keys)) != len(keys):
                raise ValueError(f"checkpoint gradient log at step {step} does not fit this model's matrices")
            row[[index[k] for k in keys]] = group["grad_norm"].to_numpy(np.float32)
            if np.isnan(row[[i for i, e in enumerate(self.entries) if e[2] != "G"]]).any():
                raise ValueError(f"checkpoint gradient log lacks rows at step {step}")
            self.steps.append(int(step))
            self.norms.append(row)

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
        self.profiler.begin(self.state.global_step + 1)
        if self.is_deepspeed_enabled:
            self._wrap_deepspeed_backward()
        return super().training_step(model, inputs, num_items_in_batch)
