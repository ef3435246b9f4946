"""The config files and the JSON schema stay in sync: every key typed, described, defaulted."""

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def walk(schema, path="config"):
    for key, sub in schema.get("properties", {}).items():
        yield f"{path}.{key}", sub
        yield from walk(sub, f"{path}.{key}")


@pytest.mark.parametrize("name,sub", list(walk(SCHEMA)), ids=[p for p, _ in walk(SCHEMA)])
def test_every_key_is_typed_described_defaulted(name, sub):
    assert "type" in sub, f"{name} has no type"
    assert sub.get("description"), f"{name} has no description"
    assert "default" in sub, f"{name} has no default"


@pytest.mark.parametrize("cfg", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(cfg):
    validate(yaml.safe_load(cfg.read_text()), str(ROOT / "workflow/schemas/config.schema.yaml"))


def test_a_bad_value_is_refused_naming_the_key():
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg["allocation"]["budget"] = "many"
    with pytest.raises(Exception, match="budget|many"):
        validate(cfg, str(ROOT / "workflow/schemas/config.schema.yaml"))
