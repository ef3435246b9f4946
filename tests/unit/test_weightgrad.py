"""The full-weight gradient G of each adapted projection: equal to autograd's dL/dW, and the mechanism it
exposes: a LoRA gradient norm follows s sqrt(r) whatever the loss wants, G does not move."""

import math

import numpy as np
import pytest
import torch

from lorarank.training import gradlog
from lorarank.training.profiler import GradProfiler
from lorarank.study import DEFAULT_MODULES, AlphaPolicy


def tiny_lora(dropout: float, seed: int = 0):
    """A 2-layer Qwen2 with LoRA (random B, so A gets gradients too) on all 7 projections, W made trainable
    so that autograd computes dL/dW beside the profiler."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    model = get_peft_model(Qwen2ForCausalLM(cfg), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(DEFAULT_MODULES), init_lora_weights=False))
    weights = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "base_layer") and name.rsplit(".", 1)[-1] in DEFAULT_MODULES:
            w = mod.get_base_layer().weight
            w.requires_grad_(True)
            layer = int(name.split("layers.")[1].split(".")[0])
            weights[(layer, name.rsplit(".", 1)[-1])] = w
    model.train()
    return model, weights


def batch(seed: int, pad: int = 0):
    """Three sequences, right-padded by `pad` extra positions that the loss ignores."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # ragged lengths
    if pad:
        ids = torch.cat([ids, torch.zeros(3, pad, dtype=ids.dtype)], 1)
        mask = torch.cat([mask, torch.zeros(3, pad, dtype=mask.dtype)], 1)
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def profile(model, profiler, steps: int, micro: int, pad: int = 0, weights=None):
    """Train-loop shape: per optimizer step `micro` backward passes; returns autograd's ||dL/dW|| per step."""
    autograd = []
    for step in range(1, steps + 1):
        profiler.begin(step)
        for m in range(micro):
            torch.manual_seed(100 * step + m)  # the same dropout masks whatever the padding
            (model(**batch(10 * step + m, pad)).loss / micro).backward()
        profiler.record(step)
        if weights:
            autograd.append({k: float(w.grad.norm()) for k, w in weights.items()})
        model.zero_grad(set_to_none=True)
    return autograd


@pytest.mark.parametrize("micro", [1, 2], ids=["one micro-batch", "gradient accumulation x2"])
def test_logged_G_equals_autograd_dL_dW_for_every_projection_with_dropout(micro):
    model, weights = tiny_lora(dropout=0.3)
    profiler = GradProfiler(model, list(DEFAULT_MODULES), accumulation_steps=micro)
    autograd = profile(model, profiler, steps=3, micro=micro, weights=weights)
    df = profiler.frame()
    g = df[df.matrix == "G"]
    assert set(g["module"]) == set(DEFAULT_MODULES) and sorted(g["step"].unique()) == [1, 2, 3]
    assert (g["rank"] == 4).all()
    for step, expected in enumerate(autograd, 1):
        got = g[g.step == step].set_index(["layer", "module"])["grad_norm"]
        for key, norm in expected.items():
            assert norm > 0
            np.testing.assert_allclose(got[key], norm, rtol=1e-5)


def test_padding_changes_nothing():
    model, _ = tiny_lora(dropout=0.0)
    a = GradProfiler(model, list(DEFAULT_MODULES))
    profile(model, a, steps=2, micro=1)
    a.weights.remove()
    b = GradProfiler(model, list(DEFAULT_MODULES))
    profile(model, b, steps=2, micro=1, pad=7)
    fa, fb = a.frame(), b.frame()
    assert (fa[fa.matrix == "G"]["grad_norm"] > 0).all() and len(fa[fa.matrix == "G"]) == 2 * 2 * 7
    np.testing.assert_allclose(fb[fb.matrix == "G"]["grad_norm"], fa[fa.matrix == "G"]["grad_norm"], rtol=1e-5)


def test_every_k_th_step_and_resume_keep_the_rows_apart(tmp_path):
    model, _ = tiny_lora(dropout=0.0)
    p = GradProfiler(model, list(DEFAULT_MODULES), weight_grad_every=2)
    profile(model, p, steps=4, micro=1)
    df = p.frame()
    assert sorted(df[df.matrix == "G"]["step"].unique()) == [1, 3]
    assert sorted(df[df.matrix == "A"]["step"].unique()) == [1, 2, 3, 4]
    df.to_parquet(tmp_path / "g.parquet")
    again = GradProfiler(model, list(DEFAULT_MODULES), weight_grad_every=2)
    again.load(tmp_path / "g.parquet")
    import pandas as pd

    pd.testing.assert_frame_equal(again.frame(), df)
    with pytest.raises(ValueError, match="every must be >= 1"):
        GradProfiler(model, list(DEFAULT_MODULES), weight_grad_every=0)


# --- the mechanism, demonstrated by the code itself ----------------------------------------------------
class Parallel(torch.nn.Module):
    """Layers that each apply the same frozen W to the same input against the same frozen random target:
    every layer's dL/dW is the same matrix, so any difference in measured importance comes from the adapter."""

    def __init__(self, n: int, d: int = 256):
        super().__init__()
        w = torch.randn(d, d) / math.sqrt(d)
        self.layers = torch.nn.ModuleList()
        for _ in range(n):
            block = torch.nn.Module()
            block.proj = torch.nn.Linear(d, d, bias=False)
            block.proj.weight.data.copy_(w)
            self.layers.append(block)
        self.register_buffer("x", torch.randn(64, d))
        self.register_buffer("target", torch.randn(64, d))

    def forward(self):
        return sum(((layer.proj(self.x) - self.target) ** 2).mean() for layer in self.layers)


RANKS = [2, 8, 32] * 4  # 12 layers, each rank four times (fresh random A each): share of a rank = group mean


def measured_shares(policy: str) -> dict[str, dict[int, float]]:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    pol = AlphaPolicy(policy, 2.0 if policy == "ratio" else 16.0)
    keys = {f"layers.{i}.proj": r for i, r in enumerate(RANKS)}
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["proj"], use_rslora=policy == "rslora",
                     rank_pattern={rf"^layers\.{i}\.proj": r for i, r in enumerate(RANKS)},
                     alpha_pattern={rf"^layers\.{i}\.proj": pol.alpha(r) for i, r in enumerate(RANKS)})
    model = get_peft_model(Parallel(len(RANKS)), cfg)
    for name, mod in model.named_modules():  # PEFT built what was asked
        if name.endswith("proj") and hasattr(mod, "r"):
            assert mod.r["default"] == keys["layers." + name.split("layers.", 1)[1]]
    profiler = GradProfiler(model, ["proj"])
    profiler.begin(1)
    model().backward()  # step 1: B = 0, the A/B norm is s ||G A^T||, G identical everywhere
    profiler.record(1)
    df = profiler.frame()
    out = {}
    for metric in ("lora", "weight"):
        s = gradlog.shares(gradlog.select(df, metric, pol.to_json()))
        out[metric] = {r: float(np.mean([s[i] for i, ri in enumerate(RANKS) if ri == r])) for r in (2, 8, 32)}
    return out


@pytest.mark.parametrize("policy,exponent", [("ratio", 0.5), ("constant", -0.5), ("rslora", 0.0)])
def test_lora_share_follows_s_sqrt_r_and_the_weight_share_does_not_move(policy, exponent):
    shares = measured_shares(policy)
    lora, weight = shares["lora"], shares["weight"]
    # r 2 -> 32 is x16: sqrt(r) predicts x4 under ratio, x1/4 under constant alpha, x1 under rsLoRA
    assert lora[32] / lora[2] == pytest.approx(16 ** exponent, rel=0.15)
    assert lora[8] / lora[2] == pytest.approx(4 ** exponent, rel=0.15)
    assert weight[32] / weight[2] == pytest.approx(1.0, rel=1e-5) and weight[8] / weight[2] == pytest.approx(1.0, rel=1e-5)
