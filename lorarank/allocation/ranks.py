"""From a checked spec to the allocation document: the inputs its strategy reads (a gradient profile, a
rank log), integer ranks at the exact budget (`rounding`), and the alpha policy the file records."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from lorarank import __version__
from lorarank.allocation.rounding import apportion
from lorarank.allocation.spec import AllocationSpec
from lorarank.allocation.strategies import DYNAMIC, get
from lorarank.errors import UserError
from lorarank.io import sha256_file
from lorarank.study import AlphaPolicy


def allocation_units(num_layers: int, modules: list[str], granularity: str) -> list[tuple[int, str | None]]:
    """What gets one rank: each layer, or each (layer, projection) pair."""
    if granularity == "layer":
        return [(layer, None) for layer in range(num_layers)]
    return [(layer, m) for layer in range(num_layers) for m in modules]


def profile_weights(df, units: list, granularity: str, num_layers: int, modules: list[str],
                    metric: str = "lora", name: str = "gradient log") -> list[float]:
    """Shares by `metric` from a gradient log, one per unit, after checking the log fits the allocation."""
    from lorarank.training import gradlog

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


class Ranks(NamedTuple):
    ranks: list[int]  # one per unit
    shares: list[float] | None  # the profile's, for the profiled strategies
    params: dict  # what the strategy drew or used (recorded in the allocation file)
    budget: int  # in per-layer rank units


def compute_ranks(spec: AllocationSpec, units: list, data: list | None) -> Ranks:
    """Integer ranks per unit for a checked spec (`spec.check(num_layers)` has passed); `data` is what the
    strategy reads (the profile's shares, the rank log's final ranks)."""
    strategy = get(spec.strategy)
    n_mod = spec.units_per_layer()
    weights, params = strategy.weights(spec, units, data)
    if not strategy.budgeted:  # the weights are the ranks
        return Ranks(weights, None, params, sum(weights) // n_mod)
    budget = strategy.budget(spec)
    ranks = apportion(weights, budget * n_mod, spec.min_rank, spec.max_rank)
    return Ranks(ranks, data if strategy.profile else None, params, budget)


def resolve_num_layers(spec: AllocationSpec, log_layers: int | None) -> int:
    """The layer count from --model, else --num-layers, else the gradient log; they must agree."""
    n = spec.num_layers
    if spec.model is not None:
        from lorarank.models.loading import load_config, targets

        config = load_config(spec.model)
        n = int(config.num_hidden_layers)
        targets(config, spec.target_modules)  # the first job that knows a fetched or imported model's modules
        if spec.num_layers is not None and spec.num_layers != n:
            raise UserError(f"--num-layers {spec.num_layers} disagrees with model {spec.model!r}, which has {n} layers")
    if n is None:
        n = log_layers
    if n is None:
        raise UserError("--num-layers or --model is required (the allocation needs the layer count)")
    return n


def build(spec: AllocationSpec) -> dict:
    """The allocation document (the contract `study.load_allocation` reads) for a spec."""
    spec.check()
    strategy = get(spec.strategy)
    if strategy.granularity:
        spec = dataclasses.replace(spec, granularity=strategy.granularity)
    if strategy.rank_log and spec.rank_log is None:
        raise UserError(f"strategy {spec.strategy!r} needs --rank-log (the ranks.parquet of an {DYNAMIC} run)")
    df, profile, log_layers = None, None, None
    if strategy.profile:
        from lorarank.training import gradlog

        if spec.grad_log is None:
            raise UserError(f"strategy {spec.strategy!r} needs --grad-log (a grad_norms.parquet)")
        df = gradlog.read(spec.grad_log)
        log_layers = gradlog.num_layers(df)
        profile = {"path": str(spec.grad_log), "sha256": sha256_file(spec.grad_log), "metric": spec.metric}
    num_layers = resolve_num_layers(spec, log_layers)
    spec.check(num_layers)
    units = allocation_units(num_layers, spec.target_modules, spec.granularity)
    data = None
    if strategy.profile:
        data = profile_weights(df, units, spec.granularity, num_layers, spec.target_modules, spec.metric, spec.grad_log)
    if strategy.rank_log:
        from lorarank.training import ranklog

        data, profile = ranklog.final_ranks(spec.rank_log, units)
    result = compute_ranks(spec, units, data)
    if spec.alpha is not None:
        policy = AlphaPolicy(spec.alpha_policy, spec.alpha)
    else:
        policy = AlphaPolicy.default(spec.alpha_policy, result.budget, num_layers)
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
        "alpha_policy": policy.to_json(),
        "seed": spec.seed,
        "profile": profile,
        "shares": result.shares,
        "params": result.params,
        "lorarank_version": __version__,
    }
