"""A verifiable archive of one experiment: what produced what, and proof it has not changed since.

    python -m lorarank archive --results results/default --inputs <files and dirs> \
        --config-json '<resolved config>' --snakemake-version 9.27.1 --out results/default/archive
    python -m lorarank verify-archive results/default/archive      # see lorarank.provenance.verify_archive

`archive/` holds `<experiment>.tar.gz` and `MANIFEST.json` (also inside the tarball, so an extracted
copy verifies itself). The manifest records the sha256 and size of every result file, the resolved
config, the code version (git commit, dirty flag, hash of the tracked files), every container
reference with its digest, the package versions each environment saw at run time (from run.json and
metrics.json, and this process for the analysis image), the Snakemake version and the hardware.
The tarball is deterministic: sorted members, fixed mtime/owner/mode, gzip without a timestamp, and
a manifest without clocks, so the same results give the same bytes. Cite the tarball's or the
manifest's sha256 in a paper: a tamperer who rewrites both the files and the manifest is caught only
against a sha256 recorded elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

from lorarank import __version__, names
from lorarank.errors import UserError
from lorarank.io import atomic_path, read_json, sha256_file
from lorarank.provenance.containers import digest, references
from lorarank.provenance.environment import describe

FORMAT = "lorarank-archive/1"
MANIFEST = "MANIFEST.json"
MTIME = 0  # every member's mtime: the results' own timestamps would make each archive different
SKIP = {".snakemake_timestamp"}  # Snakemake's marker in directory outputs, not a result
CHECKOUT = Path(__file__).resolve().parents[2]  # the workflow checkout whose code is running


def tracked_code(root: Path) -> dict:
    """git commit, dirty flag, and sha256 over the working-tree content of every tracked file."""
    # A container runs as another user than the checkout's owner: trust this checkout, and only it, not every
    # repository (`safe.directory=*`). git must not search the parent folders for a repository either (a
    # planted one's config could run commands), nor take GIT_DIR and the like from the environment.
    root = Path(root).resolve()
    git = ["git", "-c", f"safe.directory={root}", "-C", str(root)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CEILING_DIRECTORIES"] = str(root.parent)
    try:
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                env=env).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, env=env).stdout.strip() != ""
        listed = subprocess.run(git + ["ls-files", "-z"], capture_output=True, check=True, env=env).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        reason = e.stderr.strip() if isinstance(getattr(e, "stderr", None), str) else str(e)
        return {"git_commit": None, "reason": reason.splitlines()[0] if reason else "git failed"}
    h = hashlib.sha256()
    paths = sorted(p for p in listed.decode().split("\0") if p)
    for p in paths:
        f = root / p
        h.update(p.encode() + b"\0" + (sha256_file(f).encode() if f.is_file() else b"deleted") + b"\n")
    return {"git_commit": commit, "dirty": dirty, "tracked_files": len(paths), "tracked_files_sha256": h.hexdigest()}


def result_files(results: Path, inputs: list[str]) -> dict[str, Path]:
    """relative name -> path for every file in `inputs` (directories walked), all under `results`."""
    files = {}
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise UserError(f"archive input {item!r} does not exist")
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_symlink():  # the workflow writes none: a link would archive what it points to, or climb out
                raise UserError(f"archive input {str(f)!r} is a link (allowed: regular files and directories)")
            if not f.is_file() or f.name in SKIP:
                continue
            try:
                rel = f.resolve().relative_to(results.resolve()).as_posix()
            except ValueError:
                raise UserError(f"archive input {str(f)!r} is not under the results directory {str(results)!r}") from None
            if rel.split("/")[0] == "archive":
                raise UserError(f"archive input {str(f)!r} is inside the archive directory itself")
            files[rel] = f
    return dict(sorted(files.items()))


def run_environments(results: Path, names: list[str]) -> list[dict]:
    """The distinct environments recorded by training and evaluation (run.json, metrics.json),
    each with the files that recorded it: one entry when every job saw the same software."""
    seen: dict[str, dict] = {}
    for rel in names:
        if rel.rsplit("/", 1)[-1] not in ("run.json", "metrics.json"):
            continue
        env = read_json(results / rel).get("environment")
        if env is None:
            continue
        key = json.dumps(env, sort_keys=True)
        seen.setdefault(key, {"environment": env, "recorded_by": []})["recorded_by"].append(rel)
    return list(seen.values())


def container_records(config: dict) -> dict:
    """environment -> reference and digest (None: ran on the host). A local content-named image
    still present is re-hashed: its name must still be its content."""
    try:
        refs = references(config.get("containers") or {}, required=False)
    except ValueError as e:
        raise UserError(str(e)) from None
    out = {}
    for env, ref in sorted(refs.items()):
        if ref is None:
            out[env] = None
            continue
        rec = {"reference": ref, "sha256": digest(ref)}
        if "://" not in ref and Path(ref).is_file():
            actual = sha256_file(ref)
            if actual != rec["sha256"]:
                raise UserError(f"container image {ref!r} does not match its name (its sha256 is {actual})")
            rec["verified"] = True
        out[env] = rec
    return out


def manifest(results: Path, files: dict[str, Path], config: dict, snakemake_version: str | None,
             code_root: Path, resources: list[str] = ()) -> dict:
    train_envs = run_environments(results, list(files))
    hardware, numerics = [], []  # distinct, as the jobs recorded them (lorarank.numerics: what made the bits)
    for e in train_envs:
        for seen, key in ((hardware, "hardware"), (numerics, "numerics")):
            if e["environment"].get(key) not in seen:
                seen.append(e["environment"].get(key))
    return {
        "format": FORMAT,
        "experiment": results.name,
        "tarball": f"{results.name}.tar.gz",
        "files": {rel: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for rel, p in files.items()},
        "config": config,
        "code": {"lorarank": __version__, **tracked_code(code_root)},
        "containers": container_records(config),
        "environments": {"train": train_envs, "analysis": [{"environment": describe(), "recorded_by": ["archive"]}]},
        "hardware": hardware,
        "numerics": numerics,
        # what came from outside results/ (a hub model fetched into resources/): its revision, commit, hashes
        "resources": {str(r): read_json(r, "resource record") for r in resources},
        "snakemake": snakemake_version,
    }


def dumps(doc: dict) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _member(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tarball(path: Path, prefix: str, files: dict[str, Path], manifest_bytes: bytes) -> None:
    """Sorted members under `prefix/`, then MANIFEST.json; gzip with no name and mtime 0, at level 1: float32
    weights (an imported model's) shrink to ~0.52 at level 1 and ~0.49 at 9, which takes ~6x the time."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, f in files.items():
            mode = 0o755 if os.access(f, os.X_OK) else 0o644
            with open(f, "rb") as fh:
                tar.addfile(_member(f"{prefix}/{rel}", f.stat().st_size, mode), fh)
        tar.addfile(_member(f"{prefix}/{MANIFEST}", len(manifest_bytes), 0o644), io.BytesIO(manifest_bytes))


def archive(results: str | Path, inputs: list[str], config: dict, out: str | Path,
            snakemake_version: str | None = None, code_root: Path = CHECKOUT, resources: list[str] = ()) -> dict:
    """Write `out/<experiment>.tar.gz` and `out/MANIFEST.json` for the result files in `inputs`."""
    results, out = Path(results), Path(out)
    if not results.is_dir():
        raise UserError(f"results directory {str(results)!r} does not exist")
    bad = names.experiment_problem(results.name)  # the archive's top directory: '..' would climb out
    if bad:
        raise UserError(f"--results {str(results)!r}: its last part names the archive's top directory, and the {bad}")
    files = result_files(results, inputs)
    doc = manifest(results, files, config, snakemake_version, Path(code_root), resources)
    body = dumps(doc)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / doc["tarball"]) as tmp:
        write_tarball(tmp, results.name, files, body)
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_bytes(body)
    return doc


def configure(p) -> None:
    p.add_argument("--results", required=True, help="results/<experiment> directory")
    p.add_argument("--inputs", nargs="+", required=True, help="result files and directories to archive")
    p.add_argument("--config-json", default=None, help="the resolved config as JSON")
    p.add_argument("--snakemake-version", default=None)
    p.add_argument("--code-root", default=str(CHECKOUT), help="the workflow checkout (default: the one running)")
    p.add_argument("--resources", nargs="*", default=[],
                   help="records of resources fetched outside the results (resources/<experiment>/model/fetch.json)")
    p.add_argument("--out", required=True, help="archive directory to write")


def run(args) -> int:
    try:
        config = json.loads(args.config_json) if args.config_json else {}
    except json.JSONDecodeError as e:
        raise UserError(f"--config-json is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError("--config-json must hold a JSON object (the resolved config)")
    doc = archive(args.results, args.inputs, config, args.out, args.snakemake_version, Path(args.code_root),
                  args.resources)
    print(f"{args.out}: {len(doc['files'])} files, {doc['tarball']}")
    return 0
