"""A verifiable archive of one experiment: what produced what, and proof it has not changed since.

    python -m lorarank archive --results results/default --inputs <files and dirs> \
        --config-json '<resolved config>' --snakemake-version 9.27.1 --out results/default/archive
    python -m lorarank verify-archive results/default/archive      # or the .tar.gz, or an extracted copy

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
import sys
import tarfile
import zlib
from pathlib import Path

from lorarank import __version__
from lorarank.containers import digest, references
from lorarank.environment import describe
from lorarank.errors import UserError
from lorarank.io import atomic_path, read_json, sha256_file, sha256_stream

FORMAT = "lorarank-archive/1"
MANIFEST = "MANIFEST.json"
MTIME = 0  # every member's mtime: the results' own timestamps would make each archive different
SKIP = {".snakemake_timestamp"}  # Snakemake's marker in directory outputs, not a result
CHECKOUT = Path(__file__).resolve().parents[1]  # the workflow checkout whose code is running


def tracked_code(root: Path) -> dict:
    """git commit, dirty flag, and sha256 over the working-tree content of every tracked file."""
    git = ["git", "-c", "safe.directory=*", "-C", str(root)]  # a container runs as another user
    try:
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip() != ""
        listed = subprocess.run(git + ["ls-files", "-z"], capture_output=True, check=True).stdout
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
             code_root: Path) -> dict:
    train_envs = run_environments(results, list(files))
    hardware = []
    for e in train_envs:
        if e["environment"].get("hardware") not in hardware:
            hardware.append(e["environment"].get("hardware"))
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
    """Sorted members under `prefix/`, then MANIFEST.json; gzip with no name and mtime 0."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, f in files.items():
            mode = 0o755 if os.access(f, os.X_OK) else 0o644
            with open(f, "rb") as fh:
                tar.addfile(_member(f"{prefix}/{rel}", f.stat().st_size, mode), fh)
        tar.addfile(_member(f"{prefix}/{MANIFEST}", len(manifest_bytes), 0o644), io.BytesIO(manifest_bytes))


def archive(args) -> dict:
    results, out = Path(args.results), Path(args.out)
    if not results.is_dir():
        raise UserError(f"results directory {args.results!r} does not exist")
    try:
        config = json.loads(args.config_json) if args.config_json else {}
    except json.JSONDecodeError as e:
        raise UserError(f"--config-json is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UserError("--config-json must hold a JSON object (the resolved config)")
    files = result_files(results, args.inputs)
    doc = manifest(results, files, config, args.snakemake_version, Path(args.code_root))
    body = dumps(doc)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / doc["tarball"]) as tmp:
        write_tarball(tmp, results.name, files, body)
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_bytes(body)
    return doc


# --- verification ---------------------------------------------------------------------------------

def _check(expected: dict, rel: str, data_sha: str, size: int, problems: list[str]) -> None:
    want = expected.get(rel)
    if want is None:
        problems.append(f"{rel}: not in the manifest")
    elif want["sha256"] != data_sha or want["bytes"] != size:
        problems.append(f"{rel}: changed (sha256 {data_sha[:16]}…, {size} bytes; manifest {want['sha256'][:16]}…, "
                        f"{want['bytes']} bytes)")


def _load_manifest(raw: bytes, where: str) -> dict:
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), dict):
        raise UserError(f"{where} is not a {FORMAT} manifest")
    return doc


def verify_tarball(tarball: Path, sidecar: bytes | None) -> tuple[dict | None, list[str], int]:
    """(manifest, problems, files checked) for a tarball; `sidecar` is the MANIFEST.json beside it."""
    seen: dict[str, tuple[str, int]] = {}
    inner, problems, prefixes = None, [], set()
    try:
        with gzip.open(tarball, "rb") as gz, tarfile.open(fileobj=gz, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    problems.append(f"{m.name}: not a regular file")
                    continue
                prefix, _, rel = m.name.partition("/")
                prefixes.add(prefix)
                f = tar.extractfile(m)
                if rel == MANIFEST:
                    inner = f.read()
                    continue
                seen[rel] = sha256_stream(f)
            while gz.read(1 << 20):  # to the end: gzip checks its CRC there, and only there
                pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        return None, [f"{tarball.name}: corrupt ({e})"], 0
    if inner is None:
        return None, [f"{tarball.name}: holds no {MANIFEST}"], 0
    if sidecar is not None and sidecar != inner:
        problems.append(f"{MANIFEST}: differs from the copy inside {tarball.name}")
    doc = _load_manifest(inner, f"{MANIFEST} inside {tarball.name}")
    problems += [f"{p}/: outside the experiment directory {doc.get('experiment')}/" for p in sorted(prefixes)
                 if p != doc.get("experiment")]
    for rel, (sha, size) in sorted(seen.items()):
        _check(doc["files"], rel, sha, size, problems)
    problems += [f"{rel}: missing" for rel in sorted(set(doc["files"]) - set(seen))]
    return doc, problems, len(seen)


def verify_tree(root: Path, raw: bytes) -> tuple[dict, list[str], int]:
    """An extracted archive: MANIFEST.json and the files beside it."""
    doc = _load_manifest(raw, str(root / MANIFEST))
    problems, n = [], 0
    present = {f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file()} - {MANIFEST}
    for rel in sorted(present):
        f = root / rel
        _check(doc["files"], rel, sha256_file(f), f.stat().st_size, problems)
        n += 1
    problems += [f"{rel}: missing" for rel in sorted(set(doc["files"]) - present)]
    return doc, problems, n


def verify(path: str) -> tuple[dict | None, list[str], int]:
    p = Path(path)
    if p.is_file() and p.name.endswith((".tar.gz", ".tgz")):
        side = p.parent / MANIFEST
        return verify_tarball(p, side.read_bytes() if side.is_file() else None)
    if p.is_dir() and (p / MANIFEST).is_file():
        raw = (p / MANIFEST).read_bytes()
        tarball = p / str(_load_manifest(raw, str(p / MANIFEST)).get("tarball", ""))
        if tarball.is_file() and tarball.name:
            return verify_tarball(tarball, raw)
        return verify_tree(p, raw)
    raise UserError(f"{path!r} is not an archive (allowed: an archive directory or an extracted copy holding "
                    f"{MANIFEST}, or a .tar.gz written by `lorarank archive`)")


def configure(p) -> None:
    if p.prog.endswith("verify-archive"):
        p.add_argument("path", help="archive directory, .tar.gz, or an extracted copy (holds MANIFEST.json)")
        return
    p.add_argument("--results", required=True, help="results/<experiment> directory")
    p.add_argument("--inputs", nargs="+", required=True, help="result files and directories to archive")
    p.add_argument("--config-json", default=None, help="the resolved config as JSON")
    p.add_argument("--snakemake-version", default=None)
    p.add_argument("--code-root", default=str(CHECKOUT), help="the workflow checkout (default: the one running)")
    p.add_argument("--out", required=True, help="archive directory to write")


def run(args) -> int:
    if args.command == "verify-archive":
        doc, problems, n = verify(args.path)
        for line in problems:
            print(f"lorarank verify-archive: {line}", file=sys.stderr)
        if problems:
            return 1
        print(f"{args.path}: {n} files match the manifest ({doc['experiment']}, code "
              f"{doc['code'].get('git_commit') or 'not under git'}{' dirty' if doc['code'].get('dirty') else ''})")
        return 0
    doc = archive(args)
    print(f"{args.out}: {len(doc['files'])} files, {doc['tarball']}")
    return 0
