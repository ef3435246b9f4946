"""The vocabulary of an allocation spec, and the reader of the allocation file contract.

Shared by the allocation math (`lorarank.allocation`) and the PEFT glue (`lorarank.lora`) without
either importing the other, so that editing one reruns only the stages that run it.
"""

from __future__ import annotations

from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import read_json

STRATEGIES = ("uniform", "proportional", "reduced", "inverse", "random", "manual")
PROFILE_STRATEGIES = ("proportional", "reduced", "inverse")  # need a gradient log
DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ALPHA_POLICIES = ("ratio", "constant", "rslora")


def load_allocation(path: str | Path) -> dict:
    """Read an allocation document (`lorarank allocate`), checking the fields later stages rely on."""
    doc = read_json(path, "allocation")
    for key in ("strategy", "num_layers", "ranks", "modules", "alpha_policy"):
        if key not in doc:
            raise UserError(f"allocation {str(path)!r} lacks field {key!r}")
    if len(doc["ranks"]) != doc["num_layers"]:
        raise UserError(f"allocation {str(path)!r} has {len(doc['ranks'])} rank entries for {doc['num_layers']} layers")
    return doc
