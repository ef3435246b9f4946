"""The allocation strategies: one registry, read by the allocation (`lorarank allocate`), the workflow
(which arms read a gradient profile or a rank log) and the config schema's enum (tests/unit/test_registries).

Each strategy declares what it reads and weighs the units; the allocation apportions its budget by the
weights (`rounding`). A new strategy is one entry here, its name in the schema enum, and its test.

  uniform       every unit the same; a remainder is an error unless --allow-remainder, which gives one
                extra rank each to the lowest-indexed layers.
  proportional  rank proportional to the unit's gradient share in --grad-log (on --metric).
  reduced       proportional at floor(fraction x budget) (the study: 0.7 -> 627 of 896).
  inverse       rank proportional to 1 / share: a control; if gradients follow rank it flips the map.
  random        integers drawn uniformly in [low, high] with --seed, rescaled to the exact budget.
  manual        an explicit list (--ranks 8,16,... or --ranks @file.json); its budget is its sum.
  adalora       dynamic: PEFT's AdaLoRA starts every adapted matrix at --init-r and prunes singular values
                during training to a global final budget equal to this budget (one threshold over all
                matrices, `lorarank.training.adalora`). The file holds the budget as uniform targets and the AdaLoRA
                settings; the ranks themselves are decided by the training run.
  adalora-final the final ranks of an adalora run (--rank-log its ranks.parquet), per (layer, module),
                rescaled to the exact budget: a static arm that separates "the final allocation matters"
                from "the process matters".

Standard library only (the Snakefile reads the registry on a submit host); random imports numpy when it draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from lorarank.errors import UserError


def _full_budget(spec) -> int:
    return spec.budget


def _no_check(spec, num_layers: int | None) -> None:
    pass


@dataclass(frozen=True)
class Strategy:
    name: str
    # (spec, units, data) -> (weights the budget is apportioned by, what the allocation file records in
    # `params`); data: the profile's shares per unit (`profile`), the rank log's final ranks (`rank_log`), else None
    weights: Callable
    profile: bool = False  # reads a gradient profile (--grad-log; the workflow: its regime's uniform run)
    rank_log: bool = False  # reads the adalora run's rank log (--rank-log; the workflow: the same regime's)
    dynamic: bool = False  # ranks move during training (AdaLoRA): the allocation holds the targets only
    budgeted: bool = True  # apportions --budget; else the weights are the ranks and their sum the budget
    granularity: str | None = None  # the granularity it forces, whatever --granularity says
    budget: Callable = _full_budget  # spec -> the total (per-layer units) the ranks sum to
    # (spec, num_layers or None) -> None: refuses its own fields' mistakes in one line; with the layer
    # count, also those that need it (AllocationSpec.check has checked the shared fields and the budget)
    check: Callable = _no_check


def _bounds(spec) -> dict:
    return {"min_rank": spec.min_rank, "max_rank": spec.max_rank}


def _even(spec, units, data):
    return [1] * len(units), {}


def _check_uniform(spec, num_layers):
    if num_layers is None or spec.allow_remainder:
        return
    units, total = spec.unit_count(num_layers), spec.budget * spec.units_per_layer()
    if total % units:
        per, rem = total // units, total % units
        raise UserError(
            f"--budget {spec.budget} does not divide over {units} units ({per} each, remainder {rem}); "
            f"pass --allow-remainder to give the remainder to the lowest-indexed layers, or use a multiple of {units}"
        )


def _proportional(spec, units, shares):
    return shares, _bounds(spec)


def _reduced(spec, units, shares):
    return shares, {**_bounds(spec), "fraction": spec.fraction, "base_budget": spec.budget}


def _reduced_budget(spec) -> int:
    """floor(fraction x budget): never above the fraction."""
    return int(Fraction(str(spec.fraction)) * spec.budget)


def _check_reduced(spec, num_layers):
    if not 0 < spec.fraction <= 1:
        raise UserError(f"--fraction {spec.fraction} is outside (0, 1]")
    if num_layers is not None:
        spec.check_fits("reduced budget (--fraction x --budget)", _reduced_budget(spec), num_layers)


def _inverse(spec, units, shares):
    zero = [i for i, x in enumerate(shares) if x <= 0]
    if zero:
        raise UserError(f"inverse needs every share > 0, but unit {units[zero[0]]} has share 0")
    return [1 / x for x in shares], _bounds(spec)


def _random(spec, units, data):
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(spec.seed))
    draws = [int(d) for d in rng.integers(spec.low, spec.high + 1, size=len(units))]
    return draws, {**_bounds(spec), "low": spec.low, "high": spec.high, "draws": draws}


def _check_random(spec, num_layers):
    if spec.low > spec.high:
        raise UserError(f"--low {spec.low} is above --high {spec.high}")


def _manual(spec, units, data):
    return spec.manual_ranks(len({layer for layer, _ in units})), {}


def _check_manual(spec, num_layers):
    if not spec.ranks:
        raise UserError("strategy 'manual' needs --ranks (a comma list or @file.json)")
    if num_layers is not None:
        spec.manual_ranks(num_layers)


def _adalora(spec, units, data):
    # the targets: AdaLoRA's budget is global, its mean rank per matrix budget / layers
    return [1] * len(units), spec.adalora_params()


def _check_adalora(spec, num_layers):
    spec.check_adalora(spec.budget, num_layers)


def _adalora_final(spec, units, final):
    # the adalora run's final ranks, rescaled to the exact budget
    return final, {**_bounds(spec), "final_ranks": [int(w) for w in final]}


STRATEGIES = {s.name: s for s in (
    Strategy("uniform", _even, check=_check_uniform),
    Strategy("proportional", _proportional, profile=True),
    Strategy("reduced", _reduced, profile=True, budget=_reduced_budget, check=_check_reduced),
    Strategy("inverse", _inverse, profile=True),
    Strategy("random", _random, check=_check_random),
    Strategy("manual", _manual, budgeted=False, check=_check_manual),
    Strategy("adalora", _adalora, dynamic=True, check=_check_adalora),
    # AdaLoRA ranks each matrix: so does its frozen arm
    Strategy("adalora-final", _adalora_final, rank_log=True, granularity="module"),
)}
PROFILED = tuple(n for n, s in STRATEGIES.items() if s.profile)
BUDGETED = tuple(n for n, s in STRATEGIES.items() if s.budgeted)
(DYNAMIC,) = (n for n, s in STRATEGIES.items() if s.dynamic)  # AdaLoRA: the arm lora, training and analyses know
(FROZEN_DYNAMIC,) = (n for n, s in STRATEGIES.items() if s.rank_log)  # its final ranks as a static arm


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UserError(f"strategy {name!r} is unknown (allowed: {', '.join(STRATEGIES)})")
    return STRATEGIES[name]
