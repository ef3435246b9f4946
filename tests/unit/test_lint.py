"""`snakemake --lint` is clean on every shipped config, as the Snakemake workflow catalog runs it (from the
repository root). Lint loads the workflow (schema, cross-field checks, every rule of that config) and runs
no job: about 4 s a config on 2 cores."""

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import GSM8K_DIR, ROOT, child_env

pytestmark = pytest.mark.dag  # a Snakemake process on the workflow

CONFIGS = sorted(Path(ROOT, "config").glob("*.yaml"))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda p: p.name)
def test_lint_is_clean(cfg, tmp_path):
    config = yaml.safe_load(cfg.read_text())
    if config["data"]["source"] == "local" and not Path(ROOT, config["data"]["path"]).is_dir():
        config["data"]["path"] = GSM8K_DIR  # the real GSM8K files, wherever this machine keeps them
        cfg = tmp_path / cfg.name
        cfg.write_text(yaml.safe_dump(config))
    r = subprocess.run(["snakemake", "--lint", "--configfile", str(cfg)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=child_env())
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Lints for" not in out, out[-6000:]
    assert "your workflow is in a good condition" in out, out[-2000:]
