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

An `adalora` allocation becomes `AdaLoraConfig` kwargs instead (`"adapter": "adalora"`; training adds
`total_step`, `lorarank.training.adalora`): the same target modules, every matrix at init_r, a final budget
equal to the allocation's total rank (the static arms' sum of ranks over all adapted matrices), and
lora_alpha = s x init_r, where s is the scaling a static arm of the mean target rank gets under the
alpha policy: AdaLoRA's scaling is lora_alpha / init_r whatever rank a matrix keeps. A rank costs
in + out + 1 parameters there (its singular value), in + out in LoRA.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import Counter
from dataclasses import dataclass

from lorarank.allocation.adalora_settings import check_init_r
from lorarank.allocation.strategies import DYNAMIC
from lorarank.argtypes import csv_list
from lorarank.errors import UserError
from lorarank.io import read_json, sha256_file, write_json
from lorarank.models.loading import Target
from lorarank.options import add_arguments, opt
from lorarank.study import AlphaPolicy, load_allocation


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


def _fits(targets: list[Target], ranks: list[int]) -> None:
    for t, r in zip(targets, ranks):
        if r > min(t.in_features, t.out_features):
            raise UserError(
                f"rank {r} for {t.name} exceeds min(in={t.in_features}, out={t.out_features}) = "
                f"{min(t.in_features, t.out_features)}"
            )


def build(alloc: dict, targets: list[Target], dropout: float) -> dict:
    """The lora.json document: LoraConfig kwargs, per-module expectations, closed-form count."""
    ranks = per_module_ranks(alloc, targets)
    policy = AlphaPolicy.from_json(alloc["alpha_policy"])
    if alloc["strategy"] == DYNAMIC:
        return build_adalora(alloc, targets, ranks, dropout, policy)
    _fits(targets, ranks)
    default_r = Counter(ranks).most_common(1)[0][0]
    kwargs = {
        "task_type": "CAUSAL_LM",
        "target_modules": [t.name for t in targets],
        "r": default_r,
        "lora_alpha": _num(policy.alpha(default_r)),
        "lora_dropout": dropout,
        "bias": "none",
        "use_rslora": policy.rslora,
        # every target listed explicitly, even at the default r: nothing relies on the fallback
        "rank_pattern": {pattern_key(t.name): r for t, r in zip(targets, ranks)},
        "alpha_pattern": (
            {pattern_key(t.name): _num(policy.alpha(r)) for t, r in zip(targets, ranks)}
            if policy.per_rank else {}
        ),
    }
    modules = [
        {"name": t.name, "layer": t.layer, "module": t.module, "in_features": t.in_features,
         "out_features": t.out_features, "r": r, "lora_alpha": _num(policy.alpha(r)),
         "scaling": policy.scaling(r)}
        for t, r in zip(targets, ranks)
    ]
    return {
        "lora_config": kwargs,
        "expected_trainable_params": sum(r * (t.in_features + t.out_features) for t, r in zip(targets, ranks)),
        "alpha_policy": policy.to_json(),
        "modules": modules,
    }


def build_adalora(alloc: dict, targets: list[Target], targets_r: list[int], dropout: float, policy: AlphaPolicy) -> dict:
    """The lora.json of an AdaLoRA arm: AdaLoraConfig kwargs (all but total_step) and the expectations."""
    p = alloc["params"]
    budget = sum(targets_r)  # the static arms' total rank over every adapted matrix
    mean = budget / len(targets)
    init_r = int(p["init_r"])
    check_init_r(init_r, mean, what="the allocation's init_r")
    _fits(targets, [init_r] * len(targets))
    alpha = _num(policy.scaling(mean) * init_r)  # AdaLoRA's scaling is alpha / init_r
    kwargs = {
        "task_type": "CAUSAL_LM", "target_modules": [t.name for t in targets], "init_r": init_r,
        # PEFT's target budget is target_r x matrices; training sets it to `target_budget` exactly
        "target_r": int(mean), "lora_alpha": alpha, "lora_dropout": dropout, "bias": "none",
        "tinit": int(p["tinit"]), "tfinal": int(p["tfinal"]), "deltaT": int(p["delta_t"]),
        "beta1": p["beta1"], "beta2": p["beta2"], "orth_reg_weight": p["orth_reg_weight"],
    }
    modules = [
        {"name": t.name, "layer": t.layer, "module": t.module, "in_features": t.in_features,
         "out_features": t.out_features, "r": init_r, "lora_alpha": alpha, "scaling": alpha / init_r}
        for t in targets
    ]
    return {
        "adapter": DYNAMIC,
        "lora_config": kwargs,
        "target_budget": budget,
        "lr_scale": p.get("lr_scale", 1.0),  # training multiplies the regime's learning rate by it
        "expected_trainable_params": sum(init_r * (t.in_features + t.out_features + 1) for t in targets),
        "alpha_policy": policy.to_json(),
        "modules": modules,
    }


def peft_config(doc: dict, total_step: int | None = None):
    """The PEFT config of a lora.json: LoraConfig, or AdaLoraConfig with `total_step` (default: the
    shortest valid schedule, enough to build and check the modules)."""
    from peft import AdaLoraConfig, LoraConfig

    if doc.get("adapter") != DYNAMIC:
        return LoraConfig(**doc["lora_config"])
    kw = doc["lora_config"]
    return AdaLoraConfig(**kw, total_step=total_step or kw["tinit"] + kw["tfinal"] + 1)


def verify(doc: dict, model, total_step: int | None = None):
    """Build PEFT on `model` (meta device is fine), check every promise in `doc`, return the PEFT model.
    An AdaLoRA doc also gets its exact final budget (`total_step`: the run's steps)."""
    import warnings

    from peft import get_peft_model
    from peft.tuners.adalora import AdaLoraLayer
    from peft.tuners.lora import LoraLayer

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        peft_model = get_peft_model(model, peft_config(doc, total_step))
    except (re.error, ValueError) as e:
        raise UserError(f"PEFT rejects this LoraConfig: {e}") from None
    if doc.get("adapter") == DYNAMIC:
        allocator = peft_model.base_model.rankallocator
        allocator.target_bgt = doc["target_budget"]  # PEFT's target_r x matrices, exact for any budget
    actual = {}
    for name, mod in peft_model.base_model.model.named_modules():
        if isinstance(mod, LoraLayer) and "default" in mod.r:
            r, scale = mod.r["default"], mod.scaling["default"]
            if isinstance(mod, AdaLoraLayer):
                scale = scale / r  # AdaLoRA divides by its (fixed) ranknum = init_r in forward
            actual[name] = (r, mod.lora_alpha["default"], scale)
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
    # AdaLoRA's ranknum (its fixed init_r) is a frozen parameter, but built on the meta device it comes out
    # requires_grad: it is never trained, so it is never counted
    trainable = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and ".ranknum." not in n)
    if trainable != doc["expected_trainable_params"]:
        raise UserError(f"verify: {trainable:,} trainable parameters, expected {doc['expected_trainable_params']:,}")
    if doc.get("adapter") == DYNAMIC and allocator.init_bgt != sum(m["r"] for m in doc["modules"]):
        raise UserError(f"verify: AdaLoRA's initial budget is {allocator.init_bgt}, expected "
                        f"{sum(m['r'] for m in doc['modules'])} (init_r x matrices)")
    return peft_model


def lora_config(alloc_path: str, model_spec: str, dropout: float = 0.05, target_modules=None, check: bool = False) -> dict:
    """Allocation file + model spec -> lora.json document (verified when `check`)."""
    from lorarank.models.loading import meta_model
    from lorarank.models.loading import targets as find_targets

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


def load_model_and_lora(spec: str, lora_path: str | None, seed: int, bf16: bool = False, total_step: int | None = None):
    """(model, tokenizer, lora doc or None): the LoRA config verified on the real model first (an AdaLoRA
    config with the run's `total_step`)."""
    from transformers import set_seed

    from lorarank.models.loading import load, load_config

    config = load_config(spec)  # clear errors for a bad path before loading weights
    doc = read_lora(lora_path) if lora_path else None
    if doc and doc.get("model", {}).get("num_layers") not in (None, config.num_hidden_layers):
        raise UserError(f"LoRA config {lora_path!r} is for {doc['model']['num_layers']} layers, "
                        f"but model {spec!r} has {config.num_hidden_layers}")
    model, tokenizer = load(spec, bf16)
    if doc:
        set_seed(seed)  # LoRA A init is random: seed it so adapters are reproducible
        model = verify(doc, model, total_step)
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
    if doc.get("adapter") == DYNAMIC:
        print(f"{len(ranks)} AdaLoRA modules at init_r {ranks[0]}, final budget {doc['target_budget']} ranks, "
              f"{doc['expected_trainable_params']:,} trainable params at the start ({status}) -> {args.out}")
        return 0
    print(f"{len(ranks)} LoRA modules, r {min(ranks)}-{max(ranks)}, "
          f"{doc['expected_trainable_params']:,} trainable params ({status}) -> {args.out}")
    return 0
