"""The certified sparse solver: an exact maximum-cosine matching without the dense matrix.

Problem. A [n, d] and B [m, d] hold unit float32 rows, n <= m (callers transpose). The value of
a pair is cos_ij, the float64 dot product of the two float32 rows (every product is exact in
float64 and the sum runs in a fixed order, so a pair can be rescored on its own and always
gets the same value; a float32 GEMM's values depend on its blocking). Minimise the cost
sum_i c_{i,x_i}, c_ij = -cos_ij, over assignments x of every row to a distinct column.

Steps (`solve_sparse`). `ops.cosine_topk` keeps the top-K float32 cosines of every row and
every column in one blockwise pass (never the [n, m] matrix); their union is the candidate
graph, rescored in float64. The shortest-augmenting-path solver of csrc/lap solves on the
candidates and returns duals u [n], v [m]. The certificate below then proves the result
optimal for ALL n * m pairs, or names the rows where it cannot.

Certificate. Let rc_ij = c_ij - u_i - v_j and V = max(v). Suppose
  (1) rc_ij >= 0 for every pair (i, j),
  (2) rc_{i,x_i} = 0 on the matching,
  (3) v_j = V for every column the matching leaves free.
For any assignment x', sum_i c_{i,x'_i} >= sum_i u_i + sum_{j in x'} v_j by (1). Any n columns
sum to at least sum_{j in x} v_j, because the m - n columns outside them add at most
(m - n) V, which is exactly what the free columns add by (3). With (2), cost(x') >=
sum_i u_i + sum_{j in x} v_j = cost(x): x is optimal. The solver guarantees (2) and (3) (a
warm start that breaks (3) is re-solved cold) and (1) on the candidates, where it is checked
too. For an unseen pair (i, j), j is outside row i's top-K and i outside column j's top-K, so
cos_ij <= min(r_i, s_j) + margin, r_i and s_j the K-th values of row i and of column j, and
margin = `gemm_margin(d)` a rigorous bound on the float32 kernel's rounding. Hence (1)
holds on every unseen pair of row i when
    W_i + margin <= -u_i,  W_i = max_j (min(r_i, s_j) + v_j),
and `_column_bound` computes W for all rows at once in O((n + m) log m): with columns sorted
by s, those with s_j >= r_i contribute r_i + (a suffix maximum of v), the rest s_j + v_j (a
prefix maximum).

Rows that fail are recomputed in full (blockwise float32 GEMM): entries within `HEADROOM` of
a negative reduced cost join the candidates, and the largest cos_ij + v_j among the entries
left out replaces W_i. That bound stays valid in later rounds because the solver only ever
lowers v. The solve then warm-starts from the previous matching and duals. Rows with no
augmenting path among their candidates get every column. Rounding: reduced costs >=
-`DUAL_TOL` count as non-negative, and `gap_bound` (the sum of every violation of (1)-(3))
bounds how far the total can be from the optimum.

Result: `certified=True` only when every row passed. Past the edge budget
(`EDGE_BUDGET_BYTES`) or `MAX_ROUNDS`, the matching found so far is returned with
`certified=False`. `solve_dense` is the small-problem path: the full float64 matrix, the
native dense solve, and the same gap bound checked on every pair.
"""

from __future__ import annotations

import time

import numpy as np
import torch

EDGE_BUDGET_BYTES = 3 << 30  # candidate graph memory (~40 bytes an edge with temporaries)
MAX_ROUNDS = 50  # certificate rounds (solve, check, add edges) before giving up
HEADROOM = 0.02  # recomputed rows also keep entries within this of a negative reduced cost
DUAL_TOL = 1e-11  # reduced costs >= -DUAL_TOL count as non-negative (float64 rounding)
RECOMPUTE_BLOCK_ELEMS = 1 << 24  # largest [rows, n_b] float32 block when recomputing rows
_U32 = 2.0 ** -24  # float32 unit roundoff


_U_TF32 = 2.0 ** -10  # TF32 keeps 10 mantissa bits: rounding (or truncating) an input errs by < 2^-10


def gemm_margin(d: int, tf32: bool = False) -> float:
    """A rigorous bound on |float32 GEMM cosine - float64 cosine| for unit float32 rows in d dims.

    A float32 dot product of d terms with float32 accumulation (any summation order, with or
    without FMA) errs by at most gamma_d * sum_k |a_k b_k| <= gamma_d * |a| |b|, gamma_d =
    d u / (1 - d u), u = 2^-24 (Higham, Accuracy and Stability, 3.1). A kernel that first
    re-normalises the rows in float32 perturbs each by a relative (d + 2) u at most. |a|, |b|
    are 1 + O(d u). The float64 rescoring errs by ~d 2^-53. Sum with a factor 2 to spare.
    With TF32 (a CUDA GEMM where torch allows it) each input is first cut to 10 mantissa
    bits, so each product errs by a relative (1 + t)^2 - 1 <= 2t + t^2, t = 2^-10, which
    adds (2t + t^2) |a| |b| to the bound."""
    bound = (2 * d + 16) * _U32
    if tf32:
        bound += 2 * _U_TF32 + _U_TF32 ** 2
    return 2.0 * bound + 1e-12


def candidate_device(device, n: int, m: int) -> torch.device:
    """Where the candidates (cosine_topk) are computed: `device` when given, else a GPU when
    one is present and the pair is large enough for it to pay (n * m >= 2^24), else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available() and n * m >= 1 << 24:
        return torch.device("cuda")
    return torch.device("cpu")


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


class CosineScores:
    """The scores of the decoder problem: cos_ij of unit float32 rows a [n, d], b [m, d].

    What the certified solver needs of any score matrix: `top_k(k)` (the k best of every row
    and every column, values descending), `exact(rows, cols)` (float64, the values the
    solution is scored with), `full_rows(rows)` ([len, m] values within `margin` of the exact
    ones), and `margin`. Candidates may come from a GPU (`device`), with TF32 where allowed."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, device=None):
        self.a, self.b = a, b
        self.n, self.m = a.shape[0], b.shape[0]
        self.device = candidate_device(device, self.n, self.m)
        self.tf32 = self.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        self.margin = gemm_margin(a.shape[1], tf32=self.tf32)

    def top_k(self, k: int):
        from saefast import ops

        if self.device.type == "cpu":
            return ops.cosine_topk(self.a, self.b, k)  # [n,k], [n,k], [m,k], [m,k]
        found = ops.cosine_topk(self.a.to(self.device), self.b.to(self.device), k)
        return tuple(t.cpu() for t in found)

    def exact(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        from saefast.match import _lap

        return _lap.rescore(self.a, self.b, rows, cols)

    def full_rows(self, rows: np.ndarray) -> torch.Tensor:
        return self.a[torch.from_numpy(rows)] @ self.b.T  # [f, m] float32 cosines


class _Graph:
    """The candidate edges of a sparse problem (n rows <= m columns) in CSR, sorted by (row,
    column), with costs -score in float64 (the scores' exact values)."""

    def __init__(self, scores, indptr: np.ndarray, cols: np.ndarray):
        self.scores, self.m = scores, scores.m
        self._set(indptr, cols)
        self.cost = -scores.exact(self.rows, self.cols)  # [E]

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
        rows, cols = keys // self.m, keys % self.m
        cost = -self.scores.exact(rows, cols)
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
    """Full score rows for `rows` (blockwise): the keys of every non-candidate entry that
    could have a reduced cost below `headroom` (score + margin + headroom >= -u_i - v_j), and
    per row W_i >= max over the entries left out of (score_ij + v_j) (-inf if none)."""
    m = graph.m
    # float32 sums cos + v and the thresholds err by at most a few ulps of these magnitudes
    slack = 8 * _U32 * (2.0 + float(np.abs(u[rows]).max()) + float(np.abs(v).max()))
    block = max(1, RECOMPUTE_BLOCK_ELEMS // m)
    v32 = torch.from_numpy(v.astype(np.float32))
    new_keys, w = [], np.full(len(rows), -np.inf)
    for s0 in range(0, len(rows), block):
        blk = rows[s0:s0 + block]
        vals = graph.scores.full_rows(blk)  # [f, m] float32 (cosines) or float64
        vals += v32.to(vals.dtype)  # score_ij + v_j
        lo, hi = graph.indptr[blk], graph.indptr[blk + 1]
        counts = hi - lo
        local = np.repeat(np.arange(len(blk)), counts)  # existing candidates: not "unseen"
        pos = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        cand = graph.cols[np.repeat(lo, counts) + pos]
        vals.view(-1)[torch.from_numpy(local * m + cand)] = -np.inf
        thr = torch.from_numpy(-u[blk] - margin - headroom - slack).to(vals.dtype)
        hit = vals >= thr[:, None]  # [f, m]
        ii, jj = torch.nonzero(hit, as_tuple=True)
        new_keys.append(blk[ii.numpy()] * m + jj.numpy())
        vals.masked_fill_(hit, -np.inf)
        w[s0:s0 + len(blk)] = vals.max(dim=1).values.double().numpy() + slack
    keys = np.sort(np.concatenate(new_keys)) if new_keys else np.zeros(0, np.int64)
    return keys, w


def solve_dense(cos: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Small problems: the float64 cosine matrix [n, m] (n <= m), native dense solve, the
    duals checked on every pair. Returns (row_to_col [n], cosines [n], info with gap_bound)."""
    from saefast.match import _lap

    x, u, v = _lap.solve_dense(-cos)
    rc = -cos - u[:, None] - v[None, :]  # [n, m] reduced costs
    free = np.ones(cos.shape[1], bool)
    free[x] = False
    gap = float(np.maximum(-rc, 0).max(axis=1).sum()
                + np.abs(rc[np.arange(len(x)), x]).sum()
                + (v.max() - v[free]).sum())
    return x, cos[np.arange(len(x)), x], {"dense": True, "gap_bound": gap,
                                            "edges": int(cos.size), "rounds": 1}


def solve_sparse(a: torch.Tensor, b: torch.Tensor, k: int, timings: dict, device=None,
                 top1: list | None = None) -> tuple[np.ndarray, np.ndarray, bool, dict]:
    """Candidates + sparse solve + certificate (module docstring) for a [n, d], b [m, d] unit
    float32 rows on the CPU, n <= m, K = k. The candidates come from `candidate_device(device)`
    (a GPU's cosine_topk; TF32 there when torch allows it, with the margin widened to match);
    the solve and the certificate run on the CPU. Fills `timings`; returns (row_to_col [n],
    cosines [n], certified, info: k, margin, device, rounds, rows_recomputed, edges, ...).
    top1: a list that gets (each row's best column [n], each column's best row [m]) by the
    candidates' float32 cosines (`Matching.nearest`)."""
    return solve_scores(CosineScores(a, b, device), k, timings, top1)


def solve_scores(scores, k: int, timings: dict, top1: list | None = None
                 ) -> tuple[np.ndarray, np.ndarray, bool, dict]:
    """The maximum-total-score assignment of every row to a distinct column, certified over
    all n * m pairs, for any `scores` with CosineScores' interface (n <= m, K = k). top1: as
    in `solve_sparse`."""
    from saefast.match import _lap

    n, m = scores.n, scores.m
    dev, tf32, margin = getattr(scores, "device", "cpu"), getattr(scores, "tf32", False), scores.margin
    t0 = time.perf_counter()
    row_vals, row_idx, col_vals, col_idx = scores.top_k(k)  # [n,k], [n,k], [m,k], [m,k]
    timings["candidates_s"] = time.perf_counter() - t0
    if top1 is not None:
        top1[:] = [row_idx[:, 0].numpy().astype(np.int64), col_idx[:, 0].numpy().astype(np.int64)]

    t0 = time.perf_counter()
    graph = _Graph(scores, *_lap.candidate_graph(row_idx, col_idx))
    # Unseen (i, j): j is not in row i's top-k and i not in column j's, so the float32 cosine
    # is <= the k-th best of the row (r_i) and of the column (s_j); with all of a row (column)
    # kept, nothing is unseen there (-inf).
    r = row_vals[:, k - 1].double().numpy() if k < m else np.full(n, -np.inf)  # [n]
    s = col_vals[:, k - 1].double().numpy() if k < n else np.full(m, -np.inf)  # [m]
    timings["graph_s"] = time.perf_counter() - t0

    max_edges = EDGE_BUDGET_BYTES // 40
    w_exact = np.full(n, np.inf)  # recomputed rows: max over unseen j of cos_ij + v_j
    x = v = None
    info = {"k": k, "margin": margin, "device": str(dev), "tf32": tf32, "rounds": 0, "rows_recomputed": 0, "stuck_rows": 0,
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
        cos[miss] = scores.exact(miss, x[miss])
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


