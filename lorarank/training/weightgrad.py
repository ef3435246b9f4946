"""The full-weight gradient G = dL/dW of every LoRA-adapted projection, without unfreezing W.

For a LoRA projection y = W x + s B A drop(x), the gradient the frozen W would get is
G = sum over tokens t of delta_t x_t^T, with delta_t = dL/dy_t and x_t the projection's input (before
LoRA dropout: W sees the undropped input). The A/B gradients are s G A^T and s B^T G, so their norms
carry a factor ~ s sqrt(r) whatever the loss wants; ||G|| does not depend on the adapter at all. That
makes it the rank-neutral measure of how much a layer's weights are asked to change (docs/design.md, "The
instrument's blind spot").

How it is measured: a forward hook on each adapted projection (the LoRA wrapper: its output needs a
gradient even where W, its input and everything before are frozen, as at layer 0) keeps its input x
and registers a hook on its output y; when backward delivers delta = dL/dy, G is formed (float32) and
  - with one micro-batch per optimizer step (our trainers), its norm is taken at once and G freed:
    never more than one projection's G is alive;
  - with gradient accumulation, G is summed over the micro-batches per projection (the memory of a
    full-weight gradient of the adapted projections) and its norm taken at the optimizer step.
Positions the loss ignores (padding, prompt tokens not attended by any scored token) have delta = 0
exactly, so they add exact zeros: G is the gradient autograd would give W, padding excluded as the
loss excludes it (tested against autograd with W made trainable). With several processes G is
all-reduced and averaged, as data parallelism averages the LoRA gradients (exact, no sketch: one
projection's G at a time, so the cost is one extra all-reduce of the adapted weights per profiled
step; `every` thins it out). Norms are pre-clip by construction: clipping never touches G.
"""

from __future__ import annotations

import time

import torch


def _reduce(g: torch.Tensor) -> torch.Tensor:
    """Average over data-parallel processes, as the LoRA gradients are."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            torch.distributed.all_reduce(g)
            g /= world
    return g


class WeightGradients:
    """Norms of dL/dW for `layers` (LoRA-wrapped projections, called as layer(x, ...)), every `every`-th step."""

    def __init__(self, layers: list[torch.nn.Module], every: int = 1, accumulation_steps: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every = every
        self.accumulate = accumulation_steps > 1
        self.active = False
        self.norms: list[torch.Tensor | None] = [None] * len(layers)
        self.sums: list[torch.Tensor | None] = [None] * len(layers)
        self.seconds = 0.0
        self.handles = [layer.register_forward_hook(self._forward(i)) for i, layer in enumerate(layers)]

    def sampled(self, step: int) -> bool:
        """Steps 1, 1 + every, 1 + 2 every, ...: the first step always (it has the only G before B moves)."""
        return (step - 1) % self.every == 0

    def begin(self, step: int) -> None:
        """Called before each micro-batch of optimizer step `step`."""
        self.active = self.sampled(step)

    def _forward(self, i: int):
        def hook(module, args, output):
            if not (self.active and torch.is_grad_enabled() and output.requires_grad):
                return  # generation, reference log-probs, evaluation: nothing to profile
            x = args[0].detach()
            output.register_hook(lambda delta: self._backward(i, x, delta))
        return hook

    def _backward(self, i: int, x: torch.Tensor, delta: torch.Tensor) -> None:
        t0 = time.perf_counter()
        g = delta.reshape(-1, delta.shape[-1]).float().T @ x.reshape(-1, x.shape[-1]).float()
        if self.accumulate:
            self.sums[i] = g if self.sums[i] is None else self.sums[i].add_(g)
        else:
            if self.norms[i] is not None:
                raise RuntimeError("a second backward pass within one optimizer step: construct the profiler "
                                   "with the trainer's gradient_accumulation_steps")
            self.norms[i] = torch.linalg.vector_norm(_reduce(g))
        self.seconds += time.perf_counter() - t0

    def collect(self) -> list[torch.Tensor | None] | None:
        """The step's norms (None for a projection that saw no gradient), or None on an unsampled step;
        resets for the next step."""
        if not self.active:
            return None
        t0 = time.perf_counter()
        if self.accumulate:
            for i, g in enumerate(self.sums):
                self.norms[i] = None if g is None else torch.linalg.vector_norm(_reduce(g))
                self.sums[i] = None  # freed before the next projection's is reduced
        out, self.norms = self.norms, [None] * len(self.norms)
        self.seconds += time.perf_counter() - t0
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
