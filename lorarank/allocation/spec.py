"""The allocation spec: the flags of `lorarank allocate`, the `allocation:` keys of the config, and the
cross-field checks both run (the command before reading any file, the workflow before planning any job).

With --granularity module every (layer, projection) pair is its own unit: the total over all modules is
budget x len(modules) (so uniform means the same at both granularities) and shares are per (layer, module).
Standard library only: the workflow's config check builds it on a submit host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorarank.allocation.adalora_settings import AdaLoraSettings
from lorarank.allocation.strategies import BUDGETED, FROZEN_DYNAMIC, PROFILED, STRATEGIES, get
from lorarank.argtypes import csv_list, positive_float, positive_int
from lorarank.errors import UserError
from lorarank.io import read_json
from lorarank.options import opt
from lorarank.study import ALPHA_POLICIES, DEFAULT_MODULES
from lorarank.training.gradmetrics import ALLOCATES

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class AllocationSpec(AdaLoraSettings):
    """An allocation spec. The adalora strategy's settings are AdaLoRA's (`AdaLoraSettings`): flags of the
    same command, read for that strategy only. A manual allocation's budget is its sum."""

    strategy: str = opt(None, "allocation strategy", choices=tuple(STRATEGIES), required=True)
    budget: int | None = opt(None, "sum of per-layer ranks (study: 896)", type=positive_int, when={"strategy": BUDGETED})
    num_layers: int | None = opt(None, "layer count (or give --model, or the gradient log's)", type=positive_int)
    model: str | None = opt(None, "hub id, model directory or config.json (gives the layer count)")
    granularity: str = opt("layer", "one rank per layer, or per (layer, projection)", choices=("layer", "module"))
    target_modules: list[str] = opt(list(DEFAULT_MODULES), "projections that get LoRA adapters", type=csv_list)
    grad_log: str | None = opt(None, f"grad_norms.parquet for {', '.join(PROFILED)}")
    metric: str = opt("lora", "the profile's gradient metric (lorarank.training.gradmetrics): lora (the study's A/B norms) or "
                      "weight (the rank-neutral full-weight gradient, as GoRA-style allocation uses)", choices=ALLOCATES,
                      when={"strategy": PROFILED})
    fraction: float = opt(0.7, "reduced: share of the budget (0, 1]", when={"strategy": ("reduced",)})
    min_rank: int = opt(1, "smallest rank any unit may get", type=positive_int, when={"strategy": BUDGETED})
    max_rank: int | None = opt(None, "largest rank any unit may get", type=positive_int, when={"strategy": BUDGETED})
    low: int = opt(16, "random: lowest draw", type=positive_int, when={"strategy": ("random",)})
    high: int = opt(48, "random: highest draw", type=positive_int, when={"strategy": ("random",)})
    seed: int = opt(0, "random: seed of the draw", when={"strategy": ("random",)})
    ranks: str | None = opt(None, "manual: comma list, or @file.json (a list; per-module dicts allowed)",
                            when={"strategy": ("manual",)})
    rank_log: str | None = opt(None, f"{FROZEN_DYNAMIC}: ranks.parquet of the adalora run whose final ranks this "
                               "static arm takes", when={"strategy": (FROZEN_DYNAMIC,)})
    allow_remainder: bool = opt(False, "uniform: give a remainder to the lowest-indexed layers")
    alpha_policy: str = opt("ratio", "ratio: alpha = k*r (scaling constant); constant: one alpha; rslora: alpha/sqrt(r)",
                            choices=tuple(ALPHA_POLICIES))
    alpha: float | None = opt(None, "the policy's value: k for ratio (default 2), alpha for constant/rslora (default "
                              "2 x budget/layers)", type=positive_float)

    def units_per_layer(self) -> int:
        return len(self.target_modules) if self.granularity == "module" else 1

    def unit_count(self, num_layers: int) -> int:
        return num_layers * self.units_per_layer()

    def check(self, num_layers: int | None = None) -> None:
        """Refuse cross-field mistakes in one line; with `num_layers`, those that need the layer count too."""
        for m in self.target_modules:
            if not MODULE_NAME.match(m):
                raise UserError(f"module name {m!r} is not a plain module name (e.g. q_proj)")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise UserError(f"--target-modules lists a module twice: {self.target_modules}")
        if self.max_rank is not None and self.max_rank < self.min_rank:
            raise UserError(f"--max-rank {self.max_rank} is below --min-rank {self.min_rank}")
        strategy = get(self.strategy)
        if strategy.budgeted:
            if self.budget is None:
                raise UserError(f"--budget is required for strategy {self.strategy!r}")
            if num_layers is not None:
                self.check_fits("--budget", self.budget, num_layers)
        strategy.check(self, num_layers)

    def check_fits(self, what: str, budget: int, num_layers: int) -> None:
        """`budget` (per-layer units) fits num_layers units between --min-rank and --max-rank."""
        n_mod, units = self.units_per_layer(), self.unit_count(num_layers)
        if budget * n_mod < units * self.min_rank:
            raise UserError(f"{what} {budget} is below {num_layers} layers x --min-rank {self.min_rank}")
        if self.max_rank is not None and budget * n_mod > units * self.max_rank:
            raise UserError(f"{what} {budget} is above {num_layers} layers x --max-rank {self.max_rank}")

    def manual_ranks(self, num_layers: int) -> list[int]:
        """The manual ranks, one per unit, each a positive integer; one entry per layer."""
        text, modules = self.ranks, self.target_modules
        raw = read_json(text[1:], "ranks file") if text.startswith("@") else [t.strip() for t in text.split(",")]
        if not isinstance(raw, list):
            raise UserError("--ranks must be a comma list or @file.json holding a JSON list")
        if len(raw) != num_layers:
            raise UserError(f"--ranks has {len(raw)} entries but the model has {num_layers} layers (one entry per layer)")
        flat: list = []
        for entry in raw:
            if isinstance(entry, dict):
                if self.granularity != "module" or sorted(entry) != sorted(modules):
                    raise UserError(f"per-module rank entry {entry} needs --granularity module and exactly modules {modules}")
                flat.extend(entry[m] for m in modules)
            else:
                flat.extend([entry] * self.units_per_layer())
        out = []
        for pos, value in enumerate(flat):
            try:
                ok = float(value) == int(float(value)) and int(float(value)) > 0 and not isinstance(value, bool)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise UserError(f"rank {value!r} at position {pos} is not a positive integer")
            out.append(int(float(value)))
        total, n_mod = sum(out), self.units_per_layer()
        if total % n_mod:
            raise UserError(f"manual module ranks sum to {total}, not a multiple of {n_mod} modules")
        if self.budget is not None and self.budget * n_mod != total:
            raise UserError(f"manual ranks sum to {total // n_mod} per-layer units but --budget is {self.budget}")
        return out
