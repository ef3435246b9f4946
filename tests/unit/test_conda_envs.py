"""The conda environments (envs/<env>.yaml, for `--sdm conda`) install what the images install: the same
Python, every package of the same lock at the same version and sha256, the no-dependency packages without
their dependencies, the same fixed variables. Checked against the def and the lock directly, not against
the script that writes them, so that neither can drift."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from lorarank.provenance.containers import ENVIRONMENTS

LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)$")


def pins(lines) -> dict[str, tuple[str, frozenset]]:
    """name -> (version, hashes) of requirement lines `name==version --hash=sha256:...`."""
    out = {}
    for line in lines:
        m = LINE.match(" ".join(line.split()))
        assert m, f"not pinned with == and hashes: {line[:80]}"
        out[m[1].lower()] = (m[2], frozenset(re.findall(r"[0-9a-f]{64}", m[3])))
    return out


def lock(env: str) -> dict[str, tuple[str, frozenset]]:
    text = re.sub(r"\\\n", " ", Path(ROOT, f"envs/{env}.lock").read_text())
    return pins(line.split("#", 1)[0] for line in text.splitlines() if line.split("#", 1)[0].strip())


def deffile(env: str) -> str:
    return Path(ROOT, f"containers/{env}.def").read_text()


def test_the_files_are_what_the_defs_and_locks_give():
    r = subprocess.run([sys.executable, "scripts/conda-envs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_installs_exactly_what_its_image_installs(env):
    spec = yaml.safe_load(Path(ROOT, f"envs/{env}.yaml").read_text())
    deps = spec["dependencies"]
    pip = [d["pip"] for d in deps if isinstance(d, dict)]
    assert len(pip) == 1 and "pip" in deps
    # the lock's packages that the image installs without their dependencies go through the post-deploy script,
    # which Snakemake runs after creating the environment, with the image's own pip flags
    nodeps_in = Path(ROOT, f"envs/{env}.nodeps.in")
    nodeps = {line.split("==")[0].lower() for line in nodeps_in.read_text().splitlines()
              if line.strip() and not line.startswith("#")} if nodeps_in.is_file() else set()
    post = Path(ROOT, f"envs/{env}.post-deploy.sh")
    later = {}
    if nodeps:
        script = post.read_text()
        later = pins(script.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0].splitlines())
        assert "pip install --no-cache-dir --no-deps --require-hashes" in script and "pip check" in script
    else:
        assert not post.exists()
    first = pins(pip[0])
    assert set(later) == nodeps and not set(first) & set(later)
    assert {**first, **later} == lock(env)  # every package, version and hash of the lock; nothing else
    # the base image's Python, its Debian packages, the variables it fixes
    python = re.search(r"^From:\s*python:(\d+\.\d+)-", deffile(env), re.M)[1]
    assert f"python={python}" in deps
    for package in re.findall(r"apt-get install -y --no-install-recommends ([\w .+-]+)", deffile(env)):
        assert set(package.split()) <= {d for d in deps if isinstance(d, str)}, package
    fixed = dict(re.findall(r"^\s*export ([A-Z_]+)=(\w+)$", deffile(env), re.M))
    assert fixed and spec.get("variables") == fixed
    assert spec["channels"] == ["conda-forge", "nodefaults"]


def test_every_rule_names_the_conda_environment_of_its_image():
    """`conda: environment(X)` beside each `container: image(X)`: the same software either way, and every rule
    has a software definition whether or not images are configured (`snakemake --lint`, tests/unit/test_lint.py)."""
    seen = 0
    for smk in Path(ROOT, "workflow/rules").glob("*.smk"):
        # named rules, checkpoints, and the train rules' `rule:` with a `name:` directive
        for block in re.split(r"(?m)^[ \t]*(?=(?:rule|checkpoint)(?: \w+)?:\n)", smk.read_text())[1:]:
            head = block.split(":", 1)[0].split()
            name = head[1] if len(head) > 1 else re.search(r"name:\s+(\S+)", block)[1]
            if not re.search(r"\n\s+shell:", block):
                continue
            image = re.search(r"container:\n\s+image\(([^)]+)\)", block)
            assert image, f"{smk.name}: rule {name} names no image"
            assert re.search(rf"conda:\n\s+environment\({re.escape(image[1])}\)", block), \
                f"{smk.name}: rule {name} has no `conda: environment({image[1]})`"
            seen += 1
    assert seen == 15  # every shell rule: 13 named ones, the select_rate checkpoint, the train rules' template (a loop)
