"""File helpers shared by every command: atomic writes (temp name + rename) and hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from lorarank.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or an error leaves no half-written output, so Snakemake never sees a stale file
    with a fresh timestamp.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are shared with collaborators
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; it replaces `path` only if the block succeeds,
    so the directory appears whole or not at all. Its files get the umask's modes, as `atomic_path`
    gives (savers such as safetensors write 0600)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.rglob("*"):
            if f.is_file():
                os.chmod(f, 0o666 & ~umask)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-ordered JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file, turning a missing or malformed file into a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {str(path)!r} is not valid JSON: {e}") from None


def read_parquet(path: str | os.PathLike, what: str = "table"):
    """Read a parquet file (a pandas DataFrame), turning a missing or unreadable file into a one-line UserError."""
    import pandas as pd

    if not os.path.isfile(path):
        raise UserError(f"{what} {str(path)!r} does not exist")
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several unrelated types for a non-parquet file
        raise UserError(f"{what} {str(path)!r} is not a readable parquet file: {e}") from None


def sha256_stream(f) -> tuple[str, int]:
    """(sha256, bytes) of a binary file object, read in 1 MiB chunks (weights can be GBs)."""
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)[0]


def weights_sha256(path: str) -> dict:
    """Identity of a model or adapter: sha256 over a local directory's weight files, or the hub id."""
    p = Path(path)
    if not p.is_dir():
        return {"id": path}
    h = hashlib.sha256()
    for f in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")):
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return {"path": path, "sha256": h.hexdigest()}
