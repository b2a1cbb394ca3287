"""The activation store's write lock: one process writes a store at a time.

Part of the store format (`saefast.data.store` re-exports `write_lock` and `WRITE_LOCK`):
`.write.lock` in each store folder, flock'ed by its writer. Kept apart so the lock's
protocol (taking it, and removing a folder a failed harvest created) reads in one place.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

WRITE_LOCK = ".write.lock"  # flock'ed by the one process that writes the store

__all__ = ["WRITE_LOCK", "write_lock"]


@contextlib.contextmanager
def write_lock(stores: list[Path], on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the write lock of every store (in sorted order, so two harvests of overlapping
    hooks cannot deadlock) while inside. A store another process is writing is waited for
    (`on_wait` says so first); its writer must be opened after the lock is held, so that it
    starts from what the other process finished. Locks are the OS's (fcntl.flock): a killed
    writer releases them. A store folder this call created that holds nothing but its lock
    file when released (a harvest that failed before its first shard: an unknown hook, a
    model that would not load) is removed, so a failure leaves no empty store behind."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(stores)):
            created = not path.exists()
            f = _lock(path, on_wait)
            stack.callback(_release, f, path if created else None)
        yield


def _lock(path: Path, on_wait: Callable[[str], None] | None):
    """The store's lock file, open and flock'ed. A lock taken while the holder removed the
    folder (`_release`) is on a deleted file and guards nothing: taken again on the new one."""
    import fcntl

    told = False
    while True:
        path.mkdir(parents=True, exist_ok=True)
        f = open(path / WRITE_LOCK, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None and not told:
                on_wait(f"waiting for another saefast process writing {path}")
                told = True
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            now = os.stat(path / WRITE_LOCK)
        except FileNotFoundError:
            now = None
        held = os.fstat(f.fileno())
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return f
        f.close()  # releases the lock on the deleted file


def _release(f, created: Path | None) -> None:
    """Unlock; before that, remove a folder this lock created if only the lock file is in it
    (never one that holds anything else: rmdir refuses a folder that is not empty)."""
    import fcntl

    try:
        if created is not None and [p.name for p in created.iterdir()] == [WRITE_LOCK]:
            (created / WRITE_LOCK).unlink()
            created.rmdir()
    except OSError:
        pass  # another process's lock file appeared in it: the folder stays
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
