"""`linear_assignment`: a drop-in for `scipy.optimize.linear_sum_assignment`, ties included.

Same signature, defaults, rectangular handling, exception types and messages, and the same
indices as SciPy:

- A finite real matrix is solved by the native dense solver (csrc/lap), which also returns LP
  duals. When the duals prove the optimum unique by a margin (`unique_optimum`), SciPy, which
  is exact up to rounding far below that margin, returns the same assignment, so ours is
  returned.
- Otherwise (ties: an all-equal matrix, small integer costs, repeated rows) which of the
  optimal assignments SciPy returns is decided by its search order (rows in turn, columns
  scanned from a list that starts reversed and is edited as they are used). Imitating that
  order exactly would mean running SciPy's algorithm operation for operation, so such
  matrices are handed to SciPy itself: the answer is SciPy's by construction, and its own
  test suite passes unchanged (tests/test_scipy_suite.py). A tie costs the native solve on
  top of SciPy's; a unique optimum costs the native solve plus an O(n m) check.
- Everything else (infinite entries, which SciPy treats as forbidden pairs, NaN, wrong
  dimensions or dtypes, empty matrices), and every matrix when the native build is missing,
  goes to SciPy too, so semantics and errors are SciPy's own.
"""

from __future__ import annotations

import numpy as np

TIE_TOL = 1e-9  # relative to the largest |cost| or |dual|: closer alternatives count as ties
MAX_TIGHT_PER_NODE = 4  # over 4 (n + m) tight edges: ties are likely, stop checking
BLOCK_ELEMS = 1 << 16  # reduced costs are computed this many at a time (stays in cache)


def linear_assignment(cost_matrix, maximize=False):
    """Drop-in for `scipy.optimize.linear_sum_assignment(cost_matrix, maximize=False)`.

    Returns `(row_ind, col_ind)` (int64, `row_ind` sorted) with `cost_matrix[row_ind, col_ind]`
    of minimal (or maximal) sum; rectangular matrices match min(n, m) pairs. The indices are
    SciPy's, also when several assignments are optimal (see the module docstring).
    """
    from scipy.optimize import linear_sum_assignment

    from saefast.match import _lap

    arr = np.asarray(cost_matrix)
    if (_lap.available() and arr.ndim == 2 and arr.size > 0 and arr.dtype.kind in "biuf"
            and np.isfinite(arr).all()):
        cost = arr.astype(np.float64)  # a copy: negated in place below
        if maximize:
            np.negative(cost, out=cost)
        unique = _native_unique(cost)
        if unique is not None:
            return unique
    row, col = linear_sum_assignment(cost_matrix, maximize=maximize)
    return row.astype(np.int64, copy=False), col.astype(np.int64, copy=False)


def _native_unique(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The minimum-cost assignment of a finite float64 [n, m] matrix when the native solver
    proves it unique, else None."""
    from saefast.match import _lap

    transposed = cost.shape[0] > cost.shape[1]
    if transposed:  # the solver wants n <= m
        cost = np.ascontiguousarray(cost.T)
    x, u, v = _lap.solve_dense(cost)
    if not unique_optimum(cost, x, u, v):
        return None
    rows, cols = np.arange(len(x), dtype=np.int64), x.astype(np.int64)
    if transposed:
        order = np.argsort(cols)
        return cols[order], rows[order]
    return rows, cols


def unique_optimum(cost: np.ndarray, x: np.ndarray, u: np.ndarray, v: np.ndarray,
                   tol: float = TIE_TOL) -> bool:
    """True when the assignment x of cost [n, m] (n <= m) is optimal and every other one costs
    more by a margin, as proven by the duals u [n], v [m].

    Write rc_ij = c_ij - u_i - v_j, V = max(v), tau = tol * (largest |c|, |u|, |v|), and
    slack = sum_i max(0, -min_j rc_ij) + sum_i |rc_{i,x_i}| + sum over free j of (V - v_j)
    (0 for exact duals). For any assignment x',
        cost(x') - cost(x) = sum_i (rc_{i,x'_i} - rc_{i,x_i}) + sum_{x'} v_j - sum_{x} v_j.
    x and x' differ on alternating cycles (rows trading columns) and paths (a row leaves its
    column, its new column's row moves on, ..., the last takes a column free in x). Call an
    edge tight when rc_ij <= tau and a matched column releasable when V - v_j <= tau. If no
    cycle of tight edges and no tight path from a releasable column to a free one exists, then
    x' uses an edge with rc > tau or drops a column with V - v_j > tau, and every other term
    is >= its share of -slack, so cost(x') - cost(x) > tau - slack >= tau / 2 when
    slack <= tau / 2 (checked). SciPy's answer is optimal up to its rounding, a few ulps of
    the largest cost per row (~1e-16 n relative, far below tau / 2 for any n whose dense
    matrix fits in memory); so it is x. Tight edges (i, j) become arcs
    row i -> the row matched to j (or a sink when j is free): a cycle is a strongly connected
    component of two or more rows, a path one from a releasable row to the sink.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    n, m = cost.shape
    scale = max(float(np.abs(cost).max()), float(np.abs(u).max()), float(np.abs(v).max()))
    if scale == 0.0:  # an all-zero matrix: everything ties
        return False
    tau = tol * scale
    y = np.full(m, -1, np.int64)
    y[x] = np.arange(n)
    free = y < 0
    big_v = float(v.max())
    slack = float(np.abs(cost[np.arange(n), x] - u - v[x]).sum() + (big_v - v[free]).sum())
    tight_rows, tight_cols, n_tight = [], [], 0
    block = max(1, BLOCK_ELEMS // m)
    for s in range(0, n, block):
        part = cost[s:s + block] - v  # [b, m] c_ij - v_j
        part -= u[s:s + block, None]  # rc_ij
        slack += float(np.maximum(-part.min(axis=1), 0.0).sum())
        part[np.arange(len(part)), x[s:s + block]] = np.inf  # matched edges are not arcs
        ii, jj = np.nonzero(part <= tau)
        tight_rows.append(ii + s)
        tight_cols.append(jj)
        n_tight += len(ii)
        if n_tight > MAX_TIGHT_PER_NODE * (n + m):
            return False
    if slack > tau / 2:
        return False
    rows, cols = np.concatenate(tight_rows), np.concatenate(tight_cols)
    if len(rows) == 0:
        return True
    sink = n
    heads = np.where(free[cols], sink, y[cols])  # [t]
    graph = csr_array((np.ones(len(rows), np.int8), (rows, heads)), shape=(n + 1, n + 1))
    n_comp = connected_components(graph, directed=True, connection="strong",
                                  return_labels=False)
    if n_comp < n + 1:  # a component of several rows: a cycle of tight edges
        return False
    if not free.any():
        return True
    reach = breadth_first_order(graph.T.tocsr(), sink, directed=True,
                                return_predecessors=False)  # the sink and rows that reach it
    releasable = big_v - v[x] <= tau  # [n]
    reach = reach[reach < n]
    return not releasable[reach].any()
