"""Rank allocation: turn an allocation spec into integer LoRA ranks at an exact budget.

    python -m lorarank allocate --strategy uniform --budget 896 --num-layers 28 --out allocations/uniform.json
    python -m lorarank allocate --strategy proportional --budget 896 \
        --grad-log runs/uniform/seed0/grad_norms.parquet --out allocations/proportional.json

The budget is the sum of per-layer ranks (the study: 896 = 28 x 32). Strategies:
  uniform       every layer budget / layers; a remainder is an error unless --allow-remainder,
                which gives one extra rank each to the lowest-indexed layers.
  proportional  rank proportional to the layer's gradient share in --grad-log.
  reduced       proportional at floor(fraction x budget) (the study: 0.7 -> 627 of 896).
  inverse       rank proportional to 1 / share: a control; if gradients follow rank it flips the map.
  random        integers drawn uniformly in [low, high] with --seed, rescaled to the exact budget.
  manual        an explicit list (--ranks 8,16,... or --ranks @file.json).
  adalora       dynamic: PEFT's AdaLoRA starts every adapted matrix at --init-r and prunes singular
                values during training to a global final budget equal to this budget (one threshold
                over all matrices, `lorarank.adalora`). The file holds the budget as uniform targets
                and the AdaLoRA settings; the ranks themselves are decided by the training run.
  adalora-final the final ranks of an adalora run (--rank-log its ranks.parquet), per (layer,
                module), rescaled to the exact budget by the rounding below: a static arm that
                separates "the final allocation matters" from "the process matters".
With --granularity module every (layer, projection) pair is its own unit: the total over all
modules is budget x len(modules) (so uniform means the same at both granularities) and shares
are per (layer, module).

Rounding (one rule for every strategy): real-valued ranks are rank_i = clamp(lambda * w_i,
min_rank, max_rank) with lambda chosen so they sum to the budget (water-filling: clamped units
give their excess to the rest in proportion to weight); then largest remainder: floor all, hand
the missing units one each to the largest fractional parts, ties to the lower index. Exact
rational arithmetic, so the result does not depend on float summation order.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from lorarank import __version__
from lorarank.argtypes import csv_list, positive_float, positive_int
from lorarank.errors import UserError
from lorarank.io import read_json, sha256_file, write_json
from lorarank.options import add_arguments, from_args, opt
from lorarank.study import ALPHA_POLICIES, DEFAULT_MODULES, DYNAMIC, FROZEN_DYNAMIC, PROFILE_STRATEGIES, STRATEGIES

ADALORA = {"strategy": (DYNAMIC,)}
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BUDGETED = tuple(s for s in STRATEGIES if s != "manual")  # a manual allocation's budget is its sum


# ---------------------------------------------------------------- rounding
def water_fill(weights: list[Fraction], total: int, lo: int, hi: int | None) -> list[Fraction]:
    """Real ranks clamp(lambda * w, lo, hi) summing exactly to `total` (lambda found exactly)."""
    n = len(weights)
    if total < n * lo or (hi is not None and total > n * hi):
        raise UserError(f"budget {total} cannot be split over {n} units with ranks in [{lo}, {hi or 'inf'}]")
    if all(w == 0 for w in weights):
        weights = [Fraction(1)] * n

    def clamped(lam: Fraction) -> list[Fraction]:
        out = []
        for w in weights:
            x = max(lam * w, Fraction(lo))
            out.append(x if hi is None else min(x, Fraction(hi)))
        return out

    # sum(clamped(lam)) is piecewise linear and non-decreasing in lam, with kinks where a unit
    # enters or leaves its bounds; find the segment that reaches `total` and solve it exactly.
    kinks = sorted({Fraction(b) / w for w in weights if w > 0 for b in ((lo, hi) if hi is not None else (lo,))})
    left = Fraction(0)
    for right in kinks + [None]:
        if right is not None and sum(clamped(right)) < total:
            left = right
            continue
        probe = left + 1 if right is None else (left + right) / 2
        free = sum(w for w, x in zip(weights, clamped(probe)) if x != lo and (hi is None or x != hi))
        if free == 0:  # flat segment: the total is reached at its left end already
            return clamped(left)
        lam = left + (total - sum(clamped(left))) / free
        return clamped(lam)
    raise AssertionError("unreachable: feasibility was checked above")


def largest_remainder(values: list[Fraction], total: int) -> list[int]:
    """Floor every value, then give the missing units to the largest remainders (ties: lower index)."""
    floors = [math.floor(v) for v in values]
    missing = total - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-(values[i] - floors[i]), i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def apportion(weights, total: int, lo: int = 1, hi: int | None = None) -> list[int]:
    """Integer ranks proportional to `weights`, each in [lo, hi], summing exactly to `total`."""
    fr = [Fraction(w) for w in weights]  # exact, also for floats: no summation-order effects
    if any(w < 0 for w in fr):
        raise UserError("weights must be >= 0")
    return largest_remainder(water_fill(fr, total, lo, hi), total)


# ---------------------------------------------------------------- the spec
@dataclass
class AllocationSpec:
    """An allocation spec: the flags of `lorarank allocate`, the `allocation:` keys of the config."""

    strategy: str = opt(None, "allocation strategy", choices=STRATEGIES, required=True)
    budget: int | None = opt(None, "sum of per-layer ranks (study: 896)", type=positive_int, when={"strategy": BUDGETED})
    num_layers: int | None = opt(None, "layer count (or give --model, or the gradient log's)", type=positive_int)
    model: str | None = opt(None, "hub id, model directory or config.json (gives the layer count)")
    granularity: str = opt("layer", "one rank per layer, or per (layer, projection)", choices=("layer", "module"))
    target_modules: list[str] = opt(list(DEFAULT_MODULES), "projections that get LoRA adapters", type=csv_list)
    grad_log: str | None = opt(None, "grad_norms.parquet for proportional, reduced, inverse")
    importance: str = opt("lora", "the profile's metric: lora (the study's A/B norms) or weight (the rank-neutral "
                          "full-weight gradient, as GoRA-style allocation uses)", choices=("lora", "weight"),
                          when={"strategy": PROFILE_STRATEGIES})
    fraction: float = opt(0.7, "reduced: share of the budget (0, 1]", when={"strategy": ("reduced",)})
    min_rank: int = opt(1, "smallest rank any unit may get", type=positive_int, when={"strategy": BUDGETED})
    max_rank: int | None = opt(None, "largest rank any unit may get", type=positive_int, when={"strategy": BUDGETED})
    low: int = opt(16, "random: lowest draw", type=positive_int, when={"strategy": ("random",)})
    high: int = opt(48, "random: highest draw", type=positive_int, when={"strategy": ("random",)})
    seed: int = opt(0, "random: seed of the draw", when={"strategy": ("random",)})
    ranks: str | None = opt(None, "manual: comma list, or @file.json (a list; per-module dicts allowed)",
                            when={"strategy": ("manual",)})
    # AdaLoRA (PEFT AdaLoraConfig); its final budget is --budget. beta1/beta2 are the paper's and PEFT's
    init_r: int = opt(12, "adalora: initial rank of every adapted matrix, above the mean target rank (the paper "
                          "starts at 1.5x the target)", type=positive_int, when=ADALORA)
    tinit: int = opt(5, "adalora: steps at the initial budget before pruning starts (its importance "
                        "estimates need a few steps)", when=ADALORA)
    tfinal: int = opt(10, "adalora: last steps at the final budget, ranks frozen: the adapter settles", when=ADALORA)
    delta_t: int = opt(1, "adalora: steps between reallocations during pruning", type=positive_int, when=ADALORA)
    beta1: float = opt(0.85, "adalora: EMA coefficient of the sensitivity |w * dL/dw|, in (0, 1)", when=ADALORA)
    beta2: float = opt(0.85, "adalora: EMA coefficient of its uncertainty, in (0, 1)", when=ADALORA)
    orth_reg_weight: float = opt(0.5, "adalora: weight of the penalty that keeps P and Q orthogonal (PEFT's "
                                      "default; the paper used 0.1)", when=ADALORA)
    lr_scale: float = opt(1.0, "adalora: its learning rate as a multiple of the regime's (1: the same rate as the "
                               "static arms; AdaLoRA starts E at 0 and P, Q at N(0, 0.02), so at the same rate its "
                               "update grows far slower)", type=positive_float, when=ADALORA)
    rank_log: str | None = opt(None, "adalora-final: ranks.parquet of the adalora run whose final ranks this "
                               "static arm takes", when={"strategy": (FROZEN_DYNAMIC,)})
    allow_remainder: bool = opt(False, "uniform: give a remainder to the lowest-indexed layers")
    alpha_policy: str = opt("ratio", "ratio: alpha = k*r (scaling constant); constant: one alpha; rslora: alpha/sqrt(r)",
                            choices=ALPHA_POLICIES)
    alpha: float | None = opt(None, "k for ratio (default 2), alpha for constant/rslora (default 2 x budget/layers)",
                              type=positive_float)

    def unit_count(self, num_layers: int) -> int:
        return num_layers * (len(self.target_modules) if self.granularity == "module" else 1)

    def check(self, num_layers: int | None = None) -> None:
        """Refuse cross-field mistakes in one line; with `num_layers`, those that need the layer count too.
        The CLI calls this before reading any file, the workflow before planning any job."""
        for m in self.target_modules:
            if not MODULE_NAME.match(m):
                raise UserError(f"module name {m!r} is not a plain module name (e.g. q_proj)")
        if len(set(self.target_modules)) != len(self.target_modules):
            raise UserError(f"--target-modules lists a module twice: {self.target_modules}")
        if self.max_rank is not None and self.max_rank < self.min_rank:
            raise UserError(f"--max-rank {self.max_rank} is below --min-rank {self.min_rank}")
        s = self.strategy
        if s == "manual":
            if not self.ranks:
                raise UserError("strategy 'manual' needs --ranks (a comma list or @file.json)")
            if num_layers is not None:
                self.manual_ranks(num_layers)
            return
        if self.budget is None:
            raise UserError(f"--budget is required for strategy {s!r}")
        if s == "reduced" and not 0 < self.fraction <= 1:
            raise UserError(f"--fraction {self.fraction} is outside (0, 1]")
        if s == "random" and self.low > self.high:
            raise UserError(f"--low {self.low} is above --high {self.high}")
        if s == DYNAMIC:
            self.check_adalora(num_layers)
        if num_layers is None:
            return
        n_mod = len(self.target_modules) if self.granularity == "module" else 1
        units = self.unit_count(num_layers)
        budgets = [("--budget", self.budget)]
        if s == "reduced":
            budgets.append(("reduced budget (--fraction x --budget)", self.effective_budget()))
        for what, budget in budgets:
            if budget * n_mod < units * self.min_rank:
                raise UserError(f"{what} {budget} is below {num_layers} layers x --min-rank {self.min_rank}")
            if self.max_rank is not None and budget * n_mod > units * self.max_rank:
                raise UserError(f"{what} {budget} is above {num_layers} layers x --max-rank {self.max_rank}")
        if s == "uniform" and (self.budget * n_mod) % units and not self.allow_remainder:
            per = self.budget * n_mod // units
            rem = self.budget * n_mod - per * units
            raise UserError(
                f"--budget {self.budget} does not divide over {units} units ({per} each, remainder {rem}); "
                f"pass --allow-remainder to give the remainder to the lowest-indexed layers, or use a multiple of {units}"
            )

    def check_adalora(self, num_layers: int | None = None) -> None:
        for name in ("beta1", "beta2"):
            if not 0 < getattr(self, name) < 1:
                raise UserError(f"--{name} {getattr(self, name)} is outside (0, 1)")
        for name in ("tinit", "tfinal", "orth_reg_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 0")
        if num_layers is not None and self.init_r <= Fraction(self.budget, num_layers):
            raise UserError(f"--init-r {self.init_r} is not above the mean target rank {float(self.budget / num_layers):g} "
                            f"(--budget {self.budget} over {num_layers} layers): AdaLoRA prunes from init_r down to the "
                            f"budget (the paper starts at 1.5x the target)")

    def effective_budget(self) -> int:
        """The budget the ranks sum to: floor(fraction x budget) for reduced (never above the fraction)."""
        if self.strategy == "reduced":
            return int(Fraction(str(self.fraction)) * self.budget)
        return self.budget

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
                flat.extend([entry] * (len(modules) if self.granularity == "module" else 1))
        out = []
        for pos, value in enumerate(flat):
            try:
                ok = float(value) == int(float(value)) and int(float(value)) > 0 and not isinstance(value, bool)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise UserError(f"rank {value!r} at position {pos} is not a positive integer")
            out.append(int(float(value)))
        total = sum(out)
        n_mod = len(modules) if self.granularity == "module" else 1
        if total % n_mod:
            raise UserError(f"manual module ranks sum to {total}, not a multiple of {n_mod} modules")
        if self.budget is not None and self.budget * n_mod != total:
            raise UserError(f"manual ranks sum to {total // n_mod} per-layer units but --budget is {self.budget}")
        return out


# ---------------------------------------------------------------- strategies
def allocation_units(num_layers: int, modules: list[str], granularity: str) -> list[tuple[int, str | None]]:
    """What gets one rank: each layer, or each (layer, projection) pair."""
    if granularity == "layer":
        return [(layer, None) for layer in range(num_layers)]
    return [(layer, m) for layer in range(num_layers) for m in modules]


def profile_weights(df, units: list, granularity: str, num_layers: int, modules: list[str],
                    metric: str = "lora", name: str = "gradient log") -> list[float]:
    """Shares by `metric` from a gradient log, one per unit, after checking the log fits the allocation."""
    from lorarank import gradlog

    df = gradlog.select(df, metric, name=f"gradient log {name!r}")
    log_layers = gradlog.num_layers(df)
    if log_layers != num_layers:
        raise UserError(f"gradient log covers {log_layers} layers but the allocation has {num_layers} (--num-layers)")
    if granularity == "layer":
        s = gradlog.shares(df, "layer")
        return [float(s.get(layer, 0.0)) for layer, _ in units]
    have = set(df["module"].unique())
    lacking = [m for m in modules if m not in have]
    if lacking:
        raise UserError(f"module(s) {', '.join(lacking)} are not in the gradient log (it has: {', '.join(sorted(have))})")
    s = gradlog.shares(df[df["module"].isin(modules)], "module")
    return [float(s.get((layer, m), 0.0)) for layer, m in units]


ADALORA_KEYS = ("init_r", "tinit", "tfinal", "delta_t", "beta1", "beta2", "orth_reg_weight", "lr_scale")


def final_ranks(path: str, units: list[tuple[int, str]]) -> tuple[list[int], dict]:
    """An adalora run's ranks at its last logged step, one per (layer, module) unit, and the profile record."""
    from lorarank import ranklog

    df = ranklog.read(path)
    step, ranks = ranklog.final(df)
    lacking = [u for u in units if u not in ranks]
    if lacking:
        raise UserError(f"rank log {path!r} has no rank for layer {lacking[0][0]} {lacking[0][1]} at its last step {step} "
                        f"(it must come from an adalora run on this model and these modules)")
    extra = sorted(set(ranks) - set(units))
    if extra:
        raise UserError(f"rank log {path!r} has ranks for layer {extra[0][0]} {extra[0][1]}, which this allocation "
                        f"does not adapt")
    if step == 0:
        raise UserError(f"rank log {path!r} holds only step 0: it is not from a finished adalora run")
    return [ranks[u] for u in units], {"path": str(path), "sha256": sha256_file(path), "step": step,
                                       "rank_total": sum(ranks.values())}


class Ranks(NamedTuple):
    ranks: list[int]  # one per unit
    shares: list[float] | None  # the profile's, for the profiled strategies
    params: dict  # what the strategy drew or used (recorded in the allocation file)
    budget: int  # in per-layer rank units


def compute_ranks(spec: AllocationSpec, units: list, profile_shares: list[float] | None) -> Ranks:
    """Integer ranks per unit for a checked spec (`spec.check(num_layers)` has passed)."""
    n_mod = len(spec.target_modules) if spec.granularity == "module" else 1
    s = spec.strategy
    if s == "manual":
        ranks = spec.manual_ranks(len(units) // n_mod)
        return Ranks(ranks, None, {}, sum(ranks) // n_mod)
    budget = spec.effective_budget()
    params: dict = {"min_rank": spec.min_rank, "max_rank": spec.max_rank}
    shares = None
    if s == "uniform":
        weights: list = [1] * len(units)
        params = {}
    elif s == DYNAMIC:  # the targets: AdaLoRA's budget is global, its mean rank per matrix budget / layers
        weights = [1] * len(units)
        params = {k: getattr(spec, k) for k in ADALORA_KEYS}
    elif s == FROZEN_DYNAMIC:  # the adalora run's final ranks, rescaled to the exact budget
        weights = profile_shares
        params["final_ranks"] = [int(w) for w in weights]
    elif s in PROFILE_STRATEGIES:
        shares = profile_shares
        if s == "reduced":
            params["fraction"], params["base_budget"] = spec.fraction, spec.budget
        if s == "inverse":
            zero = [i for i, x in enumerate(shares) if x <= 0]
            if zero:
                raise UserError(f"inverse needs every share > 0, but unit {units[zero[0]]} has share 0")
            weights = [1 / x for x in shares]
        else:
            weights = shares
    else:  # random
        import numpy as np

        rng = np.random.Generator(np.random.PCG64(spec.seed))
        weights = [int(d) for d in rng.integers(spec.low, spec.high + 1, size=len(units))]
        params.update(low=spec.low, high=spec.high, draws=weights)
    return Ranks(apportion(weights, budget * n_mod, spec.min_rank, spec.max_rank), shares, params, budget)


def default_alpha(policy: str, budget: int, num_layers: int) -> float:
    # ratio: k = 2 keeps alpha/r = 2 in every layer. constant/rslora: the uniform arm's alpha
    # under ratio k = 2, so the average layer keeps the same scaling as the uniform arm.
    return 2.0 if policy == "ratio" else 2.0 * budget / num_layers


def resolve_num_layers(spec: AllocationSpec, log_layers: int | None) -> int:
    """The layer count from --model, else --num-layers, else the gradient log; they must agree."""
    n = spec.num_layers
    if spec.model is not None:
        from lorarank.model import load_config

        n = int(load_config(spec.model).num_hidden_layers)
        if spec.num_layers is not None and spec.num_layers != n:
            raise UserError(f"--num-layers {spec.num_layers} disagrees with model {spec.model!r}, which has {n} layers")
    if n is None:
        n = log_layers
    if n is None:
        raise UserError("--num-layers or --model is required (the allocation needs the layer count)")
    return n


def build(spec: AllocationSpec) -> dict:
    """The allocation document (DESIGN.md contract) for a spec."""
    spec.check()
    if spec.strategy == FROZEN_DYNAMIC:  # AdaLoRA ranks each matrix: so does its frozen arm
        spec = dataclasses.replace(spec, granularity="module")
        if spec.rank_log is None:
            raise UserError(f"strategy {FROZEN_DYNAMIC!r} needs --rank-log (the ranks.parquet of an adalora run)")
    df, profile, log_layers = None, None, None
    if spec.strategy in PROFILE_STRATEGIES:
        from lorarank import gradlog

        if spec.grad_log is None:
            raise UserError(f"strategy {spec.strategy!r} needs --grad-log (a grad_norms.parquet)")
        df = gradlog.read(spec.grad_log)
        log_layers = gradlog.num_layers(df)
        profile = {"path": str(spec.grad_log), "sha256": sha256_file(spec.grad_log), "importance": spec.importance}
    num_layers = resolve_num_layers(spec, log_layers)
    spec.check(num_layers)
    units = allocation_units(num_layers, spec.target_modules, spec.granularity)
    shares = (profile_weights(df, units, spec.granularity, num_layers, spec.target_modules, spec.importance,
                              spec.grad_log) if df is not None else None)
    if spec.strategy == FROZEN_DYNAMIC:
        shares, profile = final_ranks(spec.rank_log, units)
    result = compute_ranks(spec, units, shares)
    alpha = spec.alpha if spec.alpha is not None else default_alpha(spec.alpha_policy, result.budget, num_layers)
    if spec.granularity == "module":
        k = len(spec.target_modules)
        per_layer = [dict(zip(spec.target_modules, result.ranks[i * k:(i + 1) * k])) for i in range(num_layers)]
    else:
        per_layer = result.ranks
    return {
        "strategy": spec.strategy,
        "granularity": spec.granularity,
        "budget": result.budget,
        "num_layers": num_layers,
        "ranks": per_layer,
        "modules": list(spec.target_modules),
        "alpha_policy": {"name": spec.alpha_policy, "value": alpha},
        "seed": spec.seed,
        "profile": profile,
        "shares": result.shares,
        "params": result.params,
        "lorarank_version": __version__,
    }


def configure(p: argparse.ArgumentParser) -> None:
    add_arguments(p, AllocationSpec)
    p.add_argument("--out", required=True)


def run(args) -> int:
    doc = build(from_args(AllocationSpec, args))
    write_json(args.out, doc)
    flat = [v for r in doc["ranks"] for v in (r.values() if isinstance(r, dict) else [r])]
    print(f"{doc['strategy']}: {len(flat)} units, ranks {min(flat)}-{max(flat)}, budget {doc['budget']} -> {args.out}")
    return 0
