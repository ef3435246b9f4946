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
import math
import re
from fractions import Fraction

import numpy as np

from lorarank import __version__, gradlog
from lorarank.cli import csv_list, positive_int
from lorarank.errors import UserError
from lorarank.io import sha256_file, write_json
from lorarank.spec import ALPHA_POLICIES, DEFAULT_MODULES, PROFILE_STRATEGIES, STRATEGIES

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


# ---------------------------------------------------------------- strategies
def units(num_layers: int, modules: list[str], granularity: str) -> list[tuple[int, str | None]]:
    if granularity == "layer":
        return [(layer, None) for layer in range(num_layers)]
    return [(layer, m) for layer in range(num_layers) for m in modules]


def profile_weights(df, units_: list, granularity: str, num_layers: int, modules: list[str]) -> list[float]:
    """Shares from a gradient log, one per unit, after checking the log fits the allocation."""
    log_layers = gradlog.num_layers(df)
    if log_layers != num_layers:
        raise UserError(f"gradient log covers {log_layers} layers but the allocation has {num_layers} (--num-layers)")
    if granularity == "layer":
        s = gradlog.shares(df, "layer")
        return [float(s.get(layer, 0.0)) for layer, _ in units_]
    have = set(df["module"].unique())
    lacking = [m for m in modules if m not in have]
    if lacking:
        raise UserError(f"module(s) {', '.join(lacking)} are not in the gradient log (it has: {', '.join(sorted(have))})")
    s = gradlog.shares(df[df["module"].isin(modules)], "module")
    return [float(s.get((layer, m), 0.0)) for layer, m in units_]


def manual_ranks(text: str, units_: list, granularity: str, modules: list[str]) -> list[int]:
    if text.startswith("@"):
        from lorarank.io import read_json

        raw = read_json(text[1:], "ranks file")
    else:
        raw = [t.strip() for t in text.split(",")]
    if not isinstance(raw, list):
        raise UserError("--ranks must be a comma list or @file.json holding a JSON list")
    flat: list = []
    for entry in raw:
        if isinstance(entry, dict):
            if granularity != "module" or sorted(entry) != sorted(modules):
                raise UserError(f"per-module rank entry {entry} needs --granularity module and exactly modules {modules}")
            flat.extend(entry[m] for m in modules)
        else:
            flat.extend([entry] * (len(modules) if granularity == "module" else 1))
    expected = len(units_) // (len(modules) if granularity == "module" else 1)
    if len(raw) != expected:
        raise UserError(f"--ranks has {len(raw)} entries but the model has {expected} layers (one entry per layer)")
    out = []
    for pos, value in enumerate(flat):
        try:
            ok = float(value) == int(float(value)) and int(float(value)) > 0 and not isinstance(value, bool)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"rank {value!r} at position {pos} is not a positive integer")
        out.append(int(float(value)))
    return out


def compute_ranks(args, units_: list, profile_shares: list[float] | None):
    """(ranks per unit, shares or None, strategy params, budget in per-layer rank units); the shares
    come from the gradient log for the profiled strategies."""
    n_mod = len(args.target_modules) if args.granularity == "module" else 1
    lo, hi = args.min_rank, args.max_rank
    if hi is not None and hi < lo:
        raise UserError(f"--max-rank {hi} is below --min-rank {lo}")
    s = args.strategy
    if s == "manual":
        ranks = manual_ranks(args.ranks, units_, args.granularity, args.target_modules)
        total = sum(ranks)
        if total % n_mod:
            raise UserError(f"manual module ranks sum to {total}, not a multiple of {n_mod} modules")
        if args.budget is not None and args.budget * n_mod != total:
            raise UserError(f"manual ranks sum to {total // n_mod} per-layer units but --budget is {args.budget}")
        return ranks, None, {}, total // n_mod
    if args.budget is None:
        raise UserError(f"--budget is required for strategy {s!r}")
    budget = args.budget
    params: dict = {"min_rank": lo, "max_rank": hi}
    shares = None
    if s == "uniform":
        if (budget * n_mod) % len(units_) and not args.allow_remainder:
            per = budget * n_mod // len(units_)
            rem = budget * n_mod - per * len(units_)
            raise UserError(
                f"budget {budget} does not divide over {len(units_)} units ({per} each, remainder {rem}); "
                f"pass --allow-remainder to give the remainder to the lowest-indexed layers, or use a multiple of {len(units_)}"
            )
        weights: list = [1] * len(units_)
        params = {}
    elif s in PROFILE_STRATEGIES:
        shares = profile_shares
        if s == "reduced":
            if not 0 < args.fraction <= 1:
                raise UserError(f"--fraction {args.fraction} is outside (0, 1]")
            params["fraction"], params["base_budget"] = args.fraction, budget
            budget = int(Fraction(str(args.fraction)) * budget)  # floor: never above the fraction
        if s == "inverse":
            zero = [i for i, x in enumerate(shares) if x <= 0]
            if zero:
                raise UserError(f"inverse needs every share > 0, but unit {units_[zero[0]]} has share 0")
            weights = [1 / x for x in shares]
        else:
            weights = shares
    elif s == "random":
        if args.low > args.high:
            raise UserError(f"--low {args.low} is above --high {args.high}")
        rng = np.random.Generator(np.random.PCG64(args.seed))
        draws = rng.integers(args.low, args.high + 1, size=len(units_))
        weights = [int(d) for d in draws]
        params.update(low=args.low, high=args.high, draws=weights)
    total = budget * n_mod
    if total < len(units_) * lo:
        raise UserError(f"budget {budget} is below {len(units_) // n_mod} layers x min rank {lo}")
    if hi is not None and total > len(units_) * hi:
        raise UserError(f"budget {budget} is above {len(units_) // n_mod} layers x max rank {hi}")
    return apportion(weights, total, lo, hi), shares, params, budget


def default_alpha(policy: str, budget: int, num_layers: int) -> float:
    # ratio: k = 2 keeps alpha/r = 2 in every layer. constant/rslora: the uniform arm's alpha
    # under ratio k = 2, so the average layer keeps the same scaling as the uniform arm.
    return 2.0 if policy == "ratio" else 2.0 * budget / num_layers


def resolve_num_layers(args) -> int:
    if args.model is not None:
        from lorarank.models import load_config

        n = int(load_config(args.model).num_hidden_layers)
        if args.num_layers is not None and args.num_layers != n:
            raise UserError(f"--num-layers {args.num_layers} disagrees with model {args.model!r}, which has {n} layers")
        return n
    if args.num_layers is None:
        raise UserError("--num-layers or --model is required (the allocation needs the layer count)")
    return args.num_layers


def build(args) -> dict:
    """The allocation document (DESIGN.md contract) for parsed arguments."""
    for m in args.target_modules:
        if not MODULE_NAME.match(m):
            raise UserError(f"module name {m!r} is not a plain module name (e.g. q_proj)")
    if len(set(args.target_modules)) != len(args.target_modules):
        raise UserError(f"--target-modules lists a module twice: {args.target_modules}")
    profile, shares = None, None
    if args.strategy in PROFILE_STRATEGIES:
        if args.grad_log is None:
            raise UserError(f"strategy {args.strategy!r} needs --grad-log (a grad_norms.parquet)")
        df = gradlog.read(args.grad_log)
        if args.num_layers is None and args.model is None:
            args.num_layers = gradlog.num_layers(df)
        num_layers = resolve_num_layers(args)
        us = units(num_layers, args.target_modules, args.granularity)
        shares = profile_weights(df, us, args.granularity, num_layers, args.target_modules)
        profile = {"path": str(args.grad_log), "sha256": sha256_file(args.grad_log)}
    else:
        num_layers = resolve_num_layers(args)
        us = units(num_layers, args.target_modules, args.granularity)
    ranks, shares, params, budget = compute_ranks(args, us, shares)
    alpha = args.alpha if args.alpha is not None else default_alpha(args.alpha_policy, budget, num_layers)
    if alpha <= 0:
        raise UserError(f"--alpha {alpha} must be > 0")
    if args.granularity == "module":
        k = len(args.target_modules)
        per_layer = [dict(zip(args.target_modules, ranks[i * k:(i + 1) * k])) for i in range(num_layers)]
    else:
        per_layer = ranks
    return {
        "strategy": args.strategy,
        "granularity": args.granularity,
        "budget": budget,
        "num_layers": num_layers,
        "ranks": per_layer,
        "modules": list(args.target_modules),
        "alpha_policy": {"name": args.alpha_policy, "value": alpha},
        "seed": args.seed,
        "profile": profile,
        "shares": shares,
        "params": params,
        "lorarank_version": __version__,
    }


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", required=True, choices=STRATEGIES)
    p.add_argument("--budget", type=positive_int, help="sum of per-layer ranks (study: 896)")
    p.add_argument("--num-layers", type=positive_int)
    p.add_argument("--model", help="hub id, model directory or config.json (gives the layer count)")
    p.add_argument("--granularity", choices=("layer", "module"), default="layer")
    p.add_argument("--target-modules", type=csv_list, default=list(DEFAULT_MODULES))
    p.add_argument("--grad-log", help="grad_norms.parquet for proportional, reduced, inverse")
    p.add_argument("--fraction", type=float, default=0.7, help="reduced: share of the budget (0, 1]")
    p.add_argument("--min-rank", type=positive_int, default=1)
    p.add_argument("--max-rank", type=positive_int)
    p.add_argument("--low", type=positive_int, default=16, help="random: lowest draw")
    p.add_argument("--high", type=positive_int, default=48, help="random: highest draw")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranks", help="manual: comma list, or @file.json (a list; per-module dicts allowed)")
    p.add_argument("--allow-remainder", action="store_true")
    p.add_argument("--alpha-policy", choices=ALPHA_POLICIES, default="ratio",
                   help="ratio: alpha = k*r (scaling constant); constant: one alpha; rslora: alpha/sqrt(r)")
    p.add_argument("--alpha", type=float, help="k for ratio (default 2), alpha for constant/rslora")
    p.add_argument("--out", required=True)


def run(args) -> int:
    doc = build(args)
    write_json(args.out, doc)
    flat = [v for r in doc["ranks"] for v in (r.values() if isinstance(r, dict) else [r])]
    print(f"{doc['strategy']}: {len(flat)} units, ranks {min(flat)}-{max(flat)}, budget {doc['budget']} -> {args.out}")
    return 0

