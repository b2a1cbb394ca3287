"""Training checkpoints: written atomically, verified by hash, the newest good one wins.

A checkpoint is `ckpt-<step>.pt` (torch.save of plain tensors and containers) plus
`ckpt-<step>.json` ({"sha256", "step", "fingerprint"}) written after it. A torn or corrupt
file (kill -9 mid-write, disk trouble) fails the hash check and is skipped, with a warning,
in favour of the previous good one. The fingerprint ties a checkpoint to the exact training
setup, so a changed config never resumes from a stale state.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from saefast.fsio import atomic_path

KEEP = 2  # the newest good checkpoint and one before it, in case the newest is torn


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(directory: Path, step: int, fingerprint: str, state: dict[str, Any]) -> Path:
    """Write checkpoint `step` and drop all but the newest KEEP."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pt = directory / f"ckpt-{step:09d}.pt"
    with atomic_path(pt) as tmp:
        torch.save(state, tmp)
    meta = {"sha256": _sha256(pt), "step": step, "fingerprint": fingerprint}
    with atomic_path(pt.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(meta))
    for old in sorted(directory.glob("ckpt-*.pt"))[:-KEEP]:
        old.with_suffix(".json").unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return pt


def load_latest(directory: Path, fingerprint: str) -> dict[str, Any] | None:
    """The newest checkpoint that is whole and belongs to this setup, else None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    for pt in sorted(directory.glob("ckpt-*.pt"), reverse=True):
        why = _problem(pt, fingerprint)
        if why is None:
            try:
                return torch.load(pt, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - any unreadable file is skipped the same way
                why = f"unreadable ({type(e).__name__})"
        warnings.warn(f"skipping checkpoint {pt}: {why}", stacklevel=2)
    return None


def _problem(pt: Path, fingerprint: str) -> str | None:
    meta_path = pt.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return "no valid .json beside it (the write was interrupted)"
    if meta.get("fingerprint") != fingerprint:
        return "written for a different training setup"
    if meta.get("sha256") != _sha256(pt):
        return "contents do not match the recorded hash (torn or corrupt)"
    return None


def clear(directory: Path) -> None:
    """Remove a finished training's checkpoints."""
    directory = Path(directory)
    if directory.is_dir():
        for f in directory.iterdir():
            f.unlink(missing_ok=True)
        directory.rmdir()
