"""`evaluation.n: all` (`--n all`): every question of the split, validated at each door, recorded as the
number evaluated."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import GSM8K_DIR, ROOT, gsm8k_rows, in_process
from lorarank import options, workflow_config
from lorarank.errors import UserError
from lorarank.evaluation.evaluate import EvalSettings, subset

SCHEMA = str(Path(ROOT, "workflow/schemas/config.schema.yaml"))


@pytest.fixture(scope="module")
def gsm8k_test(tmp_path_factory):
    """The real GSM8K test split, read as the evaluation reads a prepared split."""
    from lorarank.data.prepare import load_split

    path = tmp_path_factory.mktemp("gsm8k") / "test.parquet"
    pd.DataFrame(gsm8k_rows("test"))[["question", "answer"]].to_parquet(path)
    return load_split(path)


def test_all_is_the_whole_real_test_split_in_order(gsm8k_test):
    whole = subset(gsm8k_test, options.parse(EvalSettings, ["--n", "all", "--seed", "7"]))
    assert len(whole) == 1319 and whole["idx"].tolist() == list(range(1319))
    assert whole["question"].tolist() == [r["question"] for r in gsm8k_rows("test")]
    # the same questions as a draw of the split's size, at any seed: `all` is that number, named
    for seed in (0, 7):
        pd.testing.assert_frame_equal(whole, subset(gsm8k_test, EvalSettings(n=1319, seed=seed)))
    assert len(subset(gsm8k_test, EvalSettings(n=200))) == 200  # a number still draws


@pytest.mark.parametrize("value,message", [
    ("al", "argument --n: 'al' is not a number of questions (allowed: an integer >= 1, or all)"),
    ("0", "argument --n: 0 is not positive (allowed: an integer >= 1, or all)"),
    ("-3", "argument --n: -3 is not positive (allowed: an integer >= 1, or all)"),
    ("1.5", "argument --n: '1.5' is not a number of questions (allowed: an integer >= 1, or all)"),
    ("ALL", "argument --n: 'ALL' is not a number of questions (allowed: an integer >= 1, or all)"),
])
def test_a_bad_flag_is_refused_in_one_line(value, message, cli):
    with pytest.raises(UserError) as e:
        options.parse(EvalSettings, ["--n", value])
    assert str(e.value) == message
    code, out, err = cli("evaluate", "--model", "m", "--data", "d", "--out", "o", "--n", value)
    assert code == 2 and err.strip() == f"lorarank evaluate: error: {message}"


@pytest.mark.parametrize("n", ["al", 0, -3, 1.5, True, "1319", None])
def test_a_bad_config_value_is_refused_in_one_line_naming_the_key(n):
    config = yaml.safe_load(Path(ROOT, "config/config.yaml").read_text())
    config.setdefault("evaluation", {})["n"] = n
    with pytest.raises(UserError) as e:
        workflow_config.check_schema(config, SCHEMA)
    msg = str(e.value)
    assert msg.startswith(f"evaluation.n: {n!r} ") and "\n" not in msg
    assert any(s in msg for s in ("'^all$'", "minimum of 1", "'integer', 'string'")), msg  # what is allowed


def test_a_library_caller_gets_the_same_refusal():
    allowed = r"\(allowed: an integer >= 1, or all\)$"
    with pytest.raises(UserError, match=r"^--n 'half' is not a number of questions " + allowed):
        EvalSettings(n="half").check(10)
    with pytest.raises(UserError, match=r"^--n 0 is not a number of questions " + allowed):
        EvalSettings(n=0).check()
    with pytest.raises(UserError, match=r"^--n 11 is larger than the split \(10 questions\)$"):
        EvalSettings(n=11).check(10)
    EvalSettings(n="all").check(10)


def test_the_config_passes_all_to_the_command_and_checks_numbers_against_the_split(tmp_path):
    from snakemake.utils import validate

    config = yaml.safe_load(Path(ROOT, "config/paper.yaml").read_text())
    assert config["evaluation"]["n"] == "all"  # the study evaluates the whole test split
    config["data"] = {**config["data"], "source": "local", "path": GSM8K_DIR}
    workflow_config.check_schema(config, SCHEMA)
    validate(config, SCHEMA)
    workflow_config.check(config)
    assert "--n all " in workflow_config.flags(config, "evaluate_model") + " "
    assert workflow_config.settings(config, "evaluate_model").n == "all"
    config["evaluation"]["n"] = 1320
    with pytest.raises(UserError, match=r"^evaluation.n 1320 is larger than the split \(1319 questions\)$"):
        workflow_config.check(config)


def test_metrics_record_the_number_evaluated(tiny_model, synth_data, tmp_path):
    """A real evaluation with --n all: metrics.json's n is the split's size, its settings keep what was asked."""
    assert in_process("evaluate", "--model", tiny_model, "--data", synth_data / "test.parquet", "--n", "all",
                      "--max-new-tokens", 2, "--batch-size", 64, "--quiet", "--out", tmp_path) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    preds = pd.read_parquet(tmp_path / "predictions.parquet")
    split = pd.read_parquet(synth_data / "test.parquet")
    assert m["n"] == len(preds) == len(split) == 64 and m["settings"]["n"] == "all"
    assert preds["idx"].tolist() == split["idx"].tolist()
