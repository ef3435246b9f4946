"""The gradient metrics: one table of what each reads from a gradient log (`lorarank.training.gradlog`) and how
figures, prose and the workflow name it. A new metric is one entry here (and its test).

Three metrics:
  lora             the study's: the A/B (and E) norms as logged. They carry a factor ~ s sqrt(r) (s the
                   LoRA scaling) whatever the loss wants: sqrt(r) under alpha = k r, 1/sqrt(r) under a
                   constant alpha, flat under rsLoRA.
  lora_normalised  each A/B/E norm divided by that mechanical factor s sqrt(r) (needs the alpha policy).
  weight           the norm of G (or W): rank-neutral, what the loss asks of the weights themselves.

Standard library only: the Snakefile reads the table (`HEATMAPS`, `heatmap_file`) on a submit host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


def mechanical_factor(alpha_policy: dict, rank: int) -> float:
    """s sqrt(r): what a LoRA gradient norm grows with at rank r under the alpha policy, whatever the loss."""
    from lorarank.study import AlphaPolicy

    return AlphaPolicy.from_json(alpha_policy).scaling(rank) * math.sqrt(rank)


@dataclass(frozen=True)
class Metric:
    name: str
    matrices: tuple[str, ...]  # the gradient log's matrix values it reads
    lacks: str  # what a log without those rows lacks, for the refusal
    title: str  # figure panel title
    gloss: str  # gradient_stats.json's definition, in brackets after the name
    words: str  # results.md's definition, after "`name` = "
    heatmap: bool = False  # a heatmap per arm (the workflow lists them as outputs)
    allocates: bool = False  # the profiled strategies may allocate from it (config allocation.metric)
    # divides each norm, from the run's alpha policy and the matrix's rank; None: norms as logged
    normaliser: Callable[[dict, int], float] | None = None


METRICS = {m.name: m for m in (
    Metric(name="lora", matrices=("A", "B", "E"), lacks="'A'/'B' rows", title="lora: A/B norms (the study's)",
           gloss="A/B norms, the study's",
           words="the study's A/B gradient norms, which carry a factor s·√r whatever the loss wants (√r under "
                 "α = k·r, 1/√r under a constant α, flat under rsLoRA)",
           heatmap=True, allocates=True),
    Metric(name="lora_normalised", matrices=("A", "B", "E"), lacks="'A'/'B' rows",
           title="lora_normalised: / (s sqrt(r))", gloss="each A/B norm / (s sqrt(r))", words="each norm ÷ s·√r",
           normaliser=mechanical_factor),
    Metric(name="weight", matrices=("G", "W"), lacks="'G' rows (a LoRA run profiled with --weight-grad-every)",
           title="weight: full-weight gradient (rank-neutral)",
           gloss="norm of the full-weight gradient G, rank-neutral",
           words="the norm of the full-weight gradient ∂L/∂W of each adapted projection, rank-neutral",
           heatmap=True, allocates=True),
)}
HEATMAPS = tuple(m.name for m in METRICS.values() if m.heatmap)
ALLOCATES = tuple(m.name for m in METRICS.values() if m.allocates)


def readable(matrices) -> list[str]:
    """The metrics a log with these matrix values can give (a full-weight run's 'W' rows: only weight)."""
    have = set(matrices)
    return [m.name for m in METRICS.values() if have & set(m.matrices)]


def heatmap_file(metric: str, arm: str) -> str:
    """The heatmap's file name, for the analysis that draws it and the workflow that expects it; `arm` as
    `study.Arm.name` writes it (grpo/proportional/ratio, warmup)."""
    return f"heatmap_{metric}_{arm.replace('/', '-')}.png"
