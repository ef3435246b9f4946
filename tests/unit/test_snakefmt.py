"""The rules as the Snakemake workflow catalog checks them: `snakefmt --check` on workflow/Snakefile and
workflow/rules/ (at the project's line length, pyproject.toml [tool.snakefmt]) changes nothing."""

import shutil
import subprocess
from pathlib import Path

from conftest import ROOT

TARGETS = ["workflow/Snakefile", "workflow/rules/"]


def snakefmt(*args, cwd=ROOT):
    return subprocess.run([shutil.which("snakefmt") or "snakefmt", "--check", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_rules_are_formatted():
    r = snakefmt(*TARGETS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_check_sees_a_misformatted_rule(tmp_path):
    """The check can fail: a rule file with one directive laid out as snakefmt would not."""
    (tmp_path / "workflow/rules").mkdir(parents=True)
    shutil.copy(Path(ROOT, "pyproject.toml"), tmp_path)
    shutil.copy(Path(ROOT, "workflow/Snakefile"), tmp_path / "workflow")
    rule = Path(ROOT, "workflow/rules/data.smk").read_text()
    (tmp_path / "workflow/rules/data.smk").write_text(rule.replace("    input:\n        ", "    input:    "))
    assert snakefmt(*TARGETS, cwd=tmp_path).returncode != 0
    (tmp_path / "workflow/rules/data.smk").write_text(rule)
    assert snakefmt(*TARGETS, cwd=tmp_path).returncode == 0
