"""Matchings kept on disk, named by the weights they were computed from.

A sweep's reports match every pair of seeds; a remote executor (Ray) matches the pairs as
tasks while other runs still train and leaves the results here, so the report step reads
them instead of matching again. A key is the SHA-256 of what decides the result: the kind
of matching (decoder, live-only decoder, encoder, activation correlation), the concrete
solver (or, for a kind not matched by `match_decoders`, its method's name), and the bytes of
both inputs (and of the row subsets taken, for live-only), so a retrained run, another
solver or another subset never reuses a stale matching, wherever the runs live.

Files: `<folder>/<key>.npz` (rows, cols, cosines, certified, solver, timings, info, and the
nearest partners `near_a`, `near_b` where the matching kept them), each written atomically;
an unreadable file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from saefast.match.decoders import SOLVERS, Matching, match_decoders, resolve_solver

FOLDER = ".matchings"  # under a sweep's OUT/reports/ (dot: not a report of its own)

# id(tensor) -> (a weak reference to it, its digest); by id because tensors compare
# elementwise, and the entry goes when the tensor does
_digests: dict[int, tuple[weakref.ref, str]] = {}


def digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes; memoised per tensor object (a report
    hashes each run's decoder once, not once per pair)."""
    entry = _digests.get(id(t))
    if entry is not None and entry[0]() is t:
        return entry[1]
    c = t.detach().contiguous().cpu()
    h = hashlib.sha256(f"{c.dtype}:{tuple(c.shape)}:".encode())
    h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
    key = id(t)
    _digests[key] = (weakref.ref(t, lambda _, key=key: _digests.pop(key, None)), h.hexdigest())
    return _digests[key][1]


def identity(weights: torch.Tensor, rows: np.ndarray | None = None) -> str:
    """What names one side of a matching: a matrix, and the rows of it that take part."""
    if rows is None:
        return digest(weights)
    sub = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
    return f"{digest(weights)}[{sub}]"


class MatchingCache:
    """A folder of matchings (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def key(self, kind: str, solver: str, id_a: str, id_b: str) -> str:
        """The file name of a matching. solver: a decoder solver ("auto" is keyed by the one
        it resolves to), or the name of the method of a kind matched otherwise."""
        if solver == "auto" or solver in SOLVERS:
            solver = resolve_solver(solver)
        text = json.dumps([kind, solver, id_a, id_b])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> Matching | None:
        try:
            with np.load(self.path(key), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                nearest = ((z["near_a"].astype(np.int64), z["near_b"].astype(np.int64))
                           if "near_a" in z.files else None)
                return Matching(rows=z["rows"].astype(np.int64), cols=z["cols"].astype(np.int64),
                                cosines=z["cosines"].astype(np.float64),
                                certified=bool(meta["certified"]), solver=str(meta["solver"]),
                                timings=dict(meta["timings"]), info=dict(meta["info"]),
                                nearest=nearest)
        except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: recompute
            return None

    def put(self, key: str, m: Matching) -> None:
        from saefast.fsio import atomic_open, to_json

        meta = json.dumps({"certified": bool(m.certified), "solver": m.solver,
                           "timings": m.timings, "info": m.info}, default=to_json)
        near = {} if m.nearest is None else {"near_a": np.asarray(m.nearest[0], dtype=np.int64),
                                             "near_b": np.asarray(m.nearest[1], dtype=np.int64)}
        with atomic_open(self.path(key), "wb") as f:  # a file object: numpy adds no suffix
            np.savez(f, rows=np.asarray(m.rows, dtype=np.int64),
                     cols=np.asarray(m.cols, dtype=np.int64),
                     cosines=np.asarray(m.cosines, dtype=np.float64), meta=np.array(meta),
                     **near)

    def cached(self, key: str, compute: Callable[[], Matching]) -> Matching:
        """The matching stored under key; else compute()'s, stored there."""
        m = self.get(key)
        if m is None:
            m = compute()
            self.put(key, m)
        return m

    def match(self, a: torch.Tensor, b: torch.Tensor, *, kind: str, solver: str,
              id_a: str, id_b: str) -> Matching:
        """`match_decoders(a, b)`, from the folder when it was computed before."""
        return self.cached(self.key(kind, solver, id_a, id_b),
                           lambda: match_decoders(a, b, solver=solver))


def match(cache: MatchingCache | None, a: torch.Tensor, b: torch.Tensor, *, kind: str,
          solver: str, id_a: str | None = None, id_b: str | None = None) -> Matching:
    """`match_decoders(a, b, solver)`, through `cache` when there is one. id_a / id_b name
    the two sides (`identity`; default: the matrices themselves)."""
    if cache is None:
        return match_decoders(a, b, solver=solver)
    return cache.match(a, b, kind=kind, solver=solver, id_a=id_a or identity(a),
                       id_b=id_b or identity(b))
