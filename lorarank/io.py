"""File helpers shared by every command: atomic writes (temp name + rename) and hashes."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from lorarank.errors import UserError


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _fsync(path: str | os.PathLike) -> None:
    """Flush a file's or a directory's content to stable storage: a rename is durable only once the data
    it names is (a crash can otherwise leave a renamed, empty file on XFS, NFS or Lustre)."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory: nothing more can be done there
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or an error leaves no half-written output, so Snakemake never sees a stale file
    with a fresh timestamp. The file is fsynced before the rename and its folder after it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared with collaborators
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


RENAME_EXCHANGE = 2  # renameat2(2) flag: swap two paths atomically (Linux >= 3.15, glibc >= 2.28)


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` in one step where the kernel and filesystem can; False where they cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0


def replace_dir(tmp: Path, path: Path) -> None:
    """Put the finished directory `tmp` at `path`: every file and folder fsynced, the umask's modes (savers
    such as safetensors write 0600), then swapped with the old `path` in one step, so a reader sees the
    old directory or the new one, never neither (a filesystem without the swap: renamed aside first)."""
    mode = 0o666 & ~_umask()
    for top, _, files in os.walk(tmp):
        for name in files:
            os.chmod(os.path.join(top, name), mode)
            _fsync(os.path.join(top, name))
        _fsync(top)
    if not path.exists():
        tmp.rename(path)
    elif not _exchange(tmp, path):
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    _fsync(path.parent)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; it replaces `path` (`replace_dir`) only if the
    block succeeds, so the directory appears whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap: the old directory


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


def typed(df, schema: dict[str, str], what: str):
    """`df` with its `schema` columns (name -> dtype) cast, after checking that each holds what its dtype can
    take: numbers (whole and in range for an integer dtype) or strings. A column that does not is one
    UserError line naming it, never a cast's traceback."""
    import numpy as np
    import pandas as pd

    for col, dtype in schema.items():
        values = df[col]
        if dtype == "object":
            if not all(isinstance(v, str) for v in values):
                raise UserError(f"{what}: column {col} must hold text")
            continue
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            raise UserError(f"{what}: column {col} holds {values.dtype} values (allowed: numbers, as {dtype})")
        if dtype.startswith("int"):
            raw = values.to_numpy(dtype=np.float64)
            info = np.iinfo(dtype)
            if not (np.isfinite(raw) & (raw == np.round(raw)) & (raw >= info.min) & (raw <= info.max)).all():
                raise UserError(f"{what}: column {col} must hold whole numbers in [{info.min}, {info.max}]")
    return df.astype(schema)


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
