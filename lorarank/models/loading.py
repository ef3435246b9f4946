"""The base model: a spec (hub id, local model directory or config.json) resolved to a config, a
weightless (meta-device) model for enumerating LoRA targets, or loaded weights and tokenizer for
training and evaluation, with the one bf16 decision. Never `trust_remote_code`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lorarank.errors import UserError

LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", "./", "../", "~")) or spec.endswith(".json") or spec.count("/") > 1


def load_config(spec: str):
    """A transformers config for `spec`; a missing path or an unreachable hub id is a UserError."""
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    if path.is_file():
        raw = json.loads(path.read_text()) if path.suffix == ".json" else None
        if not isinstance(raw, dict) or "model_type" not in raw:
            raise UserError(f"model config {spec!r} is not a transformers config.json (no 'model_type')")
        try:
            return AutoConfig.for_model(**raw)
        except ValueError as e:
            raise UserError(f"model config {spec!r}: {e}") from None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {spec!r} has no config.json")
        return AutoConfig.from_pretrained(path, trust_remote_code=False)
    if _looks_like_path(spec):
        raise UserError(f"model path {spec!r} does not exist (give a hub id, a model directory or a config.json)")
    try:
        return AutoConfig.from_pretrained(spec, trust_remote_code=False)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model {spec!r} is not a local path and the hub could not provide it: {first}") from None


def meta_model(config):
    """The causal LM for `config` on the meta device: full module tree, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


@dataclass(frozen=True)
class Target:
    """One LoRA target: a linear projection inside a decoder layer."""

    name: str  # full path as PEFT sees it, e.g. model.layers.3.self_attn.q_proj
    layer: int
    module: str  # the projection's own name, e.g. q_proj
    in_features: int
    out_features: int


def linear_targets(model) -> list[Target]:
    """Every nn.Linear inside a numbered decoder layer, in layer then module-tree order."""
    import torch

    out = []
    for name, mod in model.named_modules():
        m = LAYER_INDEX.search(name)
        if m and isinstance(mod, torch.nn.Linear):
            out.append(Target(name, int(m.group(1)), name.rsplit(".", 1)[-1], mod.in_features, mod.out_features))
    return out


def targets(spec_or_config, modules: list[str]) -> tuple[object, list[Target]]:
    """(config, targets restricted to `modules`) — each module must exist in every layer, once."""
    config = load_config(spec_or_config) if isinstance(spec_or_config, str) else spec_or_config
    found = linear_targets(meta_model(config))
    available = sorted({t.module for t in found})
    unknown = [m for m in modules if m not in available]
    if unknown:
        raise UserError(f"module(s) {', '.join(unknown)} not in this model's layers (it has: {', '.join(available)})")
    chosen = [t for t in found if t.module in modules]
    n = int(config.num_hidden_layers)
    for m in modules:
        layers = sorted(t.layer for t in chosen if t.module == m)
        if layers != list(range(n)):
            raise UserError(f"module {m!r} is not exactly once in each of the {n} layers (found in layers {layers})")
    order = {m: i for i, m in enumerate(modules)}
    return config, sorted(chosen, key=lambda t: (t.layer, order[t.module]))


def use_bf16(requested: bool) -> bool:
    """bf16 only on a GPU that supports it (TRL 1.x defaults bf16=True even on a CPU)."""
    import torch

    return bool(requested and torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def load(spec: str, bf16: bool):
    """(model, tokenizer) for a spec: weights in bf16 where `use_bf16(bf16)`, else float32; the tokenizer
    pads on the left (batched generation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load_config(spec)  # one clear line for a bad spec, before any weights are read
    refused = ("(safetensors only: pickled .bin weights can run code when loaded; convert them with "
               "save_pretrained(..., safe_serialization=True))")
    local = Path(spec).expanduser()
    if local.is_dir() and not any(local.glob("*.safetensors")):
        raise UserError(f"model directory {spec!r} holds no .safetensors weights {refused}")
    tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):  # every prompt (training, evaluation) is a chat
        raise UserError(f"model {spec!r} has no chat template, and the workflow prompts in chat form "
                        f"(allowed: a model whose tokenizer carries one, e.g. an instruct model)")
    tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if use_bf16(bf16) else torch.float32
    try:
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, trust_remote_code=False, use_safetensors=True)
    except OSError as e:  # a hub model without safetensors weights
        raise UserError(f"model {spec!r} could not be loaded {refused}: {str(e).strip().splitlines()[0]}") from None
    return model, tokenizer
