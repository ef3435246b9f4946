"""LoRA configs: exact parameter counts for published shapes, and PEFT-verified ranks per module."""

import json
import math

import pytest

from conftest import SHAPES, projection_dims
from lorarank.allocation import lora
from lorarank.models import loading as models
from lorarank.errors import UserError
from lorarank.study import DEFAULT_MODULES, AlphaPolicy


def make_alloc(cli, tmp_path, *argv):
    out = tmp_path / "alloc.json"
    code, _, err = cli("allocate", *argv, "--out", out)
    assert code == 0, err
    return str(out)


def closed_form(shape: dict, ranks_per_layer, modules=DEFAULT_MODULES) -> int:
    dims = projection_dims(shape)
    return sum(r * sum(dims[m][0] + dims[m][1] for m in modules) for r in ranks_per_layer)


def test_qwen25_15b_uniform_32_is_36929536(cli, tmp_path, model_json):
    alloc = make_alloc(cli, tmp_path, "--strategy", "uniform", "--budget", 896, "--num-layers", 28)
    out = tmp_path / "lora.json"
    code, stdout, err = cli("lora-config", "--allocation", alloc, "--model", model_json("qwen2.5-1.5b"),
                            "--out", out, "--verify")
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["expected_trainable_params"] == 36_929_536
    assert doc["verified"] is True and "36,929,536" in stdout
    assert len(doc["modules"]) == 196 and len(doc["lora_config"]["rank_pattern"]) == 196


def test_qwen25_15b_reduced_627(cli, tmp_path, model_json):
    alloc = make_alloc(cli, tmp_path, "--strategy", "random", "--budget", 627, "--num-layers", 28, "--seed", 3)
    doc = lora.lora_config(alloc, model_json("qwen2.5-1.5b"), check=True)
    ranks = json.load(open(alloc))["ranks"]
    assert sum(ranks) == 627
    assert doc["expected_trainable_params"] == closed_form(SHAPES["qwen2.5-1.5b"], ranks) == 25_842_432


@pytest.mark.parametrize("shape", ["llama-tiny", "mistral-tiny", "qwen3-tiny"])
@pytest.mark.parametrize("policy", ["ratio", "constant", "rslora"])
def test_generated_patterns_verify_on_other_decoders(cli, tmp_path, model_json, shape, policy):
    n = SHAPES[shape]["num_hidden_layers"]
    alloc = make_alloc(cli, tmp_path, "--strategy", "random", "--budget", 8 * n, "--num-layers", n,
                       "--low", 2, "--high", 14, "--alpha-policy", policy)
    doc = lora.lora_config(alloc, model_json(shape), check=True)
    ranks = json.load(open(alloc))["ranks"]
    assert doc["verified"] and doc["expected_trainable_params"] == closed_form(SHAPES[shape], ranks)
    by_name = {m["name"]: m for m in doc["modules"]}
    q3 = by_name[f"model.layers.{n - 1}.self_attn.q_proj"]
    assert q3["r"] == ranks[-1]
    if policy == "ratio":
        assert {m["scaling"] for m in doc["modules"]} == {2.0}
    elif policy == "rslora":
        assert math.isclose(q3["scaling"], q3["lora_alpha"] / math.sqrt(q3["r"]))
    else:
        assert len({m["scaling"] for m in doc["modules"]}) > 1  # constant alpha: scaling varies with r


def test_module_granularity_verifies(cli, tmp_path, model_json):
    ranks = [{"q_proj": 2, "k_proj": 4, "v_proj": 6, "o_proj": 8, "gate_proj": 1, "up_proj": 3, "down_proj": 4}] * 4
    f = tmp_path / "ranks.json"
    f.write_text(json.dumps(ranks))
    alloc = make_alloc(cli, tmp_path, "--strategy", "manual", "--granularity", "module", "--num-layers", 4,
                       "--ranks", f"@{f}")
    doc = lora.lora_config(alloc, model_json("llama-tiny"), check=True)
    got = {(m["layer"], m["module"]): m["r"] for m in doc["modules"]}
    assert got[(2, "v_proj")] == 6 and got[(3, "gate_proj")] == 1


def test_user_target_modules(cli, tmp_path, model_json):
    alloc = make_alloc(cli, tmp_path, "--strategy", "uniform", "--budget", 16, "--num-layers", 4)
    doc = lora.lora_config(alloc, model_json("llama-tiny"), target_modules=["q_proj", "v_proj"], check=True)
    assert doc["expected_trainable_params"] == closed_form(SHAPES["llama-tiny"], [4] * 4, ("q_proj", "v_proj"))
    assert {m["module"] for m in doc["modules"]} == {"q_proj", "v_proj"}


def test_keys_are_escaped_anchored_and_exact():
    key = lora.pattern_key("model.layers.1.self_attn.q_proj")
    from lorarank.allocation.patterns import peft_matches

    assert peft_matches(key, "model.layers.1.self_attn.q_proj")
    assert not peft_matches(key, "model.layers.10.self_attn.q_proj")
    assert not peft_matches(key, "model.layers.1Xself_attn.q_proj")
    assert not peft_matches(key, "foo.model.layers.1.self_attn.q_proj")


# --- the traps: a doc that promises one thing while PEFT does another must fail verification
def _doc(cli, tmp_path, model_json, shape="llama-tiny"):
    alloc = make_alloc(cli, tmp_path, "--strategy", "manual", "--num-layers", SHAPES[shape]["num_hidden_layers"],
                       "--ranks", ",".join(["4"] * SHAPES[shape]["num_hidden_layers"]))
    return lora.lora_config(alloc, model_json(shape))


def _verify(doc, model_json, shape="llama-tiny"):
    return lora.verify(doc, models.meta_model(models.load_config(model_json(shape))))


def test_unescaped_layer_key_is_caught_naming_the_module(cli, tmp_path, model_json):
    shape = "qwen2.5-1.5b"
    doc = _doc(cli, tmp_path, model_json, shape)
    # the study's trap, put first so that PEFT's first-match rule lets it win for layers 10-19
    doc["lora_config"]["rank_pattern"] = {"model.layers.1.*.q_proj": 2, **doc["lora_config"]["rank_pattern"]}
    with pytest.raises(UserError, match=r"11 module\(s\) differ.*layers\.1\.self_attn\.q_proj has r=2") as e:
        _verify(doc, model_json, shape)
    assert all(f"model.layers.{i}.self_attn.q_proj" in str(e.value) for i in [1] + list(range(10, 20)))
    assert "model.layers.2.self_attn.q_proj" not in str(e.value)


def test_glob_key_is_refused_as_peft_would(cli, tmp_path, model_json):
    doc = _doc(cli, tmp_path, model_json)
    doc["lora_config"]["rank_pattern"] = {"*.q_proj": 2}
    with pytest.raises(UserError, match="PEFT rejects"):
        _verify(doc, model_json)


def test_key_matching_nothing_falls_back_and_is_caught(cli, tmp_path, model_json):
    doc = _doc(cli, tmp_path, model_json)
    pattern = doc["lora_config"]["rank_pattern"]
    first = next(iter(pattern))
    pattern["^model\\.layer\\.0\\.self_attn\\.q_proj"] = pattern.pop(first)  # typo: 'layer'
    doc["lora_config"]["r"] = 8  # so the fallback differs from the promise
    with pytest.raises(UserError, match=r"model\.layers\.0\.self_attn\.q_proj has r=8"):
        _verify(doc, model_json)


def test_alpha_trap_is_caught(cli, tmp_path, model_json):
    doc = _doc(cli, tmp_path, model_json)
    doc["lora_config"]["alpha_pattern"] = {}
    doc["lora_config"]["lora_alpha"] = 16  # promise says alpha = 2r = 8
    with pytest.raises(UserError, match="alpha=16"):
        _verify(doc, model_json)


def test_trainable_count_mismatch_is_caught(cli, tmp_path, model_json):
    doc = _doc(cli, tmp_path, model_json)
    doc["expected_trainable_params"] += 1
    with pytest.raises(UserError, match="trainable parameters"):
        _verify(doc, model_json)


def test_enumeration_of_the_15b_shape_reads_no_weights(model_json):
    """Targets come from a meta-device model: no parameter has storage (its speed: benchmarks/lora_config.py)."""
    config = models.load_config(model_json("qwen2.5-1.5b"))
    _, targets = models.targets(config, list(DEFAULT_MODULES))
    assert len(targets) == 196
    meta = models.meta_model(config)
    assert {p.device.type for p in meta.parameters()} == {"meta"}


@pytest.mark.parametrize("name,value,alpha,scaling", [("ratio", 2.0, 16.0, 2.0), ("constant", 16.0, 16.0, 2.0),
                                                      ("rslora", 16.0, 16.0, 16.0 / math.sqrt(8))])
def test_alpha_policy_at_rank_8_and_its_file_shape(name, value, alpha, scaling):
    policy = AlphaPolicy.from_json({"name": name, "value": value})
    assert policy.alpha(8) == alpha and policy.scaling(8) == scaling
    assert policy.to_json() == {"name": name, "value": value}  # what allocation, lora and run files record


def test_unknown_alpha_policy_is_one_line():
    with pytest.raises(UserError, match=r"alpha policy 'sqrt' is unknown \(allowed: ratio, constant, rslora\)"):
        AlphaPolicy("sqrt", 1.0)
