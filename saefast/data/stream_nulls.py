"""The data-shaped nulls' data for runs that streamed their activations (`data.cache: false`).

A store keeps its rows, so a report reads Σ and the token pool from it (`store.training_moments`,
`report_nulls`). A stream keeps nothing, so `StreamNullData` gathers the same during the pass:
it watches the stream's forward batches (`StreamSource.on_batch`) and takes each training row
[t0, t1) the first time it is computed, in order (the first epoch reads them in order):

- the centred covariance of the training rows (`moments.ActivationMoments`), exactly what a store
  gives for the same rows (same rows, same float64 accumulation up to summation order);
- one activation row per distinct token id, its first occurrence (a store's pool keeps up to 8
  random rows per id; one is what the activation null draws, and it bounds the file at
  distinct ids x d floats).

A pass resumed from a checkpoint did not see its first rows again: `finish` reads the rows it
is missing (one more forward pass over them only). The result is saved once per stream and
training range as OUT/runs/.null_data/<stream digest>-<t0>-<t1>.npz (atomic); run.json's
`null_data` names it and `report_nulls.resolve` reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from saefast.data.moments import MOMENTS_FORMAT, ActivationMoments, TokenPool
from saefast.errors import StoreError
from saefast.fsio import atomic_open

FORMAT = "saefast.stream_null_data/1"
NULL_DATA_DIR = ".null_data"  # under OUT/runs/
_READ_BLOCK = 1 << 16  # rows per read when finish() fills a gap


def null_data_path(runs_dir: Path, digest: str, t0: int, t1: int) -> Path:
    return Path(runs_dir) / NULL_DATA_DIR / f"{digest}-{int(t0)}-{int(t1)}.npz"


class StreamNullData:
    """Gathers the training rows' moments and token pool from a stream's forward batches.
    Attach with `attach()`, train, then `finish()` and `save(path)`."""

    def __init__(self, source, t0: int, t1: int):
        self.source, self.t0, self.t1 = source, int(t0), int(t1)
        self.next = self.t0  # rows [t0, next) are taken
        self.moments = ActivationMoments(source.d)
        self._first: dict[int, np.ndarray] = {}  # token id -> its first activation row [d]

    def attach(self) -> "StreamNullData":
        self.source.on_batch = self._take
        return self

    def _take(self, start: int, acts: np.ndarray, ids: np.ndarray) -> None:
        """A forward batch of rows [start, start + n): take the part that continues [t0, next)."""
        lo, hi = max(self.next, start), min(self.t1, start + len(acts))
        if start > self.next or lo >= hi:
            return  # before what we need, or after a gap (finish fills gaps)
        x, tid = acts[lo - start:hi - start], ids[lo - start:hi - start]
        self.moments.update(x)
        uniq, first = np.unique(tid, return_index=True)
        for t, i in zip(uniq.tolist(), first.tolist()):
            if t not in self._first:
                self._first[t] = x[i].copy()
        self.next = hi

    def finish(self) -> "StreamNullData":
        """Read the training rows no batch has shown (a resumed pass), then detach."""
        self.source.on_batch = None
        while self.next < self.t1:
            end = min(self.t1, self.next + _READ_BLOCK)
            start = self.next
            self._take(start, self.source.read(start, end).numpy(), self.source.token_ids(start, end))
        return self

    @property
    def complete(self) -> bool:
        return self.next >= self.t1

    def save(self, path: Path) -> Path:
        if not self.complete:
            raise StoreError("stream null data: not every training row was seen; call finish()")
        ids = np.array(sorted(self._first), dtype=np.int64)  # [M]
        rows = np.stack([self._first[t] for t in ids.tolist()]).astype(np.float32)  # [M, d]
        rec = self.moments.to_dict(arrays=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as f:
            np.savez(f, format=np.array(FORMAT), n=np.array(rec["n"]), d=np.array(rec["d"]),
                     mean=rec["mean"], m2=rec["m2"], token_ids=ids, rows=rows)
        return path


def load(path: str | Path) -> tuple[ActivationMoments, TokenPool]:
    """(moments, token pool) of a saved file; StoreError when it is missing or unreadable."""

    try:
        with np.load(path) as z:
            if str(z["format"]) != FORMAT:
                raise ValueError(f"format {str(z['format'])!r}")
            moments = ActivationMoments.from_dict(
                {"format": MOMENTS_FORMAT, "n": int(z["n"]), "d": int(z["d"]),
                 "mean": z["mean"], "m2": z["m2"]})
            pool = TokenPool(z["rows"], z["token_ids"], mean=moments.mean)
    except Exception as e:  # missing, torn or foreign: one line
        raise StoreError(f"cannot read the streamed runs' null data {path}: {e}") from None
    return moments, pool
