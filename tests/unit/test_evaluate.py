"""A real evaluation of the tiny model, with and without an adapter, read back from its files."""

import json

import pandas as pd
import pytest

from conftest import run_lorarank
from lorarank.evaluation.evaluate import PRED_COLUMNS

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def adapter(warm_model, tmp_path_factory):
    """A LoRA adapter for the warm model with non-zero B, so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(warm_model / "final")
    pm = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "a"
    pm.save_pretrained(out)
    return out


def evaluate(model, data, out, *extra, check=True):
    return run_lorarank("evaluate", "--model", model, "--data", data, "--n", 24, "--seed", 1, "--batch-size", 8,
                        "--max-new-tokens", 48, "--quiet", "--out", out, *extra, check=check)


@pytest.fixture(scope="module")
def base_eval(warm_model, synth_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "base"
    evaluate(warm_model / "final", synth_data / "test.parquet", out)
    return out


def test_base_evaluation_files(base_eval, synth_data):
    from statsmodels.stats.proportion import proportion_confint

    preds = pd.read_parquet(base_eval / "predictions.parquet")
    m = json.loads((base_eval / "metrics.json").read_text())
    assert list(preds.columns) == PRED_COLUMNS and len(preds) == 24 == m["n"]
    test = pd.read_parquet(synth_data / "test.parquet").set_index("idx")
    assert (preds["gold"] == test.loc[preds["idx"], "gold"].to_numpy()).all()
    assert preds["completion"].str.len().gt(0).all()
    assert m["adapter"] is None and len(m["model"]["sha256"]) == 64
    assert m["identity"]["kind"] == "base" and m["identity"]["model"] == m["model"]
    for mode in ("strict", "flexible"):
        k = int(preds[f"correct_{mode}"].sum())
        assert m[f"accuracy_{mode}"] == k / 24
        assert m[f"ci95_{mode}"] == pytest.approx(list(proportion_confint(k, 24, method="wilson")), abs=1e-9)
    assert m["tokens_generated"] > 24 and m["questions_per_second"] > 0


def test_adapter_changes_outputs_on_the_same_questions(base_eval, warm_model, synth_data, adapter, tmp_path):
    evaluate(warm_model / "final", synth_data / "test.parquet", tmp_path / "ad", "--adapter", adapter)
    a = pd.read_parquet(base_eval / "predictions.parquet")
    b = pd.read_parquet(tmp_path / "ad" / "predictions.parquet")
    m = json.loads((tmp_path / "ad" / "metrics.json").read_text())
    assert a["idx"].tolist() == b["idx"].tolist()  # same subset for every arm: paired comparisons
    assert (a["completion"] != b["completion"]).any()
    assert m["adapter"]["sha256"] and m["subset_sha256"] == json.loads((base_eval / "metrics.json").read_text())["subset_sha256"]


def test_evaluation_is_deterministic(base_eval, warm_model, synth_data, tmp_path):
    evaluate(warm_model / "final", synth_data / "test.parquet", tmp_path / "again")
    pd.testing.assert_frame_equal(pd.read_parquet(base_eval / "predictions.parquet"),
                                  pd.read_parquet(tmp_path / "again" / "predictions.parquet"))


def test_batch_size_does_not_change_predictions(base_eval, warm_model, synth_data, adapter, tmp_path):
    """Why `evaluation.batch_size` is operational (changing it reruns nothing): left-padded batches of
    other sizes give the same greedy completions, with and without an adapter."""
    for extra in ([], ["--adapter", adapter]):
        a = tmp_path / f"a{len(extra)}"
        b = tmp_path / f"b{len(extra)}"
        run_lorarank("evaluate", "--model", warm_model / "final", "--data", synth_data / "test.parquet", "--n", 24,
                     "--seed", 1, "--batch-size", 24, "--max-new-tokens", 48, "--quiet", "--out", a, *extra)
        run_lorarank("evaluate", "--model", warm_model / "final", "--data", synth_data / "test.parquet", "--n", 24,
                     "--seed", 1, "--batch-size", 5, "--max-new-tokens", 48, "--quiet", "--out", b, *extra)
        pd.testing.assert_frame_equal(pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet"))


def _other_adapter(tmp_path):
    """An adapter for a model of another shape (hidden 96 instead of 64)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=500, hidden_size=96, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    pm = get_peft_model(Qwen2ForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    pm.save_pretrained(tmp_path / "other")
    return tmp_path / "other"


def _bad_data(tmp_path):
    pd.DataFrame({"text": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    return tmp_path / "bad.parquet"


@pytest.mark.parametrize("case,expected", [
    ("adapter for another model", "does not fit this model"),
    ("data without question/answer", "lacks column(s) question, answer"),
    ("n larger than the split", "--n 500 is larger than the split (64 questions)"),
])
def test_bad_input(case, expected, warm_model, synth_data, tmp_path):
    data, extra = synth_data / "test.parquet", []
    if case.startswith("adapter"):
        extra = ["--adapter", _other_adapter(tmp_path)]
    elif case.startswith("data"):
        data = _bad_data(tmp_path)
    out = tmp_path / "out"
    argv = ["evaluate", "--model", warm_model / "final", "--data", data, "--out", out, "--quiet", *extra]
    argv += ["--n", "500"] if case.startswith("n ") else ["--n", "8"]
    r = run_lorarank(*argv, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert expected in last and last.startswith("lorarank evaluate: error:")
    assert not out.exists()
