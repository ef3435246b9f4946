"""The study's vocabulary: alpha policies and LoRA scaling, what identifies a run and an arm, and the
reader of the allocation file contract (the strategies are `lorarank.allocation.strategies`).

Shared by the allocation math (`lorarank.allocation`), the PEFT glue (`lorarank.allocation.lora`), training,
evaluation and the analyses without any of them importing another, so that editing one reruns only
the stages that run it. Standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from lorarank.errors import UserError
from lorarank.io import read_json

DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The alpha policies: how a module's LoRA alpha follows its rank r (the registry; the allocation strategies'
# is `lorarank.allocation.strategies`). name -> (alpha = value x r, else value; scaling alpha / sqrt(r), else alpha / r)
ALPHA_POLICIES = {"ratio": (True, False), "constant": (False, False), "rslora": (False, True)}


@dataclass(frozen=True)
class AlphaPolicy:
    """An alpha policy and its value: k under ratio (alpha = k r, so the scaling alpha / r is k in every
    layer), the one alpha under constant (alpha / r then differs between ranks) and rslora (alpha / sqrt(r)).
    Allocation, LoRA-config and run files record it as {"name": ..., "value": ...}."""

    name: str
    value: float

    def __post_init__(self):
        if self.name not in ALPHA_POLICIES:
            raise UserError(f"alpha policy {self.name!r} is unknown (allowed: {', '.join(ALPHA_POLICIES)})")

    @classmethod
    def default(cls, name: str, budget: int, num_layers: int) -> AlphaPolicy:
        # ratio: k = 2 keeps alpha/r = 2 in every layer. constant/rslora: the uniform arm's alpha under
        # ratio k = 2, so the average layer keeps the same scaling as the uniform arm.
        return cls(name, 2.0 if name == "ratio" else 2.0 * budget / num_layers)

    @classmethod
    def from_json(cls, doc: dict) -> AlphaPolicy:
        return cls(doc["name"], doc["value"])

    def to_json(self) -> dict:
        return {"name": self.name, "value": self.value}

    @property
    def per_rank(self) -> bool:
        """Whether alpha grows with the rank (then every rank has its own alpha)."""
        return ALPHA_POLICIES[self.name][0]

    @property
    def rslora(self) -> bool:
        """Whether the scaling divides by sqrt(r) (PEFT's use_rslora)."""
        return ALPHA_POLICIES[self.name][1]

    def alpha(self, r: int) -> float:
        """LoRA alpha of a module of rank r: k * r under `ratio`, the one alpha otherwise."""
        return self.value * r if self.per_rank else self.value

    def scaling(self, r: int) -> float:
        """The factor s in y = W x + s B A x: alpha / r, or alpha / sqrt(r) under rsLoRA."""
        a = self.alpha(r)
        return a / math.sqrt(r) if self.rslora else a / r


def mechanical_sign(policy: str) -> int:
    """How s sqrt(r), the factor a LoRA gradient norm carries at rank r whatever the loss, moves with r under a
    policy: +1 under ratio (k sqrt(r)), -1 under constant (alpha / sqrt(r)), 0 under rslora (alpha)."""
    grows, root = ALPHA_POLICIES[policy]
    exponent = grows - (0.5 if root else 1) + 0.5
    return (exponent > 0) - (exponent < 0)


def run_identity(kind: str, strategy: str | None, alpha_policy: dict | None, seed: int | None, model: dict) -> dict:
    """What a training run or an evaluation is, as run.json, metrics.json and the analyses record it:
    the regime (`kind`: warmup, grpo, sft; `base` for the model without an adapter), the allocation
    strategy and alpha policy of its adapter, the training seed and the base model's identity."""
    return {"kind": kind, "strategy": strategy, "alpha_policy": alpha_policy, "seed": seed, "model": model}


def identity_problem(identity) -> str | None:
    """Why `identity` is not what `run_identity` writes, or None."""
    if not isinstance(identity, dict):
        return "its identity is not an object"
    kinds = {"kind": str, "strategy": (str, type(None)), "alpha_policy": (dict, type(None)), "model": dict,
             "seed": (int, type(None))}
    for key, kind in kinds.items():
        value = identity.get(key)
        if key not in identity or not isinstance(value, kind) or isinstance(value, bool):
            return f"its identity's {key!r} is {'missing' if key not in identity else repr(value)}"
    policy = identity["alpha_policy"]
    if policy is not None and not isinstance(policy.get("name"), str):
        return "its identity's alpha_policy has no name"
    return None


def read_record(path: str | Path, what: str) -> dict:
    """A run.json or metrics.json, whose identity (`run_identity`) says what it is: one UserError line if it
    is not JSON, not an object or its identity is malformed."""
    doc = read_json(path, what)
    if not isinstance(doc, dict) or "identity" not in doc:
        raise UserError(f"{what} {str(path)!r} has no identity (written before lorarank 0.2, or not a {what}: rerun it)")
    problem = identity_problem(doc["identity"])
    if problem:
        raise UserError(f"{what} {str(path)!r} is malformed: {problem}")
    return doc


def load_allocation(path: str | Path) -> dict:
    """Read an allocation document (`lorarank allocate`), checking the fields later stages rely on."""
    doc = read_json(path, "allocation")
    for key in ("strategy", "num_layers", "ranks", "modules", "alpha_policy"):
        if key not in doc:
            raise UserError(f"allocation {str(path)!r} lacks field {key!r}")
    if len(doc["ranks"]) != doc["num_layers"]:
        raise UserError(f"allocation {str(path)!r} has {len(doc['ranks'])} rank entries for {doc['num_layers']} layers")
    return doc


class Arm(NamedTuple):
    """What makes runs of different seeds the same arm: (regime, strategy, alpha policy name). The base
    model is Arm("base", None, None); the warm-up Arm("warmup", None, None)."""

    regime: str
    strategy: str | None
    policy: str | None

    @property
    def name(self) -> str:
        """As tables, figures and file names show it: regime/strategy/policy (e.g. grpo/proportional/ratio)."""
        return "/".join(k for k in self if k)

    def reference(self) -> Arm:
        """The arm this one is compared with: the uniform arm of the same regime and alpha policy."""
        return Arm(self.regime, "uniform", self.policy)


def arm_key(identity: dict) -> Arm:
    """The arm of a run, from its identity."""
    policy = identity.get("alpha_policy")
    return Arm(identity["kind"], identity.get("strategy"), policy["name"] if policy else None)
