"""Atomic file writes, the one helper every writer uses.

A file is written to a temporary sibling, flushed to disk, then renamed over its target, so
a killed process leaves either the old file or the new one, never a torn one. New files get
the permissions the user's umask gives (0644 under the usual 022), not mkstemp's 0600, so a
colleague on a shared server can read a sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Any, Iterator

from saefast.errors import OutputError

__all__ = ["atomic_path", "atomic_open", "dump_json", "write_json_atomic", "atomic_dir",
           "read_json", "to_json", "check_output_dir"]


def check_output_dir(path: str | os.PathLike, what: str) -> None:
    """Refuse, before any work, a folder that could not be created or written: a file at
    `path` or above it, or an existing ancestor we may not write. Creates nothing."""
    path = Path(path)
    for p in (path, *path.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            raise OutputError(f"{what} {path}: {p} is a file, not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {path}: cannot write in {p} (permission denied)")
        return


def _sibling(path: Path, suffix: str = ".tmp") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside `path` for a writer that wants a file name (numpy,
    safetensors, matplotlib, torch.save); on success it is fsynced and renamed over `path`.
    `suffix` keeps the extension for writers that look at it (matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """`open(path, mode)` that lands atomically ("w" text or "wb" binary)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def to_json(obj: Any) -> Any:
    """`json.dump`'s default: numpy and torch scalars and arrays, paths."""
    if hasattr(obj, "tolist"):  # numpy and torch: a scalar for 0-d, nested lists otherwise
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dump_json(f: IO, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
              newline: bool = True) -> None:
    """Strict JSON (NaN and infinity are refused) into an open file."""
    json.dump(obj, f, indent=indent, allow_nan=False, default=to_json, sort_keys=sort_keys)
    if newline:
        f.write("\n")


def write_json_atomic(path: str | os.PathLike, obj: Any, **kwargs: Any) -> None:
    """`dump_json` to `path`, atomically."""
    with atomic_open(path, "w") as f:
        dump_json(f, obj, **kwargs)


def read_json(path: str | os.PathLike, *, error: type[Exception] | None = None) -> Any:
    """The JSON in `path`. With `error` (a `SaefastError` subclass), a file that cannot be
    read or parsed raises `error` with one line naming the file; without it, the OSError or
    ValueError itself, for callers whose file is a cache that is simply redone when bad."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        if error is None:
            raise
        raise error(f"{path}: corrupt JSON ({e.msg} at line {e.lineno})") from None
    except OSError as e:
        if error is None:
            raise
        raise error(f"{path}: cannot read ({e.strerror})") from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty temporary directory beside `path`; on success its files are synced
    and it replaces `path` (an older incomplete one is removed first), so `path` holds all
    of its files or none. Files inside may be written plainly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    tmp.mkdir()  # mode 0777 & ~umask, unlike mkdtemp's 0700
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        _fsync_dir(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)

