"""Is it the same feature? Views beyond decoder cosine, from a report's own matchings.

Decoder cosine says two features write the same direction. A reviewer also asks whether
they read the same direction and fire on the same tokens:

- encoder matching: encoder rows (W_enc [F, d]) matched one-to-one exactly like decoders;
  and per decoder-matched pair, the cosine of the two features' encoder rows. A pair is
  *shared* at t when both its decoder and its encoder cosine are >= t (Paulo & Belrose 2025
  call a latent shared only then);
- activation correlation on held-out tokens: each feature's activation over T tokens (its
  value in the k-sparse code, 0 where it is not kept). Per decoder-matched pair, Pearson r;
  per feature, its max-correlation partner in the other run (does it agree with the decoder
  partner?); and the one-to-one assignment maximising total correlation, compared with the
  decoder matching (how many pairs do both pick?). A feature that never fires on the
  held-out tokens has zero variance there and no r (not r = 0): pairs with one are left
  out of every r statistic and counted (`fires`, summary never_fire).

The correlations come from the k-sparse codes only: for a block of A's features, every token
where one of them is active adds value_a x B's k code values into a dense [block, F_b] row
block of co-activation sums (sparse x sparse: T k^2 products in all); with each feature's mean
and standard deviation (also from the codes), that block is the exact Pearson r. Top-K per row
and per column are kept across blocks; the [T, F] activations and the [F_a, F_b] matrix never
exist at once. The assignment on correlations is exact: a dense solve up to DENSE_MAX pairs,
else the certified sparse solver of `match.certified` on the top-K candidates, recomputing
rows where its certificate needs them.

Pure computation: the views take the report's pairs and, where a report has them, the
encoder and correlation matchings computed before (`saefast.report.matchings` reads and keeps
them in the matching cache); without them each pair is matched here. Nothing here reads or
writes a file.

Intervals: the run is the unit (delete-one-run jackknife over the stored per-pair values,
`inference`), as everywhere in a report. No null DICTIONARY is drawn for these views: a
random dictionary's codes are not "random features of this model" in any single agreed
sense. Each view's chance floor comes from the runs themselves instead (`stats.view_nulls`:
mismatched partners for the encoder cosines, a block permutation of the held-out tokens for
r), added to the blocks by the report (`report.assemble`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from saefast.match import Matching, match_decoders, unit_rows
from saefast.stats import inference as inf

THRESHOLDS = (0.5, 0.7, 0.9)
BLOCK_ELEMS = 1 << 23  # a [block, F_b] float64 co-activation block (64 MiB)
TOP_K = 16  # correlation candidates per row and per column
DENSE_MAX = 1 << 22  # correlation matchings up to this many pairs are solved densely
ENCODE_ROWS = 8192  # tokens per encode call

METHOD = {
    "encoder": "encoder rows matched one-to-one by maximum total cosine like decoders "
               "(matching.median, fraction_above); per decoder-matched pair, the cosine of "
               "the two features' encoder rows (decoder_pairs); shared at t: decoder and "
               f"encoder cosine both >= t; {inf.LEVEL_TEXT} delete-one-run jackknife "
               "intervals, t(S-1)",
    "activation": "each feature's activation on the runs' held-out tokens (its value in the "
                  "k-sparse code, 0 elsewhere); Pearson r of every decoder-matched pair; "
                  "same_partner: the share of features whose max-correlation partner among the "
                  "other run's firing features is their decoder partner; correlation_matching: one-to-one "
                  "assignment maximising total r (exact) among the features that fire on the "
                  "held-out tokens, and the share of decoder-matched pairs it also picks; "
                  "r computed exactly from the sparse codes "
                  "(co-activation sums, no dense [tokens, F] matrix). A feature that never "
                  "fires on the held-out tokens has zero variance, so no r: pairs with one "
                  "are left out of every r statistic, same_partner and the agreement, and "
                  "counted (never_fire; per pair n_never_fire, never_fire_positions; the "
                  "per-pair r lists keep 0 there, aligned with all_cosines)",
}


# ---------------------------------------------------------------------------- encoders


def _interval(per_pair: dict, n_runs: int, stat: inf.Statistic) -> dict | None:
    """stat's interval over runs; None when no pair has a value left."""
    if not any(len(v) for v in per_pair.values()):
        return None
    return inf.run_interval(inf.PairedRuns.from_dict(n_runs, per_pair), stat)


def pair_encoder_cosines(enc_a: torch.Tensor, enc_b: torch.Tensor, a_idx, b_idx) -> np.ndarray:
    """[n] cosine of encoder rows enc_a[a_idx[t]] and enc_b[b_idx[t]] (float64)."""
    ua = unit_rows(enc_a.double())[torch.as_tensor(np.asarray(a_idx, dtype=np.int64))]
    ub = unit_rows(enc_b.double())[torch.as_tensor(np.asarray(b_idx, dtype=np.int64))]
    return (ua * ub).sum(1).numpy()


def encoder_block(saes: Sequence, pairs: list[dict], *, threshold: float, solver: str = "auto",
                  matched: Mapping[tuple[int, int], Matching] | None = None) -> dict | None:
    """Add `encoder` {cosines (per decoder-matched pair, in all_cosines' order), matching
    {median, fraction_above}, shared_count} to each pair and return the summary's block
    (None when a run has no encoder: the block's absence says so in `equivalence.skipped`).
    matched[(i, j)]: the encoder matching of runs i and j (every feature), computed before;
    without it each pair's encoders are matched here."""
    if any(s.encoder is None for s in saes):
        return None
    t = float(threshold)
    ts = sorted({*THRESHOLDS, t})
    enc_cos, enc_matched, shared = {}, {}, {t_: {} for t_ in ts}
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        a, b = saes[i].encoder, saes[j].encoder
        c = pair_encoder_cosines(a, b, p["a_indices"], p["b_indices"])
        m = matched[i, j] if matched is not None else match_decoders(a, b, solver=solver)
        dec = np.asarray(p["all_cosines"], dtype=np.float64)
        key = (i, j)
        enc_cos[key], enc_matched[key] = c, m.cosines
        for t_ in ts:
            shared[t_][key] = ((dec >= t_) & (c >= t_)).astype(float)
        p["encoder"] = {"cosines": c.tolist(), "matching": {
            "median": float(np.median(m.cosines)),
            "fraction_above": float(np.mean(m.cosines >= t)), "certified": bool(m.certified)},
            "shared_count": int(np.count_nonzero((dec >= t) & (c >= t)))}
    S = len(saes)
    return {
        "method": METHOD["encoder"], "threshold": t,
        "matching": {"median": _interval(enc_matched, S, inf.median()),
                     "fraction_above": _interval(enc_matched, S, inf.fraction_at_least(t))},
        "decoder_pairs": {"median": _interval(enc_cos, S, inf.median()),
                          "fraction_above": _interval(enc_cos, S, inf.fraction_at_least(t))},
        "shared_fraction": {f"{t_:g}": inf.fraction_interval(_interval(shared[t_], S, inf.mean()))
                            for t_ in ts},
    }


# ---------------------------------------------------------------------------- codes


def encode(sae, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TopK(relu(W_enc (x - b_dec) + b_enc)) of rows [N, d] for an SAE with encoder fields
    (`artifacts.LoadedSAE`): (values [N, k] float32 >= 0, indices [N, k])."""
    from saefast import ops

    return ops.topk_encode(rows.float() - sae.b_dec, sae.encoder, sae.b_enc, int(sae.k))


def sparse_codes(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The SAE's k-sparse codes of x [T, d]: (values [T, k] float32 >= 0, indices [T, k])."""
    vals, idx = [], []
    for s in range(0, x.shape[0], ENCODE_ROWS):
        v, i = encode(sae, x[s:s + ENCODE_ROWS])
        vals.append(v), idx.append(i)
    return torch.cat(vals), torch.cat(idx)


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


def firing_partners(a: Codes, b: Codes) -> tuple[np.ndarray, np.ndarray]:
    """([F_a] each A feature's max-r partner among B's firing features, [F_b] the same for
    B), -1 for a feature that never fires: one top-1 pass over the firing features only (at
    16,384 features on a few hundred tokens most never fire, and all r with them are 0)."""
    fa, fb = np.flatnonzero(a.std > 0), np.flatnonzero(b.std > 0)
    best_b, best_a = np.full(a.F, -1, np.int64), np.full(b.F, -1, np.int64)
    if len(fa) and len(fb):
        sub_a = a if len(fa) == a.F else a.subset(fa)
        sub_b = b if len(fb) == b.F else b.subset(fb)
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
    fa, fb = np.flatnonzero(a.std > 0), np.flatnonzero(b.std > 0)
    if len(fa) == 0 or len(fb) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), {"certified": True, "gap_bound": 0.0,
                                          "firing": [int(len(fa)), int(len(fb))]}
    sub_a = a if len(fa) == a.F else a.subset(fa)
    sub_b = b if len(fb) == b.F else b.subset(fb)
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


def held_out_codes(saes: Sequence, x: torch.Tensor | None,
                   reason: str | None = None) -> tuple[list[Codes] | None, str | None]:
    """(every run's `Codes` of the held-out tokens x [T, d], None), or (None, why the
    activation view cannot be computed): `reason` when there are no tokens (x None)."""
    if x is None:
        return None, reason
    if any(s.encoder is None or not s.k for s in saes):
        return None, "a run has no encoder or no k to encode with"
    try:
        return [Codes(*sparse_codes(s, x), s.n_features) for s in saes], None
    except NotImplementedError as e:
        return None, str(e)


def fires(a: Codes, b: Codes, ia, ib) -> np.ndarray:
    """[n] True where both features of pair t (a's ia[t], b's ib[t]) fire on the held-out
    tokens. Where one never does (zero variance) Pearson r is undefined, not 0: such pairs
    are left out of every r statistic."""
    return (a.std[np.asarray(ia, np.int64)] > 0) & (b.std[np.asarray(ib, np.int64)] > 0)


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def _never_fire(codes: Sequence[Codes], acts: list[dict]) -> dict:
    """What r leaves out: each run's features that never fire on the held-out tokens, and
    the decoder-matched and correlation-matched pairs with one, pooled over pairs."""
    return {"per_run": [int(np.count_nonzero(c.std == 0)) for c in codes],
            "decoder_pairs_left_out": sum(a["n_never_fire"] for a in acts),
            "decoder_pairs": sum(len(a["r"]) for a in acts),
            "correlation_pairs_left_out": sum(a["correlation_matching"]["n_never_fire"]
                                              for a in acts)}


def activation_block(codes: Sequence[Codes], pairs: list[dict], *, source: str,
                     matched: Mapping[tuple[int, int], tuple] | None = None) -> dict:
    """Add `activation` {r (per decoder-matched pair, 0 where a feature never fires),
    median_r, n_never_fire, never_fire_positions, same_partner, correlation_matching} to each
    pair from the runs' codes of the same held-out tokens (`held_out_codes`) and return the
    summary's block (intervals over runs; pairs with a never-firing feature left out of r
    and counted in `never_fire`). matched[(i, j)]: the `correlation_matching` of runs i and
    j computed before; without it each pair's is solved here."""
    S = len(codes)
    r_all, same, agree, corr_r = {}, {}, {}, {}
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        a, b = codes[i], codes[j]
        ia = np.asarray(p["a_indices"], dtype=np.int64)
        ib = np.asarray(p["b_indices"], dtype=np.int64)
        r = pair_correlations(a, b, ia, ib)
        best_b, best_a = firing_partners(a, b)  # [F_a] max-r partner in B, [F_b] in A
        active = fires(a, b, ia, ib)  # a never-firing feature has no r and no partner
        hits = np.r_[(best_b[ia] == ib)[active], (best_a[ib] == ia)[active]].astype(float)
        ma, mb, mr, info = matched[i, j] if matched is not None else correlation_matching(a, b)
        m_active = fires(a, b, ma, mb)
        both = np.intersect1d(ia * b.F + ib, ma * b.F + mb).size
        key = (i, j)
        r_all[key], same[key], corr_r[key] = r[active], hits, mr[m_active]
        agree[key] = np.r_[np.ones(both), np.zeros(len(ia) - both)]
        p["activation"] = {
            "r": r.tolist(), "median_r": _median(r[active]),
            "n_never_fire": int(np.count_nonzero(~active)),
            "never_fire_positions": np.flatnonzero(~active).tolist(),
            "same_partner": float(hits.mean()) if hits.size else None,
            "correlation_matching": {"median_r": _median(mr[m_active]),
                                     "n_never_fire": int(np.count_nonzero(~m_active)),
                                     "agreement_with_decoder": both / len(ia),
                                     "certified": bool(info["certified"]),
                                     "gap_bound": info["gap_bound"]}}
    return {
        "method": METHOD["activation"], "held_out_tokens": int(codes[0].T), "source": source,
        "decoder_pairs_r": {"median": _interval(r_all, S, inf.median()),
                            "fraction_above_0.5": _interval(r_all, S, inf.fraction_at_least(0.5))},
        "same_partner": _interval(same, S, inf.mean()),
        "correlation_matching": {"median_r": _interval(corr_r, S, inf.median()),
                                 "agreement_with_decoder": _interval(agree, S, inf.mean())},
        "never_fire": _never_fire(codes, [p["activation"] for p in pairs]),
    }


# the views below cost a matching or more per pair (the encoder's, the activations'
# correlation matching, their floors): every pair up to this many, then a stated subset
EQUIVALENCE_MAX_PAIRS = 20
SUBSET_RULE = ("each run with the next, cyclically (S pairs, every run in two): the views "
               "cost a matching per pair, and S (S - 1) / 2 of them at 16,384 features and 20 "
               "seeds would cost more than the training")


def equivalence_pairs(pairs: list[dict], n_runs: int) -> list[dict]:
    """The pairs the equivalence views are computed on: all of them up to
    EQUIVALENCE_MAX_PAIRS, else SUBSET_RULE's (the same pair dicts, in report order)."""
    if len(pairs) <= EQUIVALENCE_MAX_PAIRS:
        return pairs
    ring = {(min(i, (i + 1) % n_runs), max(i, (i + 1) % n_runs)) for i in range(n_runs)}
    return [p for p in pairs if (p["index_a"], p["index_b"]) in ring]


def equivalence(saes: Sequence, pairs: list[dict], *, threshold: float, solver: str = "auto",
                codes: Sequence[Codes] | None, codes_reason: str | None = None,
                source: str | None = None, encoder_matchings=None,
                correlation_matchings=None) -> dict:
    """summary["equivalence"] without its `agreement` (`stats.agreement`, once every view is
    on the pairs): {encoder: block or None, activation: block or None, skipped: [reasons]},
    adding the per-pair keys of each block to `pairs`. codes: the runs' held-out codes
    (`held_out_codes`), or None with codes_reason saying why; encoder_matchings /
    correlation_matchings: the blocks' `matched`."""
    skipped = []
    enc = encoder_block(saes, pairs, threshold=threshold, solver=solver,
                        matched=encoder_matchings)
    if enc is None:
        skipped.append("encoder: a run's weights have no encoder (W_enc, b_enc, b_dec)")
    act = None
    if codes is None:
        skipped.append(f"activation correlation: {codes_reason}")
    else:
        act = activation_block(codes, pairs, source=source or "", matched=correlation_matchings)
    return {"encoder": enc, "activation": act, "skipped": skipped}
