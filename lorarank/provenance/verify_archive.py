"""`lorarank verify-archive`: recompute an archive's hashes and name every file that changed.

    python -m lorarank verify-archive results/default/archive      # or the .tar.gz, or an extracted copy

Exit 0 when every file matches the manifest; exit 1 with one line per file that changed, went missing
or appeared, a side manifest that differs from the one inside the tarball, or a corrupt tarball.
The archive format is `lorarank.provenance.archive`'s.

An archive is untrusted input (a committee verifies before it extracts): every member and manifest name must
stay inside the experiment's directory (`lorarank.names.relpath_problem`), links and other non-files are
refused, the manifest is size-capped and schema-checked (one line per problem, never a traceback), and the
members' count and bytes are capped so that a decompression bomb stops at its header.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import sys
import tarfile
import zlib
from pathlib import Path

from lorarank import names
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


# Caps far above any study's (the paper config's manifest is ~100 KB, its archive a few GB in ~1,000 files)
MAX_MANIFEST = 64 << 20  # bytes: the manifest member is read whole
MAX_MEMBERS = 1_000_000
MAX_BYTES = 1 << 40  # member data in all, as the tar headers declare it: 1 TiB
MAX_TRAILER = 1 << 20  # bytes after the tar's end-of-archive blocks (the writer pads to one 10 KiB record)
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def manifest_problems(doc) -> list[str]:
    """Why `doc` is not a manifest this module (and `check-run`) can read safely, one line per problem."""
    if not isinstance(doc, dict):
        return [f"is not a JSON object (a {FORMAT} manifest)"]
    if doc.get("format") != FORMAT:
        return [f"format {doc.get('format')!r} is not {FORMAT!r}"]
    problems = [p for p in [names.experiment_problem(doc.get("experiment"))] if p]
    tarball = doc.get("tarball")
    if tarball is not None and (not isinstance(tarball, str) or "/" in tarball or names.relpath_problem(tarball)):
        problems.append(f"tarball {tarball!r} is not a file name beside the manifest")
    for key, absent in (("code", None), ("config", {})):  # code is required; config may be absent
        if not isinstance(doc.get(key, absent), dict):
            problems.append(f"{key} is missing or not an object")
    train = (doc.get("environments") or {}).get("train", []) if isinstance(doc.get("environments", {}), dict) else None
    if not isinstance(train, list) or not all(
            isinstance(e, dict) and isinstance(e.get("environment", {}), dict)
            and isinstance(e.get("environment", {}).get("packages", {}), dict) for e in train):
        problems.append("environments.train is not a list of {environment: {packages: {...}}} objects")
    files = doc.get("files")
    if not isinstance(files, dict):
        return problems + ["files is not an object (name -> {sha256, bytes})"]
    for rel, rec in files.items():
        bad = names.relpath_problem(rel)
        if bad or rel == MANIFEST:
            problems.append(f"files: {rel!r} {bad or 'is the manifest itself'}")
        elif not (isinstance(rec, dict) and isinstance(rec.get("sha256"), str) and SHA256.match(rec["sha256"])
                  and isinstance(rec.get("bytes"), int) and not isinstance(rec["bytes"], bool) and rec["bytes"] >= 0):
            problems.append(f"files: {rel!r} is not {{sha256: 64 hex digits, bytes: a whole number >= 0}}")
    return problems


def _load_manifest(raw: bytes, where: str) -> tuple[dict | None, list[str]]:
    """(the manifest, []) or (None, one line per problem)."""
    if len(raw) > MAX_MANIFEST:
        return None, [f"{where}: {len(raw)} bytes (allowed: at most {MAX_MANIFEST})"]
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        return None, [f"{where} is not valid JSON: {e}"]
    problems = manifest_problems(doc)
    return (None, [f"{where}: {p}" for p in problems]) if problems else (doc, [])


class _CappedReads:
    """The decompressed stream as tarfile reads it, refusing any single read over `limit` bytes: tarfile reads
    a whole PAX or GNU long-name header at once, before any member-level cap can look at it (a few KB of
    gzip can declare gigabytes). Member data is hashed in 1 MiB reads, the manifest is at most MAX_MANIFEST."""

    def __init__(self, f, limit: int = MAX_MANIFEST + (1 << 20)):
        self.f, self.limit = f, limit

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.limit:
            raise tarfile.ReadError(f"a header or read of {n} bytes (allowed: at most {self.limit})")
        return self.f.read(n)

    def __getattr__(self, name):  # seek, tell, ...: the stream's own
        return getattr(self.f, name)


def verify_tarball(tarball: Path, sidecar: bytes | None, max_members: int = MAX_MEMBERS,
                   max_bytes: int = MAX_BYTES) -> tuple[dict | None, list[str], int]:
    """(manifest, problems, files checked) for a tarball; `sidecar` is the MANIFEST.json beside it."""
    seen: dict[str, tuple[str, int]] = {}
    inner, problems, prefixes, members, total = None, [], set(), 0, 0
    try:
        with gzip.open(tarball, "rb") as gz, tarfile.open(fileobj=_CappedReads(gz), mode="r:") as tar:
            for m in tar:
                members, total = members + 1, total + m.size
                if members > max_members or total > max_bytes:  # stop at the header, before its data
                    return None, [f"{tarball.name}: more than {max_members} members or {max_bytes} bytes "
                                  f"(allowed: at most that many; a decompression bomb?)"], 0
                bad = names.relpath_problem(m.name)
                if bad:
                    problems.append(f"{m.name!r}: a member name that {bad}")
                    continue
                if not m.isfile():
                    problems.append(f"{m.name}: not a regular file")
                    continue
                prefix, _, rel = m.name.partition("/")
                prefixes.add(prefix)
                f = tar.extractfile(m)
                if rel == MANIFEST:
                    if m.size > MAX_MANIFEST:
                        return None, [f"{m.name}: {m.size} bytes (allowed: at most {MAX_MANIFEST})"], 0
                    inner = f.read()
                    continue
                seen[rel] = sha256_stream(f)
            trailer = 0
            while chunk := gz.read(1 << 16):  # to the end: gzip checks its CRC there, and only there
                trailer += len(chunk)
                if trailer > MAX_TRAILER:
                    return None, [f"{tarball.name}: more than {MAX_TRAILER} bytes after the archive's end"], 0
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        return None, [f"{tarball.name}: corrupt ({e})"], 0
    if inner is None:
        return None, problems + [f"{tarball.name}: holds no {MANIFEST}"], 0
    if sidecar is not None and sidecar != inner:
        problems.append(f"{MANIFEST}: differs from the copy inside {tarball.name}")
    doc, bad = _load_manifest(inner, f"{MANIFEST} inside {tarball.name}")
    if bad:
        return None, problems + bad, 0
    problems += [f"{p}/: outside the experiment directory {doc['experiment']}/" for p in sorted(prefixes)
                 if p != doc["experiment"]]
    for rel, (sha, size) in sorted(seen.items()):
        _check(doc["files"], rel, sha, size, problems)
    problems += [f"{rel}: missing" for rel in sorted(set(doc["files"]) - set(seen))]
    return doc, problems, len(seen)


def verify_tree(root: Path, raw: bytes) -> tuple[dict | None, list[str], int]:
    """An extracted archive: MANIFEST.json and the files beside it (a link anywhere is a problem, not followed)."""
    doc, bad = _load_manifest(raw, str(root / MANIFEST))
    if bad:
        return None, bad, 0
    problems, n, present = [], 0, set()
    for top, dirs, files in os.walk(root):  # never follows a linked directory
        for name in dirs + files:
            p = Path(top) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                problems.append(f"{rel}: a link (allowed: regular files)")
            elif name in files and not stat.S_ISREG(p.lstat().st_mode):  # a FIFO would block the hash
                problems.append(f"{rel}: not a regular file")
            elif name in files and rel != MANIFEST:
                present.add(rel)
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
        if side.is_symlink() or (side.is_file() and side.stat().st_size > MAX_MANIFEST):
            return None, [f"{side}: a link or over {MAX_MANIFEST} bytes (allowed: a regular file, at most that)"], 0
        return verify_tarball(p, side.read_bytes() if side.is_file() else None)
    if p.is_dir() and (p / MANIFEST).is_file() and not (p / MANIFEST).is_symlink():
        if (p / MANIFEST).stat().st_size > MAX_MANIFEST:
            return None, [f"{p / MANIFEST}: {(p / MANIFEST).stat().st_size} bytes (allowed: at most {MAX_MANIFEST})"], 0
        raw = (p / MANIFEST).read_bytes()
        doc, bad = _load_manifest(raw, str(p / MANIFEST))
        if bad:
            return None, bad, 0
        tarball = p / doc["tarball"] if doc.get("tarball") else None
        if tarball and tarball.is_file() and not tarball.is_symlink():
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
