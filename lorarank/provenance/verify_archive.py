"""`lorarank verify-archive`: recompute an archive's hashes and name every file that changed.

    python -m lorarank verify-archive results/default/archive      # or the .tar.gz, or an extracted copy

Exit 0 when every file matches the manifest; exit 1 with one line per file that changed, went missing
or appeared, a side manifest that differs from the one inside the tarball, or a corrupt tarball.
The archive format is `lorarank.provenance.archive`'s.
"""

from __future__ import annotations

import gzip
import json
import sys
import tarfile
import zlib
from pathlib import Path

from lorarank.errors import UserError
from lorarank.io import sha256_file, sha256_stream
from lorarank.provenance.archive import FORMAT, MANIFEST


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
    p.add_argument("path", help="archive directory, .tar.gz, or an extracted copy (holds MANIFEST.json)")
    p.add_argument("--rerun", default=None, help="results/<experiment> of a rerun: also check its scientific outputs "
                                                 "against this archive's (`lorarank check-run`)")


def run(args) -> int:
    doc, problems, n = verify(args.path)
    for line in problems:
        print(f"lorarank verify-archive: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.path}: {n} files match the manifest ({doc['experiment']}, code "
          f"{doc['code'].get('git_commit') or 'not under git'}{' dirty' if doc['code'].get('dirty') else ''})")
    if args.rerun:
        from lorarank.provenance import published

        return published.report(Path(args.rerun), published.from_manifest(doc))
    return 0
