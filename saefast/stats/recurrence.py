"""What "a feature recurs" means beyond one-to-one matching, and how it grows with seeds.

- `nearest_cosines`: each feature's best cosine in the other run (many-to-one), through
  `saefast.ops.cosine_topk` with k=1, so no [n, m] matrix is held;
- `max_pairs_at`: for thresholds t, the largest number of feature pairs that can ALL clear t
  at once (maximum-cardinality bipartite matching on the edges >= t). The one-to-one matching
  maximises the SUM of cosines, so its count at t can be smaller: it may trade one pair above
  t for two pairs just under it. Always one_to_one <= max_cardinality <= min(nearest counts);
- `random_nearest_baseline`: nearest-neighbour cosines of random unit dictionaries. Unlike the
  matched null, it is the exact null of ONE feature's nearest cosine whenever that feature is
  independent of the other dictionary, whatever the other features share; the matched null is
  conservative for pairs that share features (the unshared ones are matched among fewer free
  partners, so their cosines fall below it; see `inference.storey_pi0`);
- the seed-count curve (`hits_from_report`, `hits_from_feature_recurrence`,
  `seed_count_curve`): for N = 2..S, the fraction of a run's features found in all N-1 other
  runs of a choice of N runs, and in at least half of them, over choices of runs.

Cosines are float64 dot products of float32 unit rows (`match.unit_rows`), as in matching.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import maximum_bipartite_matching

from saefast.errors import ConfigError
from saefast.match import unit_rows
from saefast.stats.inference import DEFAULT_LEVEL, _check_level, jackknife_interval

EDGE_BLOCK_BYTES = 64 << 20  # one row block of float64 cosines in max_pairs_at
DEFAULT_SUBSETS = 200


def _unit64(x) -> torch.Tensor:
    """float32 unit rows (the matcher's), then float64 for exact dot products. [n, d]"""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 2 or t.shape[0] == 0:
        raise ConfigError(f"expected a non-empty [n, d] matrix of decoder rows, "
                          f"got {tuple(t.shape)}")
    return unit_rows(t.detach().cpu()).double()


def nearest_cosines(dec_a, dec_b, partners: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(best_a [n_a], best_b [n_b]): each row's best cosine among the other dictionary's rows.

    The neighbour is chosen by float32 cosines (`cosine_topk(k=1)` on unit rows, or
    `partners`: (A's neighbours in B [n_a], B's in A [n_b]) chosen so before, e.g. by the
    pair's matching, `Matching.nearest`, which saves the n_a x n_b GEMM), then its cosine is
    recomputed in float64 (only an exact float32 near-tie could pick another neighbour, whose
    cosine then differs from the best in the 7th digit)."""
    a, b = _unit64(dec_a), _unit64(dec_b)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"nearest_cosines: d differs ({a.shape[1]} vs {b.shape[1]})")
    if partners is None:
        from saefast.ops import cosine_topk

        top = cosine_topk(a.float(), b.float(), 1)
        partners = (top.row_idx[:, 0], top.col_idx[:, 0])
    near_a, near_b = (torch.as_tensor(np.asarray(p), dtype=torch.long) for p in partners)
    if near_a.shape != (a.shape[0],) or near_b.shape != (b.shape[0],):
        raise ConfigError("nearest_cosines: partners must give one neighbour per row of each "
                          "dictionary")
    best_a = (a * b[near_a]).sum(1)  # [n_a]
    best_b = (b * a[near_b]).sum(1)  # [n_b]
    return best_a.numpy(), best_b.numpy()


# float32 argmax may pick a partner a last bit below the float64 best: rows (columns) whose
# nearest cosine is this far below t_min still get their edges computed
NEAREST_SLACK = 1e-4


def threshold_edges(dec_a, dec_b, t_min: float,
                    nearest: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (i, j, cosine) with cosine >= t_min, computed blockwise over A's rows in float64.

    Exact by construction: every cosine that can clear t_min is computed (no candidate list
    to truncate); only one [block, n_b] block is held at a time (EDGE_BLOCK_BYTES). With
    `nearest` (`nearest_cosines(dec_a, dec_b)`), only rows and columns whose nearest cosine
    reaches t_min - NEAREST_SLACK are computed: an edge >= t_min needs both ends to have one
    that high (at 16,384 features and t 0.9 that is a handful of rows, not 2.7e8 cosines). A
    cosine may differ from the matcher's float64 dot product in the last bit (GEMM summation
    order), so only an edge within ~1e-16 of t_min could be decided differently."""
    a, b = _unit64(dec_a), _unit64(dec_b)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"threshold_edges: d differs ({a.shape[1]} vs {b.shape[1]})")
    row_ids, col_ids = np.arange(a.shape[0]), np.arange(b.shape[0])
    if nearest is not None:
        row_ids = np.flatnonzero(np.asarray(nearest[0]) >= t_min - NEAREST_SLACK)
        col_ids = np.flatnonzero(np.asarray(nearest[1]) >= t_min - NEAREST_SLACK)
        a, b = a[torch.as_tensor(row_ids)], b[torch.as_tensor(col_ids)]
    block = max(1, EDGE_BLOCK_BYTES // (8 * max(1, b.shape[0])))
    rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for start in range(0, a.shape[0], block):
        c = (a[start:start + block] @ b.T).numpy()  # [block, n_b]
        r, k = np.nonzero(c >= t_min)
        rows.append(row_ids[r + start]), cols.append(col_ids[k]), vals.append(c[r, k])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def max_pairs_at(dec_a, dec_b, thresholds: Sequence[float],
                 nearest: tuple[np.ndarray, np.ndarray] | None = None) -> dict[float, int]:
    """{t: the maximum number of disjoint (a, b) feature pairs whose cosines are all >= t}.

    Edges are taken once at min(thresholds) (`threshold_edges`, exact; `nearest`: the pair's
    `nearest_cosines` when the caller has them, to skip rows that cannot clear it), then for
    each t a maximum-cardinality bipartite matching (Hopcroft-Karp,
    scipy.sparse.csgraph.maximum_bipartite_matching) on the edges >= t."""
    ts = sorted({float(t) for t in thresholds})
    if not ts:
        raise ConfigError("max_pairs_at: no thresholds")
    n_a, n_b = int(np.shape(dec_a)[0]), int(np.shape(dec_b)[0])
    r, c, v = threshold_edges(dec_a, dec_b, ts[0], nearest)
    out = {}
    for t in ts:
        keep = v >= t
        g = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.int8), (r[keep], c[keep])),
                              shape=(n_a, n_b))
        out[t] = int(np.count_nonzero(maximum_bipartite_matching(g, perm_type="column") >= 0))
    return out


def recurrence_counts(dec_a, dec_b, thresholds: Sequence[float], matched_cosines=None) -> dict:
    """Per threshold: pairs clearing t under each notion of "recurs".

    {t: {one_to_one (the sum-maximising matching; computed with match_decoders unless its
    matched cosines are given), max_cardinality, nearest_a, nearest_b (features whose best
    cosine in the other run is >= t)}}."""
    if matched_cosines is None:
        from saefast.match import match_decoders
        matched_cosines = match_decoders(dec_a, dec_b).cosines
    m = np.asarray(matched_cosines, dtype=np.float64)
    best_a, best_b = nearest_cosines(dec_a, dec_b)
    most = max_pairs_at(dec_a, dec_b, thresholds, (best_a, best_b))
    return {t: {"one_to_one": int(np.count_nonzero(m >= t)), "max_cardinality": most[t],
                "nearest_a": int(np.count_nonzero(best_a >= t)),
                "nearest_b": int(np.count_nonzero(best_b >= t))} for t in most}


_NN_CACHE: dict[tuple, np.ndarray] = {}


def random_nearest_baseline(n_a: int, n_b: int, d: int, *, seed: int = 0,
                            n_draws: int = 3) -> np.ndarray:
    """[n_draws * n_a] nearest cosines of random unit rows [n_a, d] among random [n_b, d]
    (Gaussian rows, normalised; the A side of each draw, draw after draw). The null of
    `nearest_cosines(...)[0]` for those shapes (swap n_a and n_b for the B side). Memoised per
    arguments; read-only."""
    for name, val in (("n_a", n_a), ("n_b", n_b), ("d", d), ("n_draws", n_draws)):
        if int(val) != val or val < 1:
            raise ConfigError(f"random_nearest_baseline: {name} must be a positive integer, "
                              f"got {val!r}")
    key = (int(n_a), int(n_b), int(d), int(seed), int(n_draws))
    if key not in _NN_CACHE:
        rng = np.random.default_rng([*key, 1])  # not random_baseline's stream
        draws = [nearest_cosines(rng.standard_normal((n_a, d)).astype(np.float32),
                                 rng.standard_normal((n_b, d)).astype(np.float32))[0]
                 for _ in range(n_draws)]
        _NN_CACHE[key] = np.concatenate(draws)
        _NN_CACHE[key].setflags(write=False)
    return _NN_CACHE[key]


# ---------------------------------------------------------------------------- seed-count curve


def hits_from_report(report: dict, keep: Callable[[dict], np.ndarray] | None = None
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(hits, took_part) from a stability report's pairs (full or live-only part).

    hits[r] [F_r, S] bool: feature f of run r is matched in run s by a kept match;
    took_part[r] [F_r] bool: f took part in some matching (the denominator; live-only reports
    leave dead features out). keep(pair) -> [n_matched] bool, default cosine >= the pair's
    threshold; pass e.g. a BY-significance mask for "beyond chance"."""
    runs = report["summary"]["runs"]
    S = len(runs)
    hits = [np.zeros((int(r["n_features"]), S), dtype=bool) for r in runs]
    took = [np.zeros(int(r["n_features"]), dtype=bool) for r in runs]
    for p in report["pairs"]:
        i, j = p["index_a"], p["index_b"]
        a = np.asarray(p["a_indices"], dtype=np.int64)
        b = np.asarray(p["b_indices"], dtype=np.int64)
        k = (np.asarray(p["all_cosines"]) >= p["threshold"]) if keep is None else \
            np.asarray(keep(p), dtype=bool)
        took[i][a] = took[j][b] = True
        hits[i][a[k], j] = True
        hits[j][b[k], i] = True
    return hits, took


def hits_from_feature_recurrence(rec: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(hits, took_part) as in hits_from_report, from the report's `feature_recurrence`
    (or a summary / report holding it); runs in its order (that of summary.runs)."""
    rec = rec.get("summary", rec)
    rec = rec.get("feature_recurrence", rec)
    labels = list(rec["runs"])
    col = {lab: s for s, lab in enumerate(labels)}
    hits, took = [], []
    for lab in labels:
        entry = rec["runs"][lab]
        took.append(np.array([c is not None for c in entry["best_cosine"]], dtype=bool))
        h = np.zeros((took[-1].size, len(labels)), dtype=bool)
        for f, others in entry["recurs_in"].items():
            h[int(f), [col[o] for o in others]] = True
        hits.append(h)
    return hits, took


def _subsets(S: int, N: int, max_subsets: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    if math.comb(S, N) <= max_subsets:
        return list(combinations(range(S), N))
    return [tuple(sorted(rng.choice(S, size=N, replace=False))) for _ in range(max_subsets)]


def _run_masks(hits, took) -> list[tuple[np.ndarray, np.ndarray, int]] | None:
    """Per run: its features' hit rows as bit masks (bit s: matched in run s), the distinct
    masks and how many features have each, and its feature count; None over 64 runs. Most
    features share a handful of masks (at 16K features and 20 runs, ~200 choices of N runs
    a size then cost microseconds instead of a [16K, 20] copy per run and choice)."""
    S = len(hits)
    if S > 64:
        return None
    bits = np.uint64(1) << np.arange(S, dtype=np.uint64)
    out = []
    for h, t in zip(hits, took):
        masks = (h[t].astype(np.uint64) * bits).sum(axis=1, dtype=np.uint64)
        u, c = np.unique(masks, return_counts=True)
        out.append((u, c, int(t.sum())))
    return out


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return np.unpackbits(x.astype("<u8").view(np.uint8)).reshape(-1, 64).sum(axis=1)


def _subset_value(hits, took, R: tuple[int, ...], masks=None) -> tuple[float, float]:
    """(all, half): mean over r in R of the share of r's features matched in all of R \\ {r},
    and in at least ceil((N-1)/2) of them. masks: `_run_masks` (the same numbers, faster)."""
    need = math.ceil((len(R) - 1) / 2)
    v_all, v_half = [], []
    for r in R:
        others = [s for s in R if s != r]
        if masks is not None:
            u, c, n_live = masks[r]
            want = np.uint64(sum(1 << s for s in others))
            n = _popcount(u & want)  # per distinct mask: in how many of the others
            v_all.append(c[n == len(others)].sum() / n_live if n_live else np.nan)
            v_half.append(c[n >= need].sum() / n_live if n_live else np.nan)
            continue
        n = hits[r][took[r]][:, others].sum(1)  # [F_r live] in how many of the others
        v_all.append(np.mean(n == len(others)))
        v_half.append(np.mean(n >= need))
    return float(np.mean(v_all)), float(np.mean(v_half))


def _describe(vals: np.ndarray, subsets, S: int, N: int, level: float) -> dict:
    """Mean over choices, their spread, and a delete-one-run jackknife of the mean."""
    lo, hi = np.quantile(vals, [0.5 - level / 2, 0.5 + level / 2])
    out = {"mean": float(vals.mean()), "spread": [float(lo), float(hi)], "jackknife": None}
    if N <= S - 1 and S >= 3:  # theta_(r): the mean over the choices that avoid run r
        mask = np.array([[r not in R for R in subsets] for r in range(S)])  # [S, n_subsets]
        reps = np.array([vals[m].mean() if m.any() else np.nan for m in mask])  # [S]
        jk = jackknife_interval(reps, out["mean"], S, level)
        out["jackknife"] = {"se": jk["se"], "ci": jk["ci"]}
    return out


def seed_count_curve(hits: Sequence[np.ndarray], took_part: Sequence[np.ndarray], *,
                     max_subsets: int = DEFAULT_SUBSETS, seed: int = 0,
                     level: float = DEFAULT_LEVEL) -> dict:
    """For N = 2..S: the share of a run's features found in all N-1 other runs of a choice
    of N runs ("all") and in at least half of them ("half"), averaged over the runs of the
    choice and over choices: all C(S, N) when at most max_subsets, else max_subsets drawn
    (seeded, with repeats possible).

    Per N and kind: `mean`; `spread`, the central `level` range of the value over choices
    (what one experiment with N seeds would see; not a CI); `jackknife`, a delete-one-run
    jackknife of the mean (it is a U-statistic of order N in the runs) with a t(S-1)
    interval, None at N = S where every choice uses every run."""
    level = _check_level(level)
    S = len(hits)
    if S < 2 or len(took_part) != S:
        raise ConfigError(f"seed_count_curve: need hits and took_part for >= 2 runs, got {S}")
    rng = np.random.default_rng([int(seed), S])
    masks = _run_masks(hits, took_part)
    curve = []
    for N in range(2, S + 1):
        subsets = _subsets(S, N, int(max_subsets), rng)
        vals = np.array([_subset_value(hits, took_part, R, masks) for R in subsets])  # [n, 2]
        curve.append({"n_runs": N, "n_choices": len(subsets),
                      "all_choices": len(subsets) == math.comb(S, N),
                      "all": _describe(vals[:, 0], subsets, S, N, level),
                      "half": _describe(vals[:, 1], subsets, S, N, level)})
    return {"n_runs": S, "level": level, "curve": curve,
            "method": ("share of a run's features matched in all (at least half) of the N-1 "
                       "other runs, mean over the runs of a choice and over choices of N runs; "
                       "spread over choices; delete-one-run jackknife, t(S-1)")}
