"""PEFT glue: an allocation becomes the exact `LoraConfig` kwargs, checked against PEFT itself.

    python -m lorarank lora-config --allocation allocations/uniform.json \
        --model Qwen/Qwen2.5-1.5B-Instruct --out lora/uniform.json --verify

PEFT matches every `rank_pattern`/`alpha_pattern` key as the regex `(.*\\.)?(KEY)$`, first key in
dict order wins, and a key that matches nothing silently falls back to the default `r`. So every
key written here is one target's full path, regex-escaped and anchored with `^`, and
`target_modules` is the exact list of full paths (PEFT compares those by equality). `--verify`
then builds the PEFT model on the meta device and compares every LoRA module's actual r, alpha
and scaling, and the trainable-parameter total, with what this file promises.

Alpha policies (recorded, never implicit; scaling is alpha/r, or alpha/sqrt(r) with rsLoRA):
  ratio     alpha = k * r per module: scaling k everywhere (default k = 2);
  constant  one alpha everywhere: scaling alpha/r differs between layers of different rank;
  rslora    one alpha with use_rslora: scaling alpha/sqrt(r).
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from dataclasses import dataclass

from lorarank.argtypes import csv_list
from lorarank.errors import UserError
from lorarank.io import read_json, sha256_file, write_json
from lorarank.model import Target
from lorarank.options import add_arguments, opt
from lorarank.study import ALPHA_POLICIES, alpha_for, load_allocation, scaling


def pattern_key(name: str) -> str:
    """An exact PEFT pattern key for one module path: escaped (dots are literal) and anchored."""
    return "^" + re.escape(name)


def per_module_ranks(alloc: dict, targets: list[Target]) -> list[int]:
    out = []
    for t in targets:
        entry = alloc["ranks"][t.layer]
        out.append(int(entry[t.module]) if isinstance(entry, dict) else int(entry))
    return out


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else float(x)


def build(alloc: dict, targets: list[Target], dropout: float) -> dict:
    """The lora.json document: LoraConfig kwargs, per-module expectations, closed-form count."""
    ranks = per_module_ranks(alloc, targets)
    for t, r in zip(targets, ranks):
        if r > min(t.in_features, t.out_features):
            raise UserError(
                f"rank {r} for {t.name} exceeds min(in={t.in_features}, out={t.out_features}) = "
                f"{min(t.in_features, t.out_features)}"
            )
    policy = alloc["alpha_policy"]
    if policy["name"] not in ALPHA_POLICIES:
        raise UserError(f"alpha policy {policy['name']!r} is unknown (allowed: {', '.join(ALPHA_POLICIES)})")
    default_r = Counter(ranks).most_common(1)[0][0]
    kwargs = {
        "task_type": "CAUSAL_LM",
        "target_modules": [t.name for t in targets],
        "r": default_r,
        "lora_alpha": _num(alpha_for(policy, default_r)),
        "lora_dropout": dropout,
        "bias": "none",
        "use_rslora": policy["name"] == "rslora",
        # every target listed explicitly, even at the default r: nothing relies on the fallback
        "rank_pattern": {pattern_key(t.name): r for t, r in zip(targets, ranks)},
        "alpha_pattern": (
            {pattern_key(t.name): _num(alpha_for(policy, r)) for t, r in zip(targets, ranks)}
            if policy["name"] == "ratio" else {}
        ),
    }
    modules = [
        {"name": t.name, "layer": t.layer, "module": t.module, "in_features": t.in_features,
         "out_features": t.out_features, "r": r, "lora_alpha": _num(alpha_for(policy, r)),
         "scaling": scaling(policy, r)}
        for t, r in zip(targets, ranks)
    ]
    return {
        "lora_config": kwargs,
        "expected_trainable_params": sum(r * (t.in_features + t.out_features) for t, r in zip(targets, ranks)),
        "alpha_policy": policy,
        "modules": modules,
    }


def verify(doc: dict, model):
    """Build PEFT on `model` (meta device is fine), check every promise in `doc`, return the PEFT model."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        peft_model = get_peft_model(model, LoraConfig(**doc["lora_config"]))
    except (re.error, ValueError) as e:
        raise UserError(f"PEFT rejects this LoraConfig: {e}") from None
    actual = {}
    for name, mod in peft_model.base_model.model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.r:
            actual[name] = (mod.r["default"], mod.lora_alpha["default"], mod.scaling["default"])
    expected = {m["name"]: m for m in doc["modules"]}
    problems = [f"{n} got no LoRA adapter" for n in sorted(set(expected) - set(actual))]
    problems += [f"{n} got a LoRA adapter it was not meant to have" for n in sorted(set(actual) - set(expected))]
    for name, m in expected.items():
        if name not in actual:
            continue
        r, alpha, scale = actual[name]
        if r != m["r"] or not math.isclose(alpha, m["lora_alpha"]) or not math.isclose(scale, m["scaling"]):
            problems.append(
                f"{name} has r={r}, alpha={alpha}, scaling={scale:.6g}; "
                f"expected r={m['r']}, alpha={m['lora_alpha']}, scaling={m['scaling']:.6g}"
            )
    if problems:
        others = "; other modules: " + ", ".join(p.split(" ", 1)[0] for p in problems[1:]) if problems[1:] else ""
        raise UserError(f"verify: {len(problems)} module(s) differ from the LoRA config: {problems[0]}{others}")
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if trainable != doc["expected_trainable_params"]:
        raise UserError(f"verify: {trainable:,} trainable parameters, expected {doc['expected_trainable_params']:,}")
    return peft_model


def lora_config(alloc_path: str, model_spec: str, dropout: float = 0.05, target_modules=None, check: bool = False) -> dict:
    """Allocation file + model spec -> lora.json document (verified when `check`)."""
    from lorarank.model import meta_model, targets as find_targets

    alloc = load_allocation(alloc_path)
    modules = list(target_modules or alloc["modules"])
    if target_modules and alloc.get("granularity") == "module" and modules != alloc["modules"]:
        raise UserError(f"--target-modules {modules} differs from the module-granularity allocation's {alloc['modules']}")
    config, targets = find_targets(model_spec, modules)
    if int(config.num_hidden_layers) != alloc["num_layers"]:
        raise UserError(f"allocation has {alloc['num_layers']} layers but model {model_spec!r} has {config.num_hidden_layers}")
    LoraSettings(dropout).check()
    doc = build(alloc, targets, dropout)
    doc["model"] = {"spec": model_spec, "model_type": config.model_type, "num_layers": int(config.num_hidden_layers)}
    doc["allocation"] = {"path": str(alloc_path), "sha256": sha256_file(alloc_path), "strategy": alloc["strategy"]}
    doc["verified"] = False
    if check:
        verify(doc, meta_model(config))
        doc["verified"] = True
    return doc


def read_lora(path: str) -> dict:
    """Read a lora.json (`lorarank lora-config`), checking the fields training relies on."""
    doc = read_json(path, "LoRA config")
    for key in ("lora_config", "expected_trainable_params", "modules"):
        if key not in doc:
            raise UserError(f"LoRA config {path!r} lacks field {key!r} (write it with `lorarank lora-config`)")
    return doc


def load_model_and_lora(spec: str, lora_path: str | None, seed: int, bf16: bool = False):
    """(model, tokenizer, lora doc or None): the LoRA config verified on the real model first."""
    from transformers import set_seed

    from lorarank.model import load, load_config

    config = load_config(spec)  # clear errors for a bad path before loading weights
    doc = read_lora(lora_path) if lora_path else None
    if doc and doc.get("model", {}).get("num_layers") not in (None, config.num_hidden_layers):
        raise UserError(f"LoRA config {lora_path!r} is for {doc['model']['num_layers']} layers, "
                        f"but model {spec!r} has {config.num_hidden_layers}")
    model, tokenizer = load(spec, bf16)
    if doc:
        set_seed(seed)  # LoRA A init is random: seed it so adapters are reproducible
        model = verify(doc, model)
    return model, tokenizer, doc


@dataclass
class LoraSettings:
    """What `lorarank lora-config` adds to an allocation (config `allocation.dropout`)."""

    dropout: float = opt(0.05, "LoRA dropout on each adapter's input, in [0, 1)")

    def check(self) -> None:
        if not 0 <= self.dropout < 1:
            raise UserError(f"--dropout {self.dropout} is outside [0, 1)")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allocation", required=True, help="allocation.json from `lorarank allocate`")
    p.add_argument("--model", required=True, help="hub id, model directory or config.json")
    p.add_argument("--out", required=True)
    add_arguments(p, LoraSettings)
    p.add_argument("--target-modules", type=csv_list, help="override the allocation's modules (layer granularity)")
    p.add_argument("--verify", action="store_true", help="build PEFT on the meta device and check every module")


def run(args) -> int:
    doc = lora_config(args.allocation, args.model, args.dropout, args.target_modules, args.verify)
    write_json(args.out, doc)
    ranks = [m["r"] for m in doc["modules"]]
    status = "verified" if doc["verified"] else "not verified"
    print(f"{len(ranks)} LoRA modules, r {min(ranks)}-{max(ranks)}, "
          f"{doc['expected_trainable_params']:,} trainable params ({status}) -> {args.out}")
    return 0
