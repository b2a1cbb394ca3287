"""The null statistics a report's per-feature evidence (`saefast.stats.evidence`) needs, per null
and pair shape: pooled matched cosines (p-values), nearest-neighbour and maximum-cardinality
statistics of null pairs, within-SAE redundancy, and the null seed-count curves' memo. Each is
computed once per null, threshold and shape in a process (a sweep's groups share them)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from saefast.match import unit_rows
from saefast.match.parallel import computed_once
from saefast.stats import recurrence as rec
from saefast.stats.null_model import NullModel, null_size, report_null_size

NEAREST_NULL_MIN = 16000  # nearest cosines per side of a null pair shape, at least: the bulk-matched
# share (stats.share) reads z up to ~4 (p ~ 3e-5); with 4,000 a bulk 2 null SDs up hit the
# p-value floor and its share was off by up to 0.13, with 16,000 by <= 0.04
# null dictionary sets for the nearest / max-cardinality / redundancy nulls: enough for
# NEAREST_NULL_MIN values per pool and at most NULL_DICT_DRAWS for the max-cardinality and
# redundancy pools (8 up to 2,048 features, where 8 draws are what the pool needs anyway; 1
# from 16,000, where one draw fills the pool and each costs seconds)
NULL_DICT_DRAWS = 8
MIN_DRAWS = 1


def pool_draws(n: int) -> int:
    """How many null dictionary sets of n features pool >= NEAREST_NULL_MIN values."""
    return max(MIN_DRAWS, -(-NEAREST_NULL_MIN // max(1, n)))
REDUNDANCY_QUERIES = 4096  # rows of a null draw whose redundancy is pooled (all up to this)
_BLOCK_BYTES = 32 << 20  # within-SAE cosines: one [block, n] float32 block at a time


def _unit_np(x) -> np.ndarray:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return unit_rows(t.detach().cpu()).numpy()


def redundancy(rows, queries: int | None = None) -> np.ndarray:
    """[n] each row's max cosine to ANOTHER row of the same dictionary (float32 unit rows,
    blockwise; -inf for a dictionary of one row); with `queries`, only the first that many
    rows' (each still against all n): a null draw's rows are exchangeable, so its pool needs
    no more, and at 16,384 features all of them cost seconds a draw."""
    u = torch.as_tensor(_unit_np(rows))
    n = u.shape[0]
    q = n if queries is None else min(n, int(queries))
    block = max(1, _BLOCK_BYTES // (4 * n))
    if q < n:
        out = torch.full((q,), -float("inf"))
        for s in range(0, q, block):
            c = u[s:min(s + block, q)] @ u.T  # [block, n]
            idx = torch.arange(s, min(s + block, q))
            c[idx - s, idx] = -float("inf")
            out[s:s + block] = c.max(1).values
        return out.double().numpy()
    # all rows: the cosine matrix is symmetric, so each block of rows meets only the rows
    # from its own on, and each cosine updates both its row's max and its column's (half
    # the products of the full [n, n])
    out = torch.full((n,), -float("inf"))
    for s in range(0, n, block):
        e = min(s + block, n)
        c = u[s:e] @ u[s:].T  # [e - s, n - s]
        idx = torch.arange(e - s)
        c[idx, idx] = -float("inf")
        out[s:e] = torch.maximum(out[s:e], c.max(1).values)
        out[s:] = torch.maximum(out[s:], c.max(0).values)
    return out.double().numpy()


_MEMO: dict[tuple, dict] = {}  # per (null key, threshold): {"matched"|"pair"|"red": {shape: ...}}


class EvidenceNulls:
    """The null statistics a report needs, computed once per null, threshold and shape in a
    process (a sweep's groups share them); `shapes()` lists those this report used. Sizes
    above 1,024 are drawn on `null_model.null_size`'s grid, so nearby shapes share draws."""

    def __init__(self, null: NullModel, threshold: float, solver: str):
        self.null, self.t, self.solver = null, float(threshold), solver
        memo = _MEMO.setdefault((null.key, self.t),
                                {"matched": {}, "pair": {}, "red": {}, "curves": {}})
        self._matched, self._pair, self._red = memo["matched"], memo["pair"], memo["red"]
        self.curves = memo["curves"]  # _null_curves, per tuple of run sizes
        self._used: set[tuple[int, int]] = set()

    def matched(self, n_a: int, n_b: int) -> np.ndarray:
        key = n_a, n_b = null_size(n_a), null_size(n_b)
        self._used.add(key)
        # n_min >= what BY needs; shared with summary.nulls. Each memo entry is computed
        # once even when threads ask together (a report draws ahead: `prefetch`)
        return computed_once(self._matched, key, lambda: np.sort(
            self.null.matched(n_a, n_b, report_null_size(n_a, n_b))))

    def pair(self, n_a: int, n_b: int) -> dict:
        """Nearest and max-cardinality statistics of null pairs of this shape: enough draws
        that each side pools >= NEAREST_NULL_MIN nearest cosines (Storey's pi0 needs p-values
        resolved near lambda, not in the far tail; `pool_draws`), max-cardinality on the
        first NULL_DICT_DRAWS of them."""
        key = n_a, n_b = null_size(n_a), null_size(n_b)
        return computed_once(self._pair, key, lambda: self._draw_pair(n_a, n_b))

    def _draw_pair(self, n_a: int, n_b: int) -> dict:
        rng = np.random.default_rng([n_a, n_b, self.null.d, 11])
        near_a, near_b, most = [], [], []
        for k in range(pool_draws(min(n_a, n_b))):
            a, b = self.null.sample([n_a, n_b], rng)
            best_a, best_b = rec.nearest_cosines(a, b)
            near_a.append(best_a), near_b.append(best_b)
            if k < NULL_DICT_DRAWS:
                most.append(rec.max_pairs_at(a, b, [self.t], (best_a, best_b))[self.t]
                            / min(n_a, n_b))
        near_a, near_b = np.sort(np.concatenate(near_a)), np.sort(np.concatenate(near_b))
        near = np.concatenate([near_a, near_b])
        return {"near_a": near_a, "near_b": near_b,
                "nearest_median": float(np.median(near)),
                "nearest_fraction_above": float(np.mean(near >= self.t)),
                "max_cardinality_fraction": float(np.mean(most)),
                "one_to_one_fraction": float(np.mean(self.matched(n_a, n_b) >= self.t))}

    def redundancy(self, n: int) -> np.ndarray:
        n = null_size(n)
        return computed_once(self._red, n, lambda: self._draw_redundancy(n))

    def _draw_redundancy(self, n: int) -> np.ndarray:
        rng = np.random.default_rng([n, self.null.d, 12])
        return np.concatenate([
            redundancy(self.null.sample([n], rng)[0], queries=REDUNDANCY_QUERIES)
            for _ in range(min(NULL_DICT_DRAWS, pool_draws(n)))])

    def prefetch(self, shapes: Sequence[tuple[int, int]], sizes: Sequence[int]
                 ) -> tuple[list, list]:
        """Zero-argument tasks that draw ahead what a report's evidence will ask this null
        for, as (matched, rest): the matched pools of each pair shape (matchings, which the
        nearest pools and the report's pairs also wait for), then the nearest pools of each
        shape and the redundancy pool of each run size, largest first. A report runs them
        beside its own pair matchings, which they do not depend on, so no core waits; the
        evidence then finds them memoised."""
        shapes = sorted({(null_size(a), null_size(b)) for a, b in shapes},
                        key=lambda ab: -ab[0] * ab[1])
        sizes = sorted({null_size(n) for n in sizes}, reverse=True)
        return ([lambda ab=ab: self.matched(*ab) for ab in shapes],
                [lambda ab=ab: self.pair(*ab) for ab in shapes]
                + [lambda n=n: self.redundancy(n) for n in sizes])

    def shapes(self) -> list[dict]:
        out = []
        for n_a, n_b in sorted(self._used):
            c = self._matched[n_a, n_b]
            q = np.quantile(c, [0.5, 0.95, 0.99, 0.999])
            out.append({"n_a": n_a, "n_b": n_b, "d": self.null.d, "n_cosines": int(c.size),
                        "median": float(q[0]),
                        "quantiles": {"0.95": float(q[1]), "0.99": float(q[2]),
                                      "0.999": float(q[3])}})
        return out


