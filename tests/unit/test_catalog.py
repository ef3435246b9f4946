"""The Snakemake workflow catalog's "standardized usage" files: `.snakemake-workflow-catalog.yml` parses as the
catalog reads it and names what exists, and config/README.md documents every shipped config file (a config
added without a line there fails here)."""

import re
from pathlib import Path

import yaml

from conftest import ROOT

CATALOG = Path(ROOT, ".snakemake-workflow-catalog.yml")
CONFIG = Path(ROOT, "config")
README = CONFIG / "README.md"
DEPLOYMENT = {"conda", "apptainer", "apptainer+conda", "singularity", "singularity+conda"}


def test_the_catalog_file_is_a_mapping_of_the_keys_the_catalog_reads():
    settings = yaml.safe_load(CATALOG.read_text())  # the catalog: yaml.load(..., SafeLoader), a dict or nothing
    assert isinstance(settings, dict) and set(settings) == {"usage"}
    usage = settings["usage"]
    assert set(usage) <= {"mandatory-flags", "software-stack-deployment", "report"}
    flags = usage["mandatory-flags"]
    assert set(flags) == {"desc", "flags"} and isinstance(flags["desc"], str)
    assert isinstance(flags["flags"], (str, list))
    deployment = usage["software-stack-deployment"]
    assert set(deployment) <= DEPLOYMENT and all(isinstance(v, bool) for v in deployment.values())
    assert isinstance(usage["report"], bool)


def test_what_the_catalog_file_claims_is_there():
    text = CATALOG.read_text()
    usage = yaml.safe_load(text)["usage"]
    named = re.findall(r"\b((?:config|containers|envs|profiles|scripts|workflow)/[\w./-]*\w)", text)
    assert named and [p for p in named if not Path(ROOT, p).exists()] == []
    for profile in re.findall(r"--profile ([\w.-]*\w)", text):
        assert Path(ROOT, profile, "config.yaml").is_file(), profile
    if usage["report"]:  # `snakemake --report` needs a report directive and its captions
        report = re.search(r'^report:\s*"([^"]+)"', Path(ROOT, "workflow/Snakefile").read_text(), re.M)
        assert report and Path(ROOT, "workflow", report[1]).is_file()  # relative to the Snakefile
    deployment = usage["software-stack-deployment"]
    if deployment.get("apptainer"):  # only with images to run in
        shipped = yaml.safe_load(Path(CONFIG, "config.yaml").read_text())["containers"]
        assert all(shipped.values()), "apptainer: true, but config/config.yaml names no images"
    if deployment.get("conda"):
        assert sorted(p.name for p in Path(ROOT, "envs").glob("*.yaml")) == ["analysis.yaml", "train.yaml"]


def test_config_readme_documents_every_shipped_config_file():
    text = README.read_text()
    shipped = sorted(str(p.relative_to(CONFIG)) for p in CONFIG.rglob("*") if p.is_file() and p != README)
    assert len(shipped) >= 10
    assert [f for f in shipped if f"`{f}`" not in text] == []


def test_config_readme_names_only_files_that_exist():
    text = README.read_text()
    paths = [p for p in re.findall(r"`([\w./-]+\.(?:yaml|json|md|def|sh))`", text)]
    assert paths
    missing = [p for p in paths if not (CONFIG / p).exists() and not Path(ROOT, p).exists()]
    assert missing == []


def test_the_snakefile_is_where_the_catalog_looks():
    """The catalog looks for the Snakefile only in workflow/ when there is one (and skips a repository
    without it); `snakemake` from the root finds it there too, and the workflow profile beside it."""
    assert Path(ROOT, "workflow/Snakefile").is_file() and not Path(ROOT, "Snakefile").exists()
    assert Path(ROOT, "workflow/profiles/default/config.yaml").is_file()
