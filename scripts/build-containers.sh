#!/usr/bin/env bash
# Build the Apptainer images (containers/<env>.def, from the hash-pinned envs/<env>.lock), name each
# by its own sha256, optionally push it to an OCI registry, record everything in
# containers/images.lock.json, and print the `containers:` lines for your config.
#
# Usage (from any directory, on a machine with Apptainer >= 1.1; building needs root or --fakeroot):
#   scripts/build-containers.sh                                   # both images, local SIF files
#   scripts/build-containers.sh --push oras://ghcr.io/ORG train  # push too; needs `oras` to read the digest
# Environment: APPTAINER_BUILD_ARGS (e.g. "--fakeroot") is passed to `apptainer build`.
set -euo pipefail
cd "$(dirname "$0")/.."
push="" envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --push) push=${2:?--push needs a registry, e.g. oras://ghcr.io/ORG}; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) envs+=("$1"); shift ;;
  esac
done
[ ${#envs[@]} -gt 0 ] || envs=(train analysis)
for env in "${envs[@]}"; do
  [ -f "containers/$env.def" ] || { echo "build-containers: no containers/$env.def (environments: train, analysis)" >&2; exit 2; }
done
command -v apptainer >/dev/null || { echo "build-containers: apptainer is not on PATH (see apptainer.org/docs/admin)" >&2; exit 2; }
if [ -n "$push" ]; then
  [[ "$push" == oras://* ]] || { echo "build-containers: --push $push is not an oras:// registry path" >&2; exit 2; }
  command -v oras >/dev/null || { echo "build-containers: --push needs the oras CLI (oras.land) to read the pushed digest" >&2; exit 2; }
fi
mkdir -p containers/sif
for env in "${envs[@]}"; do
  tmp="containers/sif/.lorarank-$env.build.sif"
  # shellcheck disable=SC2086
  apptainer build --force ${APPTAINER_BUILD_ARGS:-} "$tmp" "containers/$env.def"
  sha=$(sha256sum "$tmp" | cut -c1-64)
  sif="$PWD/containers/sif/lorarank-$env.sha256-$sha.sif"
  mv "$tmp" "$sif"
  ref="$sif"
  if [ -n "$push" ]; then
    repo="${push#oras://}/lorarank-$env"
    apptainer push "$sif" "oras://$repo:sha256-$sha"
    ref="oras://$repo@$(oras resolve "$repo:sha256-$sha")"
  fi
  python3 - "$env" "$sif" "$sha" "$ref" "$(apptainer --version)" <<'PY'
import datetime, hashlib, json, os, re, sys
env, sif, sha, ref, version = sys.argv[1:]
def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()
path = "containers/images.lock.json"
lock = json.load(open(path)) if os.path.exists(path) else {}
base = re.search(r"(?m)^From:\s*(\S+)", open(f"containers/{env}.def").read())[1]
lock[env] = {"reference": ref, "sif": os.path.basename(sif), "sif_sha256": sha, "base": base,
             "def_sha256": digest(f"containers/{env}.def"), "lock_sha256": digest(f"envs/{env}.lock"),
             "apptainer": version, "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(dict(sorted(lock.items())), f, indent=2)
    f.write("\n")
os.replace(tmp, path)
PY
done
echo "# containers/images.lock.json updated. Put these lines in your config (config/config.yaml or a copy):"
echo "containers:"
python3 - <<'PY'
import json
for env, rec in json.load(open("containers/images.lock.json")).items():
    print(f"  {env}: {rec['reference']}")
PY
