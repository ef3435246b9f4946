"""The study's vocabulary: strategies, alpha policies, LoRA scaling, what identifies a run, and the
reader of the allocation file contract.

Shared by the allocation math (`lorarank.allocation`), the PEFT glue (`lorarank.lora`), training,
evaluation and the analyses without any of them importing another, so that editing one reruns only
the stages that run it. Standard library only.
"""

from __future__ import annotations

import math
from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import read_json

STRATEGIES = ("uniform", "proportional", "reduced", "inverse", "random", "manual", "adalora", "adalora-final")
PROFILE_STRATEGIES = ("proportional", "reduced", "inverse")  # need a gradient log
DYNAMIC = "adalora"  # ranks move during training (lorarank.adalora); its allocation holds the target only
FROZEN_DYNAMIC = "adalora-final"  # a static arm: the adalora run's final ranks (needs its rank log)
DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALPHA_POLICIES = ("ratio", "constant", "rslora")


def alpha_for(policy: dict, r: int) -> float:
    """LoRA alpha of a module of rank r: k * r under `ratio`, the one alpha otherwise."""
    return policy["value"] * r if policy["name"] == "ratio" else policy["value"]


def scaling(policy: dict, r: int) -> float:
    """The factor s in y = W x + s B A x: alpha / r, or alpha / sqrt(r) under rsLoRA."""
    a = alpha_for(policy, r)
    return a / math.sqrt(r) if policy["name"] == "rslora" else a / r


def run_identity(kind: str, strategy: str | None, alpha_policy: dict | None, seed: int | None, model: dict) -> dict:
    """What a training run or an evaluation is, as run.json, metrics.json and the analyses record it:
    the regime (`kind`: warmup, grpo, sft; `base` for the model without an adapter), the allocation
    strategy and alpha policy of its adapter, the training seed and the base model's identity."""
    return {"kind": kind, "strategy": strategy, "alpha_policy": alpha_policy, "seed": seed, "model": model}


def load_allocation(path: str | Path) -> dict:
    """Read an allocation document (`lorarank allocate`), checking the fields later stages rely on."""
    doc = read_json(path, "allocation")
    for key in ("strategy", "num_layers", "ranks", "modules", "alpha_policy"):
        if key not in doc:
            raise UserError(f"allocation {str(path)!r} lacks field {key!r}")
    if len(doc["ranks"]) != doc["num_layers"]:
        raise UserError(f"allocation {str(path)!r} has {len(doc['ranks'])} rank entries for {doc['num_layers']} layers")
    return doc


def arm_key(identity: dict) -> tuple[str, str | None, str | None]:
    """(regime, strategy, alpha policy) of a run, from its identity: what makes runs of different seeds
    the same arm. The base model is ("base", None, None); the warm-up ("warmup", None, None)."""
    policy = identity.get("alpha_policy")
    return identity["kind"], identity.get("strategy"), policy["name"] if policy else None


def arm_name(key: tuple) -> str:
    """An arm as tables, figures and file names show it: regime/strategy/policy (e.g. grpo/proportional/ratio)."""
    return "/".join(k for k in key if k)


def arm_of(identity: dict) -> str:
    return arm_name(arm_key(identity))


def reference_arm(key: tuple) -> tuple:
    """The arm another arm is compared with: the uniform arm of the same regime and alpha policy."""
    return key[0], "uniform", key[2]


def check_schedule(tinit: int, tfinal: int, steps: int, what: str = "--steps") -> None:
    """AdaLoRA's schedule needs a pruning phase: tinit + tfinal < the run's optimizer steps (the training
    commands and the workflow's config check both ask)."""
    if tinit + tfinal >= steps:
        raise UserError(f"{what} {steps}: AdaLoRA's tinit {tinit} + tfinal {tfinal} = {tinit + tfinal} leaves no "
                        f"pruning phase (it needs tinit + tfinal < steps)")
