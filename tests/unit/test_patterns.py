"""check-pattern: every PEFT trap (docs/design.md, "PEFT") is reproduced against PEFT itself and flagged."""

import json
import warnings

import pytest

from lorarank.models import loading as models
from lorarank.allocation.patterns import format_ranges


def peft_ranks(model_json, shape, rank_pattern, default_r=4):
    """What PEFT really does with a rank_pattern: {module path: r}."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    model = models.meta_model(models.load_config(model_json(shape)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = get_peft_model(model, LoraConfig(r=default_r, target_modules=["q_proj"], rank_pattern=rank_pattern))
    return {n: m.r["default"] for n, m in pm.base_model.model.named_modules() if isinstance(m, LoraLayer)}


def check(cli, tmp_path, model, pattern, *extra):
    f = tmp_path / "pattern.json"
    f.write_text(json.dumps(pattern))
    return cli("check-pattern", "--model", model, "--pattern", f, *extra)


def test_layer_key_hitting_ten_more_layers(cli, tmp_path, model_json):
    key = "model.layers.1.*.q_proj"
    real = peft_ranks(model_json, "qwen2.5-1.5b", {key: 2})
    hit = sorted(int(n.split(".")[2]) for n, r in real.items() if r == 2)
    assert hit == [1] + list(range(10, 20))  # the trap, in PEFT itself
    code, out, _ = check(cli, tmp_path, model_json("qwen2.5-1.5b"), {"rank_pattern": {key: 2}}, "--target-modules", "q_proj")
    assert code == 1
    assert "multi-layer" in out and "layer(s) 1, 10-19" in out and "glob" in out


def test_glob_key_is_an_invalid_regex(cli, tmp_path, model_json):
    import re

    with pytest.raises(re.error):
        peft_ranks(model_json, "llama-tiny", {"*.q_proj": 2})
    code, out, _ = check(cli, tmp_path, model_json("llama-tiny"), {"*.q_proj": 2})
    assert code == 1 and "invalid-regex" in out and "position 0" in out and "glob" in out


def test_key_matching_nothing_falls_back_silently(cli, tmp_path, model_json):
    key = "model.layers.9.self_attn.q_proj"  # llama-tiny has 4 layers
    assert set(peft_ranks(model_json, "llama-tiny", {key: 2}).values()) == {4}
    code, out, _ = check(cli, tmp_path, model_json("llama-tiny"), {key: 2})
    assert code == 1 and "no-match" in out


def test_result_depends_on_dict_order(cli, tmp_path, model_json):
    a, b = r"^model\.layers\.0\.self_attn\.q_proj", "q_proj"
    first = peft_ranks(model_json, "llama-tiny", {a: 2, b: 6})
    second = peft_ranks(model_json, "llama-tiny", {b: 6, a: 2})
    assert first["model.layers.0.self_attn.q_proj"] == 2 and second["model.layers.0.self_attn.q_proj"] == 6
    code, out, _ = check(cli, tmp_path, model_json("llama-tiny"), {a: 2, b: 6})
    assert code == 1 and "order-dependent" in out


def test_same_value_overlap_is_not_a_finding(cli, tmp_path, model_json):
    code, out, _ = check(cli, tmp_path, model_json("llama-tiny"), {r"^model\.layers\.0\.self_attn\.q_proj": 6, "q_proj": 6})
    assert code == 0 and "0 finding(s)" in out


def test_generated_config_is_clean(cli, tmp_path, model_json):
    alloc, lcfg = tmp_path / "a.json", tmp_path / "l.json"
    assert cli("allocate", "--strategy", "random", "--budget", 40, "--num-layers", 4, "--low", 2, "--high", 18,
               "--out", alloc)[0] == 0
    assert cli("lora-config", "--allocation", alloc, "--model", model_json("llama-tiny"), "--out", lcfg)[0] == 0
    code, out, _ = cli("check-pattern", "--model", model_json("llama-tiny"), "--pattern", lcfg)
    assert code == 0, out
    assert out.count("1 module(s)") == 56  # 28 rank + 28 alpha keys, each hitting exactly one module


def test_format_ranges():
    assert format_ranges([19, 1, 10, 11, 12, 13, 14, 15, 16, 17, 18]) == "1, 10-19"
    assert format_ranges([]) == ""
