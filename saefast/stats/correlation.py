"""Pearson r between SAE features from their k-sparse codes, and the exact one-to-one
matching on it (the activation view of `stats.equivalence`).

    Codes(values, indices, n_features)       k-sparse codes of T tokens, grouped by feature
    pair_correlations(a, b, a_idx, b_idx)    r of given pairs (T k^2 comparisons)
    correlation_topk / correlation_matrix    top-K per row and column, or every r, blockwise
    firing_partners(a, b)                    each feature's max-r partner among firing ones
    correlation_matching(a, b)               the assignment maximising total r, exact
    fires(a, b, ia, ib)                      which pairs have an r at all

For a block of A's features, every token where one of them is active adds value_a x B's k
code values into a dense [block, F_b] row block of co-activation sums; with each feature's
mean and standard deviation (also from the codes) that block is the exact Pearson r. The
[T, F] activations and the [F_a, F_b] matrix never exist at once. The assignment is exact: a
dense solve up to DENSE_MAX pairs, else the certified sparse solver of `match.certified` on
the top-K candidates, recomputing rows where its certificate needs them. A feature that never
fires on the tokens has zero variance and no r (not r = 0).
"""

from __future__ import annotations

import numpy as np
import torch

BLOCK_ELEMS = 1 << 23  # a [block, F_b] float64 co-activation block (64 MiB)
TOP_K = 16  # correlation candidates per row and per column
DENSE_MAX = 1 << 22  # correlation matchings up to this many pairs are solved densely


class Codes:
    """k-sparse codes of T tokens for F features, with each feature's mean and standard
    deviation over the T tokens (zeros counted) and its entries grouped by feature."""

    def __init__(self, values: torch.Tensor, indices: torch.Tensor, n_features: int):
        self.values = values.double().numpy()  # [T, k]
        self.indices = indices.numpy().astype(np.int64)  # [T, k]
        self.T, self.k = self.values.shape
        self.F = int(n_features)
        flat_i, flat_v = self.indices.ravel(), self.values.ravel()
        keep = flat_v != 0  # a kept latent of value 0 is no activation
        flat_i, flat_v = flat_i[keep], flat_v[keep]
        tokens = np.repeat(np.arange(self.T), self.k)[keep]
        s1 = np.bincount(flat_i, weights=flat_v, minlength=self.F)
        s2 = np.bincount(flat_i, weights=flat_v * flat_v, minlength=self.F)
        self.mean = s1 / self.T  # [F]
        self.std = np.sqrt(np.maximum(s2 / self.T - self.mean ** 2, 0.0))  # [F]
        order = np.argsort(flat_i, kind="stable")
        self.by_feature_token = tokens[order]  # [nnz] tokens, grouped by feature
        self.by_feature_value = flat_v[order]  # [nnz]
        self.starts = np.r_[0, np.cumsum(np.bincount(flat_i, minlength=self.F))]  # [F + 1]

    def subset(self, feats: np.ndarray) -> "Codes":
        """The codes of features `feats` only, renumbered 0..len(feats)-1 (others' entries
        become zeros, which are no activation)."""
        new = np.full(self.F, -1, np.int64)
        new[np.asarray(feats, np.int64)] = np.arange(len(feats))
        idx = new[self.indices]
        vals = np.where(idx >= 0, self.values, 0.0)
        return Codes(torch.from_numpy(vals), torch.from_numpy(np.maximum(idx, 0)), len(feats))


def _correlation_block(a: Codes, b: Codes, f0: int, f1: int) -> np.ndarray:
    """[f1 - f0, F_b] float64 Pearson r of A's features f0..f1-1 with every B feature."""
    return correlation_rows(a, b, np.arange(f0, f1))


def correlation_rows(a: Codes, b: Codes, feats: np.ndarray) -> np.ndarray:
    """[len(feats), F_b] float64 Pearson r of the given A features with every B feature. A
    row's value does not depend on which other rows are computed with it (each bin sums the
    same entries in the same order), so candidates, rows and rescoring agree bit for bit."""
    feats = np.asarray(feats, dtype=np.int64)
    counts = a.starts[feats + 1] - a.starts[feats]  # [f]
    pos = np.repeat(a.starts[feats] - np.cumsum(np.r_[0, counts[:-1]]), counts) + \
        np.arange(counts.sum())  # [e] entries of these features, feature by feature
    tok, val = a.by_feature_token[pos], a.by_feature_value[pos]  # [e]
    row = np.repeat(np.arange(len(feats)), counts)  # [e] local row
    cols = b.indices[tok]  # [e, k_b]
    prods = val[:, None] * b.values[tok]  # [e, k_b]
    co = np.bincount((row[:, None] * b.F + cols).ravel(), weights=prods.ravel(),
                     minlength=len(feats) * b.F)  # co-activation sums, [f * F_b]
    cov = co.reshape(len(feats), b.F) / a.T - np.outer(a.mean[feats], b.mean)
    den = np.outer(a.std[feats], b.std)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, cov / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def correlation_matrix(a: Codes, b: Codes) -> np.ndarray:
    """[F_a, F_b] Pearson r, blockwise (for matchings small enough to solve densely)."""
    block = max(1, BLOCK_ELEMS // b.F)
    return np.vstack([_correlation_block(a, b, f0, min(a.F, f0 + block))
                      for f0 in range(0, a.F, block)])


def correlation_topk(a: Codes, b: Codes, k: int = TOP_K):
    """Top-k correlations of every A feature (row) and every B feature (column), blockwise:
    (row_vals [F_a, k] desc, row_idx, col_vals [F_b, k] desc, col_idx) as torch tensors."""
    k_r, k_c = min(k, b.F), min(k, a.F)
    block = max(1, BLOCK_ELEMS // b.F)
    row_vals, row_idx = np.empty((a.F, k_r)), np.empty((a.F, k_r), np.int64)
    col_vals = np.full((k_c, b.F), -np.inf)
    col_idx = np.zeros((k_c, b.F), np.int64)
    for f0 in range(0, a.F, block):
        f1 = min(a.F, f0 + block)
        r = torch.from_numpy(_correlation_block(a, b, f0, f1))  # [f, F_b]
        v, i = torch.topk(r, k_r, dim=1)
        row_vals[f0:f1], row_idx[f0:f1] = v.numpy(), i.numpy()
        kc = min(k_c, f1 - f0)
        v, i = torch.topk(r, kc, dim=0)  # [kc, F_b]
        both_v = np.vstack([col_vals, v.numpy()])
        both_i = np.vstack([col_idx, i.numpy() + f0])
        top = np.argsort(-both_v, axis=0, kind="stable")[:k_c]
        col_vals = np.take_along_axis(both_v, top, 0)
        col_idx = np.take_along_axis(both_i, top, 0)
    return (torch.from_numpy(row_vals), torch.from_numpy(row_idx),
            torch.from_numpy(col_vals.T.copy()), torch.from_numpy(col_idx.T.copy()))


def pair_correlations(a: Codes, b: Codes, a_idx, b_idx) -> np.ndarray:
    """[n] Pearson r of A feature a_idx[t] with B feature b_idx[t] (each A feature at most
    once, as in a matching): every active entry of a_idx's features looks up its partner in
    B's code of the same token (T k^2 comparisons in all)."""
    ia, ib = np.asarray(a_idx, dtype=np.int64), np.asarray(b_idx, dtype=np.int64)
    partner = np.full(a.F, -1, np.int64)
    partner[ia] = ib
    feat = np.repeat(np.arange(a.F), np.diff(a.starts))  # [nnz] feature of each entry
    want = partner[feat]  # [nnz]
    keep = want >= 0
    tok, val, feat, want = a.by_feature_token[keep], a.by_feature_value[keep], feat[keep], want[keep]
    hit = b.indices[tok] == want[:, None]  # [e, k_b]
    co = np.bincount(feat, weights=val * (b.values[tok] * hit).sum(1), minlength=a.F)[ia]
    cov = co / a.T - a.mean[ia] * b.mean[ib]
    den = a.std[ia] * b.std[ib]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, cov / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


class CorrelationScores:
    """Pearson r between A's and B's features as the certified solver's score matrix (the
    interface of `match.certified.CosineScores`), n = F_a <= m = F_b. Candidate values are
    exact r (kept, so rescoring them costs nothing); other entries come from full rows."""

    margin = 1e-12  # candidates, rows and rescoring compute each r bit for bit alike

    def __init__(self, a: Codes, b: Codes):
        self.a, self.b, self.n, self.m = a, b, a.F, b.F
        self._keys = np.zeros(0, np.int64)
        self._vals = np.zeros(0)

    def top_k(self, k: int):
        rv, ri, cv, ci = correlation_topk(self.a, self.b, k)
        keys = np.r_[np.arange(self.n).repeat(ri.shape[1]) * self.m + ri.numpy().ravel(),
                     ci.numpy().ravel() * self.m + np.arange(self.m).repeat(ci.shape[1])]
        self._keys, first = np.unique(keys, return_index=True)
        self._vals = np.r_[rv.numpy().ravel(), cv.numpy().ravel()][first]
        return rv, ri, cv, ci

    def exact(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        keys = np.asarray(rows, np.int64) * self.m + np.asarray(cols, np.int64)
        at = np.minimum(np.searchsorted(self._keys, keys), max(len(self._keys) - 1, 0))
        out = np.empty(len(keys))
        known = (self._keys[at] == keys) if len(self._keys) else np.zeros(len(keys), bool)
        out[known] = self._vals[at[known]]
        miss = np.flatnonzero(~known)
        if len(miss):
            need, where = np.unique(np.asarray(rows)[miss], return_inverse=True)
            block = max(1, BLOCK_ELEMS // self.m)
            for s0 in range(0, len(need), block):
                blk = need[s0:s0 + block]
                full = correlation_rows(self.a, self.b, blk)  # [f, m]
                sel = (where >= s0) & (where < s0 + len(blk))
                out[miss[sel]] = full[where[sel] - s0, np.asarray(cols)[miss[sel]]]
        return out

    def full_rows(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(correlation_rows(self.a, self.b, rows))  # [f, m] float64


def _firing(a: Codes, b: Codes) -> tuple[np.ndarray, np.ndarray, Codes, Codes]:
    """(A's firing features, B's, A's codes of them, B's): a never-firing feature has r = 0
    with everyone, so the searches below leave it out."""
    fa, fb = np.flatnonzero(a.std > 0), np.flatnonzero(b.std > 0)
    return (fa, fb, a if len(fa) == a.F else a.subset(fa),
            b if len(fb) == b.F else b.subset(fb))


def firing_partners(a: Codes, b: Codes) -> tuple[np.ndarray, np.ndarray]:
    """([F_a] each A feature's max-r partner among B's firing features, [F_b] the same for
    B), -1 for a feature that never fires: one top-1 pass over the firing features only (at
    16,384 features on a few hundred tokens most never fire, and all r with them are 0)."""
    fa, fb, sub_a, sub_b = _firing(a, b)
    best_b, best_a = np.full(a.F, -1, np.int64), np.full(b.F, -1, np.int64)
    if len(fa) and len(fb):
        _, row_idx, _, col_idx = correlation_topk(sub_a, sub_b, 1)  # both directions
        best_b[fa], best_a[fb] = fb[row_idx[:, 0].numpy()], fa[col_idx[:, 0].numpy()]
    return best_b, best_a


def correlation_matching(a: Codes, b: Codes) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """The one-to-one assignment maximising total Pearson r among the features that fire on
    the held-out tokens: (a_idx, b_idx, r, info), exact. A feature that never fires has no r
    with anyone (0 for all, a tie with every partner), so it is left out of the problem rather
    than matched arbitrarily: at 16,384 features on a few hundred tokens most features never
    fire, and their ties kept the proof from closing (and the candidate graph growing to GiBs).
    info["firing"] = [features of A, of B] taken. A dense solve with its gap bound up to
    DENSE_MAX pairs, else the certified sparse solver on the top-TOP_K candidates
    (info["certified"] says whether the proof closed)."""
    fa, fb, sub_a, sub_b = _firing(a, b)
    if len(fa) == 0 or len(fb) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), {"certified": True, "gap_bound": 0.0,
                                          "firing": [int(len(fa)), int(len(fb))]}
    ia, ib, r, info = _correlation_assignment(sub_a, sub_b)
    info["firing"] = [int(len(fa)), int(len(fb))]
    return fa[ia], fb[ib], r, info


def _correlation_assignment(a: Codes, b: Codes) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          dict]:
    """correlation_matching's assignment of every feature of the smaller side."""
    from saefast.match.certified import DUAL_TOL, solve_dense, solve_scores

    flip = a.F > b.F
    lo, hi = (b, a) if flip else (a, b)  # n <= m
    if a.F * b.F <= DENSE_MAX:
        x, vals, info = solve_dense(correlation_matrix(lo, hi))
        info["certified"] = info["gap_bound"] <= DUAL_TOL * lo.F + 1e-12
    else:
        timings: dict[str, float] = {}
        x, vals, proven, info = solve_scores(CorrelationScores(lo, hi), min(TOP_K, lo.F), timings)
        info["certified"], info["timings"] = bool(proven), timings
        info.setdefault("gap_bound", None)  # the sparse proof gives no bound when it fails
    rows = np.arange(len(x))
    a_idx, b_idx = (x, rows) if flip else (rows, x)
    order = np.argsort(a_idx)
    return a_idx[order], b_idx[order], vals[order], info


def fires(a: Codes, b: Codes, ia, ib) -> np.ndarray:
    """[n] True where both features of pair t (a's ia[t], b's ib[t]) fire on the held-out
    tokens. Where one never does (zero variance) Pearson r is undefined, not 0: such pairs
    are left out of every r statistic."""
    return (a.std[np.asarray(ia, np.int64)] > 0) & (b.std[np.asarray(ib, np.int64)] > 0)
