"""Container images: which environment each command runs in, and which references are pinned.

Every rule runs in one of two images (containers/train.def, containers/analysis.def), named in the
config under `containers:` by an immutable reference. Snakemake's software-environment rerun
trigger hashes the reference string, not the image: only a digest makes "same reference" mean
"same image", so a mutable tag (`:latest`, `:v1`) is refused. Standard library only (with lorarank.io): the
Snakefile imports this before anything is installed.

>>> check_reference("train", "oras://ghcr.io/lab/lorarank-train@sha256:" + "0" * 64)[:8]
'oras://g'
>>> check_reference("train", "docker://python:3.11")
Traceback (most recent call last):
...
ValueError: containers.train: 'docker://python:3.11' is not pinned by digest (allowed: docker://... or oras://...@sha256:<64 hex>, library://...:sha256.<64 hex>, or a local PATH.sha256-<64 hex>.sif written by scripts/build-containers.sh)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from lorarank.io import sha256_file
from lorarank.training.regimes import REGIMES

ENVIRONMENTS = ("train", "analysis")

# command -> the environment (image) it runs in; the rules and the code fingerprints both read this.
COMMAND_ENV = {
    "prepare-data": "train", "build-model": "train", "import-model": "train", "fetch-model": "train", "allocate": "train", "lora-config": "train",
    "check-pattern": "train", "evaluate": "train", **{r.command: "train" for r in REGIMES.values()},
    "select-rate": "analysis", "analyze": "analysis", "summarize": "analysis", "combine-bases": "analysis", "archive": "analysis", "verify-archive": "analysis", "check-run": "analysis",
    "fingerprint": "analysis", "progress": "analysis",
}

_HEX = r"[0-9a-f]{64}"
PINNED = (
    re.compile(rf"^(docker|oras)://[^\s@]+@sha256:{_HEX}$"),
    re.compile(rf"^library://[^\s@]+:sha256\.{_HEX}$"),
    # a local image named by its own sha256 (scripts/build-containers.sh names it so; the archive
    # checks that the name still matches the content)
    re.compile(rf"^(?!\w+://)[^\s]*\.sha256-{_HEX}\.sif$"),
)
ALLOWED = ("docker://... or oras://...@sha256:<64 hex>, library://...:sha256.<64 hex>, "
           "or a local PATH.sha256-<64 hex>.sif written by scripts/build-containers.sh")


def check_reference(env: str, ref) -> str:
    """`ref` if it names one immutable image, else ValueError naming the value and what is allowed."""
    if not isinstance(ref, str) or not any(p.fullmatch(ref) for p in PINNED):  # `$` alone lets a final "\n" by
        raise ValueError(f"containers.{env}: {ref!r} is not pinned by digest (allowed: {ALLOWED})")
    return ref


def digest(ref: str) -> str:
    """The sha256 a pinned reference names."""
    return re.search(_HEX + r"(?=(\.sif)?$)", ref).group(0)


def references(containers: dict, required: bool) -> dict[str, str | None]:
    """environment -> checked reference (None where unset). With `required` (Snakemake was asked
    for --sdm apptainer) an unset environment is an error: running it on the host would be silent."""
    unknown = sorted(set(containers) - set(ENVIRONMENTS))
    if unknown:
        raise ValueError(f"containers.{unknown[0]}: unknown environment (allowed: {', '.join(ENVIRONMENTS)})")
    refs = {}
    for env in ENVIRONMENTS:
        ref = containers.get(env)
        if ref is None and required:
            raise ValueError(f"containers.{env} is not set, and --sdm apptainer needs an image for every "
                             f"environment: build them (scripts/build-containers.sh) and set the references it prints")
        refs[env] = None if ref is None else check_reference(env, ref)
    return refs


def stale(root: str | Path, refs: dict[str, str | None]) -> list[str]:
    """Warnings for configured images that containers/images.lock.json says were built from a
    different def file or lock than the checkout's: the digest still pins the old image."""
    root = Path(root)
    lock_file = root / "containers/images.lock.json"
    if not lock_file.is_file():
        return []
    lock = json.loads(lock_file.read_text())
    out = []
    for env, ref in refs.items():
        built = lock.get(env) or {}
        if ref is None or built.get("reference") != ref:
            continue
        for key, path in (("def_sha256", f"containers/{env}.def"), ("lock_sha256", f"envs/{env}.lock")):
            if (root / path).is_file() and sha256_file(root / path) != built.get(key):
                out.append(f"{path} changed since the image in containers.{env} was built: it still runs the old "
                           f"environment (rebuild: scripts/build-containers.sh {env})")
    return out


# What a job in an image sees of the host. The Slurm profile runs Apptainer with --cleanenv: host variables
# (a user's PYTHONPATH, LD_LIBRARY_PATH, conda's, OMP_*) would otherwise reach the pinned image and change what
# runs. A job gets these, by name, as APPTAINERENV_<NAME>, where the process that plans it has them: the GPUs
# Slurm gave the job (the Snakefile is read again inside each Slurm job), the hub's token and endpoint for
# fetch_model, the site's proxies, and every variable of the prefixes below (NCCL's network settings for
# multi-GPU jobs, the trackers' keys and projects). Everything else a job needs is on its command line (offline
# flags) or set by the command itself (the numerics profile). A user passes anything more the same way:
# `export APPTAINERENV_NAME=value` (Apptainer's own convention).
PASSED_ENV = ("CUDA_VISIBLE_DEVICES", "HF_TOKEN", "HF_ENDPOINT",
              "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
PASSED_PREFIXES = ("NCCL_", "WANDB_", "TRACKIO_")
# Variables that name a host path: passed only where the path exists, and then bound too (`env_paths`), since
# an unbound path is not there inside: the hub's cache, the job's scratch (Slurm's TMPDIR, which the
# image's build caches live under), a site's CA bundle (for a TLS-intercepting proxy)
PATH_ENV = ("HF_HOME", "HF_HUB_CACHE", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def passed_env(environ: dict[str, str]) -> dict[str, str]:
    """APPTAINERENV_<NAME> for each variable a job gets (never printed: it may hold a token)."""
    names = [*PASSED_ENV, *(k for k in environ if k.startswith(PASSED_PREFIXES)), *env_paths(environ)]
    return {f"APPTAINERENV_{k}": environ[k] for k in names if k in environ}


def env_paths(environ: dict[str, str]) -> dict[str, str]:
    """Of PATH_ENV, the variables `environ` sets to an existing path: name -> path (what `binds` mounts)."""
    return {k: environ[k] for k in PATH_ENV if environ.get(k) and Path(environ[k]).exists()}


def binds(paths: dict[str, str], visible: list[str]) -> list[str]:
    """Apptainer bind specs (`host:container`) for the local inputs a job reads that lie outside the
    directories it already sees (`visible`: the checkout and the working directory, which Apptainer mounts).
    Each is mounted at the path the config gives (made absolute), from its real location, so a path through
    a symbolic link works inside too (a link inside a visible directory: its target, where it is). ValueError,
    naming the key, for a path Apptainer's bind list cannot carry (a ',' separates binds, a ':' source from
    destination)."""
    roots = {p for v in visible for p in (Path(os.path.abspath(v)), Path(v).resolve())}

    def seen(p: Path) -> bool:
        return any(p == r or r in p.parents for r in roots)

    out = []
    for key, path in paths.items():
        given, real = Path(os.path.abspath(path)), Path(path).resolve()
        if seen(given) and seen(real):
            continue  # already visible, as given and where it really is
        for p in (given, real):
            if "," in str(p) or ":" in str(p):
                raise ValueError(f"{key}: {str(p)!r} holds ',' or ':', which an Apptainer bind cannot carry "
                                 f"(allowed: a path without them; move or link the input)")
        # a link inside a mounted directory is there already, and resolves once its target is mounted where it
        # is (a bind onto the link's path would sit under the directory's mount, which Apptainer lays on top)
        spec = str(real) if real == given or seen(given) else f"{real}:{given}"
        if spec not in out:
            out.append(spec)
    return out
