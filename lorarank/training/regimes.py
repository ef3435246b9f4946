"""The training regimes an arm can be trained under: the one list that the CLI, the config wiring, the
Snakefile (wildcard, train rules, archive), the analysis, the figures and the summary read.

A regime's name is its config section (`grpo:`, `sft:`), its `{regime}` wildcard value and run directory
(`runs/<name>/...`), and the `kind` its runs record in their identity. Its command trains it through the one
driver (`lorarank.training.driver`); the module of that command holds its settings dataclass and its recipe (dataset,
TRL trainer and config, reward or loss). Adding a regime: an entry here, its module, its config section in
the schema, and a test.

Standard library only, settings named as strings: the Snakefile imports this on a submit host, and the
analysis and summary must not inherit the training modules' code fingerprints (editing `train.py` must not
rerun the summary).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Regime:
    name: str  # config section, wildcard value, run directory, identity kind
    command: str  # the `lorarank` command that trains it
    module: str  # that command's module: it defines `settings` and the driver recipe `RECIPE`
    settings: str  # the name of its settings dataclass
    help: str  # the command's one-line help
    title: str  # as tables and figures name its arms
    signal: str  # what its trainer log records as the quantity it optimises (the training trend)
    # keys of its config section that feed fields of the same name in `settings`; its `lr` is not one: the
    # workflow's rate list is an axis, and each run gets its own rate (lorarank.workflow_config.rates)
    wired: tuple[str, ...]

    @property
    def rule(self) -> str:
        """The workflow's train rule of this regime (`--set-resources train_grpo:runtime=...`)."""
        return f"train_{self.name}"


REGIMES = {r.name: r for r in (
    Regime("grpo", "train", "lorarank.training.train", "GRPOSettings",
           "GRPO with a verified LoRA allocation and per-layer gradient profiling", "GRPO",
           # GRPO's total reward (format + correctness) on its sampled completions
           "reward",
           ("steps", "prompts_per_step", "generations", "max_completion_length", "beta", "loss_type",
            "temperature", "max_grad_norm", "partial_credit", "save_steps", "deepspeed", "bf16", "weight_grad_every")),
    Regime("sft", "sft", "lorarank.training.sft", "SFTSettings",
           "supervised fine-tuning (full warm-up or LoRA) with the gradient profiler", "LoRA-SFT", "loss",
           ("steps", "batch_size", "warmup_steps", "save_steps", "weight_grad_every", "bf16")),
)}

# The tiny model's full-weight SFT warm-up (`lorarank sft` without --lora): a run with a gradient log, never an arm.
WARMUP = "warmup"
# The model without an adapter, as evaluations record it.
BASE = "base"


def signal(kind: str | None) -> str:
    """The trainer-log key of what a run of this kind optimises (the warm-up: its loss)."""
    return REGIMES[kind].signal if kind in REGIMES else "loss"


def title(kind: str) -> str:
    return REGIMES[kind].title if kind in REGIMES else kind


def settings_class(name: str) -> type:
    """A regime's settings dataclass, imported from its module only when asked for."""
    r = REGIMES[name]
    return getattr(importlib.import_module(r.module), r.settings)
