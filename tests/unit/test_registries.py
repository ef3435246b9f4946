"""The schema's enums are the registries in code: what exists in code cannot be missing from the config,
nor the other way round."""

from pathlib import Path

import yaml

from lorarank.training import gradmetrics

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml").read_text())
ALLOCATION = SCHEMA["properties"]["allocation"]["properties"]


def test_the_schema_metric_enum_is_the_metric_table():
    assert ALLOCATION["metric"]["enum"] == list(gradmetrics.ALLOCATES)


def test_the_schema_regimes_are_the_regime_registry():
    """Every regime in code is a config choice with a config section wired to its settings, and has a command
    whose recipe names it: adding one is an entry in `lorarank.training.regimes`, its module and its schema section."""
    import dataclasses
    import importlib

    from lorarank import cli, workflow_config
    from lorarank.training.regimes import REGIMES, settings_class

    props = SCHEMA["properties"]
    assert props["regimes"]["items"]["enum"] == list(REGIMES)
    for name, regime in REGIMES.items():
        assert set(regime.wired) <= set(props[name]["properties"])
        assert set(regime.wired) <= {f.name for f in dataclasses.fields(settings_class(name))}
        assert cli.COMMANDS[regime.command][0] == regime.module and regime.command in cli.COMPUTE
        assert importlib.import_module(regime.module).RECIPE.regime == name
        assert regime.rule in workflow_config.WIRING and regime.rule in workflow_config.COMPUTE_RULES


def test_the_schema_strategies_and_alpha_policies_are_the_registries():
    from lorarank.allocation.strategies import STRATEGIES
    from lorarank.study import ALPHA_POLICIES

    assert ALLOCATION["strategies"]["items"]["enum"] == list(STRATEGIES)
    assert ALLOCATION["alpha_policies"]["items"]["enum"] == list(ALPHA_POLICIES)


def test_the_workflow_asks_the_strategy_registry():
    """common.smk keeps no copy of the profiled strategies and names no strategy that reads a rank log: which
    arm reads which run's log comes from `lorarank.allocation.strategies`."""
    import re

    from lorarank.allocation.strategies import STRATEGIES

    text = (Path(__file__).resolve().parents[2] / "workflow/rules/common.smk").read_text()
    assert re.search(r"^from lorarank\.allocation\.strategies import .*\bPROFILED\b", text, re.M)
    assert not re.search(r"^PROFILED\s*=", text, re.M)
    readers = [name for name, s in STRATEGIES.items() if s.profile or s.rank_log]
    assert readers and not [name for name in readers if re.search(rf"[\"']{name}[\"']", text)]


def test_help_lists_the_commands_in_pipeline_order():
    """README: `lorarank --help` lists the commands in pipeline order: each stage's command before the commands
    that read its outputs (utilities such as progress or fingerprint may sit anywhere)."""
    import re

    from lorarank.cli import build_parser

    listed = re.findall(r"^    ([a-z-]+)\s", build_parser().format_help(), re.M)
    stage = {"prepare-data": 0, "build-model": 1, "fetch-model": 1, "import-model": 1, "allocate": 2,
             "lora-config": 3, "sft": 4, "train": 4, "evaluate": 5, "select-rate": 6, "analyze": 7, "summarize": 8,
             "combine-bases": 9, "archive": 10, "verify-archive": 11, "check-run": 12}
    order = [stage[c] for c in listed if c in stage]
    assert len(order) == len(stage) and order == sorted(order), listed
