"""Match two SAE dictionaries one-to-one by decoder cosine.

`match_decoders(dec_a, dec_b)` L2-normalises the decoder rows (float32) and finds the
one-to-one matching of min(n_a, n_b) pairs with the largest total cosine.

Solvers live in `SOLVERS` (name -> function(a_unit [n_a, d], b_unit [n_b, d], candidates)
-> Matching):

- "native" (the default when the C++ extension is built): top-K cosine candidates of every
  row and every column (`ops.cosine_topk`, one blockwise pass, never the [n_a, n_b] matrix),
  rescored exactly (float64 dot products of the float32 unit rows), solved by the sparse
  shortest-augmenting-path solver of csrc/lap (which keeps its LP duals u, v), then an
  optimality certificate: every pair outside the candidates must have a non-negative reduced
  cost -cos_ij - u_i - v_j. The K-th best candidate of a row (and of a column) bounds its
  unseen cosines up to a rigorous float32 rounding margin, so the check is O(n log n); rows
  that fail get their full row computed (blockwise GEMM), every entry that could have a
  negative reduced cost joins the candidates, and the solve warm-starts. `certified=True`
  only when that proof went through; past the edge budget the result says
  `certified=False`. Small problems are solved densely (float64 cosines, native dense solver).
- "lapjv", "scipy": dense float32 cosine GEMM upcast to float64, exact (`certified=True`).

Values: the dense solvers, and the native one on small problems (n_a * n_b <=
DENSE_NATIVE_MAX), maximise the float32 GEMM cosines upcast to float64 (the original study's
recipe). The native sparse path maximises float64 dot products of the same float32 unit rows
(a GEMM's float32 values depend on its blocking, so they cannot be rescored pair by pair).
The two differ by ~1e-7 per pair, so totals agree to ~1e-7 relative; each is exact for its
own values (the tests compare each against SciPy on the same values).

`linear_assignment(cost_matrix, maximize=False)` is a drop-in for
`scipy.optimize.linear_sum_assignment`: same signature, defaults, rectangular handling and
errors; finite matrices are solved by the native dense solver (else lapjv with padding),
everything else (infinite entries, NaN, bad shapes or dtypes, empty) by SciPy itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

EPS = 1e-12  # rows shorter than this are treated as zero vectors (cosine 0 with everything)


@dataclass
class Matching:
    """A one-to-one matching between the features of dictionary A and dictionary B."""

    rows: np.ndarray  # [n] int64, indices into A, sorted ascending
    cols: np.ndarray  # [n] int64, indices into B; rows[i] is matched to cols[i]
    cosines: np.ndarray  # [n] float64, cosine of each matched pair
    certified: bool  # True when the matching is proven optimal (always, for dense solvers)
    solver: str  # the solver that produced it ("native", "lapjv", "scipy")
    timings: dict[str, float] = field(default_factory=dict)  # seconds: gemm_s, solve_s, ...
    info: dict = field(default_factory=dict)  # native: k, edges, rounds, gap_bound, ...

    @property
    def total(self) -> float:
        """Total cosine of the matching (the quantity it maximises)."""
        return float(self.cosines.sum())

    def __len__(self) -> int:
        return int(self.rows.shape[0])


# ------------------------------------------------------------------ dense assignment


def lapjv_available() -> bool:
    try:
        import lapjv  # noqa: F401
    except ImportError:
        return False
    return True


def _lapjv_min(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a finite float64 [n, m] matrix with lapjv (square only).

    A rectangular problem (n < m, say) is padded to [m, m] with m - n dummy rows that all hold
    one constant c. Every complete assignment of the square matrix puts the dummy rows on some
    m - n columns, so it costs (real part) + (m - n) * c: the constant shifts every candidate's
    total by the same amount and the argmin is unchanged. Conversely every one-to-one matching
    of the n real rows extends to a square assignment (dummies take the unused columns). So the
    real rows of an optimal square solution are an optimal rectangular matching, for ANY c.
    c only changes speed: c = min(cost) is fast; a constant above the real costs makes
    lapjv crawl through ties (measured: 0.16 s vs 9.5 s at 2048 x 4096).
    """
    import lapjv

    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    transposed = n > m
    if transposed:  # pad rows only: solve the transpose and swap back
        cost, (n, m) = cost.T, (m, n)
    if n < m:
        square = np.empty((m, m), dtype=np.float64)
        square[:n] = cost
        square[n:] = cost.min()
    else:
        square = np.ascontiguousarray(cost, dtype=np.float64)
    # force_doubles: without it lapjv 1.3 solves in float32 and returns suboptimal matchings
    # when totals differ by less than float32 resolution (seen here, ~1e-7).
    row_to_col = lapjv.lapjv(square, force_doubles=True)[0][:n].astype(np.int64)  # [n]
    rows = np.arange(n, dtype=np.int64)
    if transposed:
        order = np.argsort(row_to_col)
        return row_to_col[order], rows[order]
    return rows, row_to_col


def _native_dense_min(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a finite float64 [n, m] matrix with the native dense solver."""
    from . import _lap

    n, m = cost.shape
    if n <= m:
        x, _, _ = _lap.solve_dense(cost)
        return np.arange(n, dtype=np.int64), x.astype(np.int64)
    x, _, _ = _lap.solve_dense(np.ascontiguousarray(cost.T))  # [m] row of A for each column
    order = np.argsort(x)
    return x[order].astype(np.int64), np.arange(m, dtype=np.int64)[order]


def linear_assignment(cost_matrix, maximize=False):
    """Drop-in for `scipy.optimize.linear_sum_assignment(cost_matrix, maximize=False)`.

    Returns `(row_ind, col_ind)` (int64, `row_ind` sorted) with `cost_matrix[row_ind, col_ind]`
    of minimal (or maximal) sum; rectangular matrices match min(n, m) pairs. Finite matrices
    are solved in float64 by the native dense solver when built, else by lapjv (padded to
    square) when installed. Everything else (infinite entries, which SciPy treats as
    forbidden pairs, NaN, wrong dimensions or dtypes, empty matrices) is passed to SciPy, so
    semantics and error messages are SciPy's own.
    """
    from scipy.optimize import linear_sum_assignment

    from . import _lap

    arr = np.asarray(cost_matrix)
    native = _lap.available()
    if ((not native and not lapjv_available()) or arr.ndim != 2 or arr.size == 0
            or arr.dtype.kind not in "biuf" or not np.isfinite(arr).all()):
        row, col = linear_sum_assignment(cost_matrix, maximize=maximize)
        return row.astype(np.int64, copy=False), col.astype(np.int64, copy=False)
    cost = arr.astype(np.float64)  # a copy: we may negate it in place
    if maximize:
        np.negative(cost, out=cost)
    return _native_dense_min(cost) if native else _lapjv_min(cost)


# ------------------------------------------------------------------ solvers on decoders


def _cosine_matrix(a_unit: torch.Tensor, b_unit: torch.Tensor) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    cos = (a_unit @ b_unit.T).numpy()  # [n_a, n_b] float32
    return cos, time.perf_counter() - t0


DENSE_BUDGET_BYTES = 16 << 30  # dense solvers: float32 + float64 matrices at most this


def _dense_matching(a_unit, b_unit, solver: str, solve: Callable) -> Matching:
    need = 12 * a_unit.shape[0] * b_unit.shape[0]  # [n_a, n_b] float32 + float64 copy
    if need > DENSE_BUDGET_BYTES:
        raise ValueError(f"match_decoders: solver {solver!r} needs the dense "
                         f"{a_unit.shape[0]} x {b_unit.shape[0]} cosine matrix ({need / 2**30:.0f} "
                         f"GiB > {DENSE_BUDGET_BYTES / 2**30:.0f} GiB budget); use "
                         "solver='native' (build saefast with a C++ compiler)")
    cos32, gemm_s = _cosine_matrix(a_unit, b_unit)
    t0 = time.perf_counter()
    cos64 = cos32.astype(np.float64)  # [n_a, n_b]: the solver sees the same values as SciPy would
    rows, cols = solve(cos64)
    solve_s = time.perf_counter() - t0
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    cosines = cos32[rows, cols].astype(np.float64)
    return Matching(rows=rows, cols=cols, cosines=cosines, certified=True, solver=solver,
                    timings={"gemm_s": gemm_s, "solve_s": solve_s})


def _solve_lapjv(a_unit, b_unit, candidates=None) -> Matching:
    def solve(cos64):
        np.negative(cos64, out=cos64)  # lapjv minimises; cos64 is our private copy
        return _lapjv_min(cos64)
    return _dense_matching(a_unit, b_unit, "lapjv", solve)


def _solve_scipy(a_unit, b_unit, candidates=None) -> Matching:
    from scipy.optimize import linear_sum_assignment

    return _dense_matching(a_unit, b_unit, "scipy",
                           lambda cos64: linear_sum_assignment(cos64, maximize=True))


# ------------------------------------------------------------------ native: sparse + certificate

DEFAULT_CANDIDATES = 32  # K: top-K cosines kept per row and per column
DENSE_NATIVE_MAX = 1 << 22  # n_a * n_b up to this: solve densely (float64 matrix <= 32 MiB)
EDGE_BUDGET_BYTES = 3 << 30  # candidate graph memory (~40 bytes an edge with temporaries)
MAX_ROUNDS = 50  # certificate rounds (solve, check, add edges) before giving up
HEADROOM = 0.02  # recomputed rows also keep entries within this of a negative reduced cost
DUAL_TOL = 1e-11  # reduced costs >= -DUAL_TOL count as non-negative (float64 rounding)
RECOMPUTE_BLOCK_ELEMS = 1 << 24  # largest [rows, n_b] float32 block when recomputing rows
_U32 = 2.0 ** -24  # float32 unit roundoff


def gemm_margin(d: int) -> float:
    """A rigorous bound on |float32 GEMM cosine - float64 cosine| for unit float32 rows in d dims.

    A float32 dot product of d terms with float32 accumulation (any summation order, with or
    without FMA) errs by at most gamma_d * sum_k |a_k b_k| <= gamma_d * |a| |b|, gamma_d =
    d u / (1 - d u), u = 2^-24 (Higham, Accuracy and Stability, 3.1). A kernel that first
    re-normalises the rows in float32 perturbs each by a relative (d + 2) u at most. |a|, |b|
    are 1 + O(d u). The float64 rescoring errs by ~d 2^-53. Sum with a factor 2 to spare."""
    return 2.0 * (2 * d + 16) * _U32 + 1e-12


def _column_bound(r: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """W_i = max_j (min(r_i, s_j) + v_j) for every row i, in O((n + m) log m).

    Columns sorted by s: those with s_j >= r_i contribute r_i + max v_j (a suffix maximum),
    the others s_j + v_j (a prefix maximum)."""
    order = np.argsort(s, kind="stable")
    s_sorted, v_sorted = s[order], v[order]
    prefix = np.maximum.accumulate(s_sorted + v_sorted)  # [m] max over the first t columns
    suffix = np.maximum.accumulate(v_sorted[::-1])[::-1]  # [m] max over columns t..m-1
    at = np.searchsorted(s_sorted, r, side="left")  # [n] first column with s_j >= r_i
    m = len(s)
    out = np.full(len(r), -np.inf)
    has_hi = at < m
    out[has_hi] = r[has_hi] + suffix[at[has_hi]]
    has_lo = at > 0
    out[has_lo] = np.maximum(out[has_lo], prefix[at[has_lo] - 1])
    return out


class _Graph:
    """The candidate edges of a sparse problem (n rows <= m columns) in CSR, sorted by (row,
    column), with costs -cosine in float64 (exact rescoring of the float32 unit rows)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, indptr: np.ndarray, cols: np.ndarray):
        from . import _lap

        self.a, self.b, self.m = a, b, b.shape[0]
        self._set(indptr, cols)
        self.cost = -_lap.rescore(a, b, self.rows, self.cols)  # [E]

    def _set(self, indptr: np.ndarray, cols: np.ndarray) -> None:
        self.indptr = indptr  # [n + 1]
        self.cols = cols.astype(np.int32, copy=False)  # [E]
        self.rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))  # [E]

    @property
    def keys(self) -> np.ndarray:
        return self.rows * self.m + self.cols  # [E] sorted

    def find(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Edge positions of the pairs (rows[t], cols[t]), which must be edges."""
        return np.searchsorted(self.keys, rows * self.m + cols)

    def add(self, keys: np.ndarray) -> None:
        """Add new (absent) edges given as sorted keys row * m + col."""
        from . import _lap

        rows, cols = keys // self.m, keys % self.m
        cost = -_lap.rescore(self.a, self.b, rows, cols)
        at = np.searchsorted(self.keys, keys)
        all_cols = np.insert(self.cols, at, cols.astype(np.int32))
        self.cost = np.insert(self.cost, at, cost)
        counts = np.diff(self.indptr) + np.bincount(rows, minlength=len(self.indptr) - 1)
        indptr = np.zeros_like(self.indptr)
        np.cumsum(counts, out=indptr[1:])
        self._set(indptr, all_cols)

    def __len__(self) -> int:
        return len(self.cols)


def _recompute_rows(graph: _Graph, rows: np.ndarray, u: np.ndarray, v: np.ndarray,
                    margin: float, headroom: float) -> tuple[np.ndarray, np.ndarray]:
    """Full float32 cosine rows for `rows` (blockwise): the keys of every non-candidate entry
    that could have a reduced cost below `headroom` (cos + margin + headroom >= -u_i - v_j), and
    per row W_i >= max over the entries left out of (cos_ij + v_j) (-inf if none)."""
    a, b, m = graph.a, graph.b, graph.m
    # float32 sums cos + v and the thresholds err by at most a few ulps of these magnitudes
    slack = 8 * _U32 * (2.0 + float(np.abs(u[rows]).max()) + float(np.abs(v).max()))
    block = max(1, RECOMPUTE_BLOCK_ELEMS // m)
    v32 = torch.from_numpy(v.astype(np.float32))
    new_keys, w = [], np.full(len(rows), -np.inf)
    for s0 in range(0, len(rows), block):
        blk = rows[s0:s0 + block]
        vals = a[torch.from_numpy(blk)] @ b.T  # [f, m] float32 cosines
        vals += v32  # cos_ij + v_j
        lo, hi = graph.indptr[blk], graph.indptr[blk + 1]
        counts = hi - lo
        local = np.repeat(np.arange(len(blk)), counts)  # existing candidates: not "unseen"
        pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        cand = graph.cols[np.repeat(lo, counts) + pos]
        vals.view(-1)[torch.from_numpy(local * m + cand)] = -np.inf
        thr = torch.from_numpy((-u[blk] - margin - headroom - slack).astype(np.float32))
        hit = vals >= thr[:, None]  # [f, m]
        ii, jj = torch.nonzero(hit, as_tuple=True)
        new_keys.append(blk[ii.numpy()] * m + jj.numpy())
        vals.masked_fill_(hit, -np.inf)
        w[s0:s0 + len(blk)] = vals.max(dim=1).values.double().numpy() + slack
    keys = np.sort(np.concatenate(new_keys)) if new_keys else np.zeros(0, np.int64)
    return keys, w


def _solve_dense_native(cos: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Small problems: the float64 cosine matrix [n, m] (n <= m), native dense solve, duals
    checked on every pair."""
    from . import _lap

    x, u, v = _lap.solve_dense(-cos)
    rc = -cos - u[:, None] - v[None, :]  # [n, m] reduced costs
    free = np.ones(cos.shape[1], bool)
    free[x] = False
    gap = float(np.maximum(-rc, 0).max(axis=1).sum()
                + np.abs(rc[np.arange(len(x)), x]).sum()
                + (v.max() - v[free]).sum())
    return x, cos[np.arange(len(x)), x], {"dense": True, "gap_bound": gap,
                                            "edges": int(cos.size), "rounds": 1}


def _solve_sparse_native(a: torch.Tensor, b: torch.Tensor, k: int, timings: dict
                         ) -> tuple[np.ndarray, np.ndarray, bool, dict]:
    """Candidates + sparse solve + certificate; a [n, d], b [m, d] unit float32 rows, n <= m."""
    from saefast import ops
    from . import _lap

    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    margin = gemm_margin(d)
    t0 = time.perf_counter()
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(a, b, k)  # [n,k], [n,k], [m,k], [m,k]
    timings["candidates_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    graph = _Graph(a, b, *_lap.candidate_graph(row_idx, col_idx))
    # Unseen (i, j): j is not in row i's top-k and i not in column j's, so the float32 cosine
    # is <= the k-th best of the row (r_i) and of the column (s_j); with all of a row (column)
    # kept, nothing is unseen there (-inf).
    r = row_vals[:, k - 1].double().numpy() if k < m else np.full(n, -np.inf)  # [n]
    s = col_vals[:, k - 1].double().numpy() if k < n else np.full(m, -np.inf)  # [m]
    timings["graph_s"] = time.perf_counter() - t0

    max_edges = EDGE_BUDGET_BYTES // 40
    w_exact = np.full(n, np.inf)  # recomputed rows: max over unseen j of cos_ij + v_j
    x = v = None
    info = {"k": k, "margin": margin, "rounds": 0, "rows_recomputed": 0, "stuck_rows": 0,
            "cold_restarts": 0, "failing_rows": [], "solver_stats": []}
    solve_s = certify_s = 0.0
    certified = False
    while True:
        info["rounds"] += 1
        t0 = time.perf_counter()
        sol = _lap.solve_sparse(graph.indptr, graph.cols, graph.cost, m, x, v)
        solve_s += time.perf_counter() - t0
        info["solver_stats"].append(dict(sol.stats, seconds=time.perf_counter() - t0))
        t0 = time.perf_counter()
        x, u, v = sol.row_to_col, sol.u, sol.v
        if len(sol.stuck):  # no augmenting path among the candidates: give those rows all of B
            info["stuck_rows"] += len(sol.stuck)
            stuck = np.sort(sol.stuck)
            keys = (stuck[:, None] * m + np.arange(m)[None, :]).reshape(-1)
            keys = np.setdiff1d(keys, graph.keys, assume_unique=True)  # sorted
            if len(graph) + len(keys) > max_edges or info["rounds"] >= MAX_ROUNDS:
                certify_s += time.perf_counter() - t0
                break
            graph.add(keys)
            w_exact[stuck] = -np.inf
            certify_s += time.perf_counter() - t0
            continue
        free = np.ones(m, bool)
        free[x] = False
        if m > n and (v[free] < v.max() - DUAL_TOL).any():
            # A warm start released a column whose v had dropped below the free columns'
            # level; it stayed free, so the rectangular duals fail. Solve again from cold.
            info["cold_restarts"] += 1
            x = v = None
            w_exact[:] = np.inf
            certify_s += time.perf_counter() - t0
            if info["rounds"] >= MAX_ROUNDS:
                break
            continue
        rc = graph.cost - u[graph.rows] - v[graph.cols]  # [E] reduced costs of the candidates
        row_viol = -np.minimum.reduceat(rc, graph.indptr[:-1])  # per row, the worst (every
        row_viol[np.diff(graph.indptr) == 0] = 0.0  # row has >= k edges; reduceat needs one)
        # The largest possible cos_ij + v_j over unseen j, then reduced cost >= -(that + u_i).
        w = np.minimum(_column_bound(r, s, v), w_exact)
        unseen = w + margin + u  # > 0: an unseen pair might have a negative reduced cost
        failing = np.flatnonzero(unseen > DUAL_TOL)
        info["failing_rows"].append(int(len(failing)))
        if len(failing) == 0:
            matched_rc = np.abs(graph.cost[graph.find(np.arange(n), x)] - u - v[x])
            info["gap_bound"] = float(np.maximum(row_viol, 0).sum() + matched_rc.sum()
                                      + (v.max() - v[free]).sum() if m > n else
                                      np.maximum(row_viol, 0).sum() + matched_rc.sum())
            certified = bool(row_viol.max() <= DUAL_TOL)
            certify_s += time.perf_counter() - t0
            break
        if info["rounds"] >= MAX_ROUNDS:
            certify_s += time.perf_counter() - t0
            break
        keys, w_new = _recompute_rows(graph, failing, u, v, margin, HEADROOM)
        info["rows_recomputed"] += len(failing)
        w_exact[failing] = np.minimum(w_exact[failing], w_new)  # valid while v only decreases
        if len(keys) == 0:  # every failing row checked entry by entry: nothing unseen is negative
            info["gap_bound"] = float(np.maximum(row_viol, 0).sum())
            certified = bool(row_viol.max() <= DUAL_TOL)
            certify_s += time.perf_counter() - t0
            break
        if len(graph) + len(keys) > max_edges:
            certify_s += time.perf_counter() - t0
            info["budget_exceeded"] = True
            break
        graph.add(keys)
        certify_s += time.perf_counter() - t0
    timings["solve_s"] = solve_s
    timings["certify_s"] = certify_s
    info["edges"] = len(graph)
    on_graph = x >= 0
    x = _complete(x, m)
    cos = np.empty(n)
    cos[on_graph] = -graph.cost[graph.find(np.flatnonzero(on_graph), x[on_graph])]
    if not on_graph.all():  # rows filled in by _complete: score them directly
        miss = np.flatnonzero(~on_graph)
        cos[miss] = _lap.rescore(a, b, miss, x[miss])
    return x, cos, certified, info


def _complete(x: np.ndarray, m: int) -> np.ndarray:
    """Give rows left unassigned (-1) distinct free columns, so the result is a matching."""
    missing = np.flatnonzero(x < 0)
    if len(missing):
        x = x.copy()
        used = np.zeros(m, bool)
        used[x[x >= 0]] = True
        x[missing] = np.flatnonzero(~used)[:len(missing)]
    return x


def _solve_native(a_unit, b_unit, candidates=None) -> Matching:
    from . import _lap

    if not _lap.available():
        raise ValueError(f"solver 'native' is unavailable ({_lap.unavailable_reason()}); "
                         "use solver='auto', 'lapjv' or 'scipy'")
    t_start = time.perf_counter()
    transposed = a_unit.shape[0] > b_unit.shape[0]
    a, b = (b_unit, a_unit) if transposed else (a_unit, b_unit)  # n <= m
    n, m = a.shape[0], b.shape[0]
    k = DEFAULT_CANDIDATES if candidates is None else int(candidates)
    if k < 1:
        raise ValueError(f"match_decoders: candidates must be a positive integer, got {candidates!r}")
    timings: dict[str, float] = {}
    if n * m <= DENSE_NATIVE_MAX or k >= n:
        # Small: the dense solvers' values (float32 GEMM in the caller's orientation, upcast),
        # so small problems give exactly what lapjv / SciPy / the original study give.
        cos32, timings["gemm_s"] = _cosine_matrix(a_unit, b_unit)  # [n_a, n_b]
        t0 = time.perf_counter()
        cos64 = np.ascontiguousarray(cos32.T if transposed else cos32, dtype=np.float64)
        x, cos, info = _solve_dense_native(cos64)
        timings["solve_s"] = time.perf_counter() - t0
        certified = info["gap_bound"] <= DUAL_TOL * n + 1e-12
    else:
        x, cos, certified, info = _solve_sparse_native(a, b, min(k, n), timings)
    timings["total_s"] = time.perf_counter() - t_start
    rows, cols = np.arange(n, dtype=np.int64), x.astype(np.int64)
    if transposed:
        order = np.argsort(cols)
        rows, cols, cos = cols[order], rows[order], cos[order]
    return Matching(rows=rows, cols=cols, cosines=np.asarray(cos, np.float64),
                    certified=bool(certified), solver="native", timings=timings, info=info)


# name -> function(a_unit [n_a, d] float32, b_unit [n_b, d] float32, candidates) -> Matching
SOLVERS: dict[str, Callable[..., Matching]] = {
    "native": _solve_native,
    "lapjv": _solve_lapjv,
    "scipy": _solve_scipy,
}


def native_available() -> bool:
    """Whether the native sparse solver (csrc/lap) is built and loaded."""
    from . import _lap

    return _lap.available()


def resolve_solver(solver: str) -> str:
    """The concrete solver name for `solver` ("auto" -> native if built, else lapjv if
    installed, else scipy)."""
    if solver == "auto":
        if native_available():
            return "native"
        return "lapjv" if lapjv_available() else "scipy"
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of auto, {', '.join(SOLVERS)}")
    if solver == "lapjv" and not lapjv_available():
        raise ValueError("solver 'lapjv' needs the lapjv package (pip install lapjv); "
                         "or use solver='scipy'")
    return solver


def _as_matrix(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"match_decoders: {name} must be a torch tensor or numpy array, "
                         f"got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"match_decoders: {name} must be 2-D [n_features, d], "
                         f"got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"match_decoders: {name} is empty, shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"match_decoders: {name} has unsupported dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float32)
    if not np.isfinite(x.numpy()).all():  # numpy: torch's isfinite is slow on busy CPUs
        raise ValueError(f"match_decoders: {name} contains NaN or infinite values")
    return x


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (float32); near-zero rows stay zero instead of dividing by 0."""
    return torch.nn.functional.normalize(x.float(), dim=1, eps=EPS).contiguous()  # [n, d]


def match_decoders(dec_a, dec_b, *, solver: str = "auto", candidates: int | None = None
                   ) -> Matching:
    """Maximum-total-cosine one-to-one matching between the rows of dec_a and dec_b.

    dec_a [n_a, d], dec_b [n_b, d]: decoder rows (features), torch or numpy, any scale.
    solver: "auto" (native when built, else lapjv, else scipy), "native", "lapjv", "scipy".
    candidates: K, the top-K cosines per row and per column the native solver starts from
    (default 32; the certificate adds whatever else is needed). Ignored by dense solvers.
    Returns min(n_a, n_b) pairs as a `Matching` (rows sorted ascending).
    """
    name = resolve_solver(solver)
    a = _as_matrix(dec_a, "dec_a")
    b = _as_matrix(dec_b, "dec_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"match_decoders: dec_a has d={a.shape[1]} but dec_b has d={b.shape[1]}; "
                         "both must be [n_features, d] with the same d")
    if candidates is not None and (isinstance(candidates, bool) or int(candidates) != candidates
                                   or candidates < 1):
        raise ValueError(f"match_decoders: candidates must be a positive integer, got {candidates!r}")
    return SOLVERS[name](unit_rows(a), unit_rows(b), candidates)
