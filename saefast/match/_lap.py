"""numpy front end of the native assignment solver (csrc/lap, `torch.ops.saefast_lap.*`).

All functions take and return numpy arrays (no copies where dtypes already fit). They need
the native build: `available()` says whether it loaded (see saefast/ops/native.py).

    solve_sparse(indptr, indices, cost, n_cols, row_to_col=None, v=None) -> SparseSolution
    solve_dense(cost) -> (row_to_col, u, v)
    candidate_graph(row_idx, col_idx) -> (indptr, indices) of the top-k candidates
    rescore(a, b, rows, cols) -> float64 dot products of float32 rows
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from saefast.ops import native as _native

STAT_NAMES = ("augmented", "greedy", "scanned", "freed", "stuck")


def available() -> bool:
    """Whether the native solver is built and loaded."""
    if not _native.is_loaded():
        return False
    try:
        torch.ops.saefast_lap.solve_sparse  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def unavailable_reason() -> str:
    if not _native.is_loaded():
        return _native.build_info().get("reason") or "native build not loaded"
    return "the native build has no saefast_lap ops (rebuild saefast)"


@dataclass
class SparseSolution:
    row_to_col: np.ndarray  # [n] int64, -1 for rows left unassigned (stuck)
    u: np.ndarray  # [n] float64 row duals (NaN for stuck rows)
    v: np.ndarray  # [m] float64 column duals
    stuck: np.ndarray  # [s] int64 rows with no augmenting path in the graph
    stats: dict  # counters: augmented, greedy, scanned, freed, stuck


def _ops():
    if not available():
        raise RuntimeError(f"saefast native assignment solver unavailable: {unavailable_reason()}")
    return torch.ops.saefast_lap


def _t(x: np.ndarray, dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))


def solve_sparse(indptr: np.ndarray, indices: np.ndarray, cost: np.ndarray, n_cols: int,
                 row_to_col: np.ndarray | None = None, v: np.ndarray | None = None
                 ) -> SparseSolution:
    """Min-cost assignment of every row (n <= n_cols) on a CSR graph, with duals.

    Warm start when both row_to_col [n] and v [m] are given (e.g. the previous solution after
    edges were added): rows whose matched edge is beaten by a new edge are re-augmented."""
    n = len(indptr) - 1
    warm = row_to_col is not None and v is not None
    if not warm:
        row_to_col = np.full(n, -1, np.int64)
        v = np.zeros(n_cols, np.float64)
    x, u, vv, stuck, stats = _ops().solve_sparse(
        _t(indptr, np.int64), _t(indices, np.int32), _t(cost, np.float64), int(n_cols),
        _t(row_to_col, np.int64), _t(v, np.float64), warm)
    return SparseSolution(x.numpy(), u.numpy(), vv.numpy(), stuck.numpy(),
                          dict(zip(STAT_NAMES, stats.tolist())))


def solve_dense(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Min-cost assignment of every row of a finite float64 [n, m] matrix, n <= m.
    Returns (row_to_col [n] int64, u [n], v [m]) with u_i + v_j <= c_ij, tight on the matching."""
    x, u, v, _ = _ops().solve_dense(_t(cost, np.float64))
    return x.numpy(), u.numpy(), v.numpy()


def candidate_graph(row_idx: torch.Tensor, col_idx: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr [n + 1] int64, indices [E] int32, sorted, unique per row) of the pairs
    (i, row_idx[i, t]) and (col_idx[j, t], j): the candidates of a top-k pass."""
    indptr, indices = _ops().candidate_graph(row_idx.contiguous().long(),
                                             col_idx.contiguous().long())
    return indptr.numpy(), indices.numpy()


def rescore(a: torch.Tensor, b: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """out[e] = <a[rows[e]], b[cols[e]]> in float64 from float32 rows a [n, d], b [m, d]."""
    return _ops().rescore(a.contiguous(), b.contiguous(), _t(rows, np.int64),
                                         _t(cols, np.int64)).numpy()
