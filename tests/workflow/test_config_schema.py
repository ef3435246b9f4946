"""The config files, the JSON schema and the commands' flags stay in sync: every key typed, described,
defaulted, and each key a command reads is that command's flag with the same default."""

import argparse
import dataclasses
from pathlib import Path

import jsonschema
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import GSM8K_DIR
from lorarank import options, workflow_config
from lorarank.cli import build_parser
from lorarank.training.regimes import REGIMES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "workflow/schemas/config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
# rule -> command (the flags a rule passes are parsed by this command's parser)
COMMAND_OF = {"prepare_data": "prepare-data", "import_model": "import-model", "fetch_model": "fetch-model",
              "build_model": "build-model", "run_warmup": "sft", "evaluate_model": "evaluate",
              "allocate_ranks": "allocate", "write_lora_config": "lora-config", "summarize_results": "summarize",
              **{r.rule: r.command for r in REGIMES.values()}}
# schema defaults that differ from the flag's default on purpose, and why
DIFFERENT_DEFAULTS = {
    "allocation.budget": "required on the command line (no budget fits every model); the schema's 32 is the "
                         "default tiny model's 4 layers x 8",
}


def walk(schema, path=""):
    for key, sub in schema.get("properties", {}).items():
        name = f"{path}.{key}" if path else key
        yield name, sub
        yield from walk(sub, name)


KEYS = dict(walk(SCHEMA))


@pytest.mark.parametrize("name", list(KEYS))
def test_every_key_is_typed_described_defaulted(name):
    sub = KEYS[name]
    assert "type" in sub, f"{name} has no type"
    assert isinstance(sub.get("description"), str) and sub["description"], f"{name} has no description"
    assert "default" in sub, f"{name} has no default"


def nulls(node, path=""):
    """Keys whose value is null anywhere in the schema, except a `default` (a YAML slip such as an
    unquoted comma in a flow mapping turns text into a stray key with a null value)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if v is None and k != "default":
                yield f"{path}.{k}"
            yield from nulls(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from nulls(v, f"{path}[{i}]")


def test_the_schema_has_no_stray_null_keys():
    assert list(nulls(SCHEMA)) == []


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("cfg", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_pass_the_cross_field_checks(cfg):
    config = yaml.safe_load(cfg.read_text())
    validate(config, str(SCHEMA_PATH))
    if config["data"]["source"] == "local":  # ../shared/data/gsm8k from a checkout: wherever the tests find it
        assert config["data"]["path"] == "../shared/data/gsm8k"
        config["data"]["path"] = GSM8K_DIR
    workflow_config.check(config)


def test_the_schema_names_experiments_by_the_one_rule():
    from lorarank import names

    assert yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["experiment"]["pattern"] == names.EXPERIMENT.pattern
    for bad in (".", "..", ".hidden", "-flag", "a/b", "a b", ""):
        assert names.experiment_problem(bad) and not names.EXPERIMENT.match(bad)
    assert names.experiment_problem("paper_v1.2-rerun") is None


def test_a_bad_value_is_refused_naming_the_key():
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["allocation"]["budget"] = "many"
    with pytest.raises(WorkflowError) as e:  # Snakemake's own validation: its text names the key and value
        validate(cfg, str(SCHEMA_PATH))
    assert "'many' is not of type 'integer'" in str(e.value) and "budget" in str(e.value)
    with pytest.raises(workflow_config.UserError) as e:  # what the Snakefile shows first: one line
        workflow_config.load(cfg, str(SCHEMA_PATH))
    assert str(e.value) == "allocation.budget: 'many' is not of type 'integer'"


@pytest.mark.parametrize("value", ["null", "gpu;rm -rf x", "", "a b"])
def test_a_site_name_is_a_slurm_name_and_never_the_word_null(value):
    """`--config 'slurm={partition: null}'` reaches the workflow as the text "null" (Snakemake reads --config values
    as text): refused rather than sent to sbatch as a partition named null."""
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate({**cfg, "slurm": {"partition": "gpu", "account": "lab-1.x"}}, str(SCHEMA_PATH))
    with pytest.raises(workflow_config.UserError, match=r"slurm\.partition"):
        workflow_config.check_schema({**cfg, "slurm": {"partition": value}}, str(SCHEMA_PATH))


def flag_defaults(command: str) -> dict[str, object]:
    """dest -> default, from the command's real parser."""
    parser = build_parser([command])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {a.dest: a.default for a in sub._actions}


WIRED = [(rule, key, field) for rule, (_, keys) in workflow_config.WIRING.items() for key, field in keys.items()]
# the numerics profile: one config section, a flag of every compute rule's command
WIRED += [(rule, key, field) for rule in workflow_config.COMPUTE_RULES for key, field in workflow_config.NUMERICS[1].items()]


@pytest.mark.parametrize("rule,key,field", WIRED, ids=[f"{r}:{k}" for r, k, _ in WIRED])
def test_every_wired_key_is_a_flag_with_the_schema_default(rule, key, field):
    assert key in KEYS, f"{key} is wired to {rule} but not in the schema"
    defaults = flag_defaults(COMMAND_OF[rule])
    assert field in defaults, f"{key}: `lorarank {COMMAND_OF[rule]}` has no flag for {field!r}"
    if key not in DIFFERENT_DEFAULTS:
        flag, schema = defaults[field], KEYS[key]["default"]
        assert (flag if flag not in (None, []) else None) == (schema if schema not in (None, []) else None), \
            f"{key}: schema default {schema!r}, flag default {flag!r}"


def test_every_schema_key_is_wired_or_read_by_the_workflow():
    wired = {key for _, key, _ in WIRED}
    assert {k for k in KEYS if k not in wired and k not in workflow_config.WORKFLOW_KEYS} == set()
    assert not wired & set(workflow_config.WORKFLOW_KEYS)


@pytest.mark.parametrize("cfg", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_flags_parse_back_to_the_config_values(cfg):
    """What a rule passes is what its command reads: every wired, read value survives the round trip."""
    config = yaml.safe_load(cfg.read_text())
    validate(config, str(SCHEMA_PATH))  # fills the schema defaults, as the workflow does
    model_rules = {"build_model", "run_warmup", "import_model", "fetch_model"}
    for rule, (cls, keys) in workflow_config.WIRING.items():
        if rule in model_rules and rule not in workflow_config.model_rules(config):
            continue  # e.g. no GGUF keys in a tiny-model config
        extra = {"strategy": "random"} if rule == "allocate_ranks" else {}
        got = workflow_config.settings(config, rule, **extra)
        values = workflow_config.values(config, rule, **extra)
        for key, field in keys.items():
            if options.reads(cls, field, values) and values[field] not in (None, []):
                assert getattr(got, field) == values[field], (rule, key)


def test_operational_settings_stay_out_of_the_result_flags():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(config, str(SCHEMA_PATH))  # a section the file leaves out gets its defaults
    for rule, (cls, _) in workflow_config.WIRING.items():
        extra = {"strategy": "uniform"} if rule == "allocate_ranks" else {}
        result = workflow_config.flags(config, rule, **extra)
        ops = workflow_config.flags(config, rule, operational=True, **extra)
        for f in dataclasses.fields(cls):
            flag = options.flag_name(f.name) + " "
            if f.metadata.get("operational"):
                assert flag not in result + " "
            else:
                assert flag not in ops + " "
    assert "--save-steps" in workflow_config.flags(config, "train_grpo", operational=True)
    assert "--batch-size" in workflow_config.flags(config, "evaluate_model", operational=True)


def test_the_archived_config_leaves_out_exactly_the_operational_keys():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    kept = workflow_config.result_config(config)
    assert workflow_config.operational_keys() == sorted(["evaluation.batch_size", "warmup.save_steps", "report_to",
                                                          *(f"{r}.save_steps" for r in REGIMES)])
    assert "save_steps" not in kept["grpo"] and "batch_size" not in kept["evaluation"]
    assert kept["grpo"]["steps"] == config["grpo"]["steps"] and "save_steps" in config["grpo"]  # a copy
    # and the site's section: another site reruns the same study with its own partitions
    sited = workflow_config.result_config({**config, "slurm": {"partition": "gpu", "gpu_partition": None, "account": "x"}})
    assert "slurm" not in sited and sited == kept


def test_the_compute_rules_are_the_commands_that_apply_the_numerics_profile():
    from lorarank.cli import COMPUTE

    assert {COMMAND_OF[rule] for rule in workflow_config.COMPUTE_RULES} == set(COMPUTE)
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    validate(config, str(SCHEMA_PATH))
    for rule in workflow_config.WIRING:
        has = "--kernels portable --threads 2 --deterministic" in workflow_config.flags(config, rule, strategy="uniform")
        assert has == (rule in workflow_config.COMPUTE_RULES), rule
