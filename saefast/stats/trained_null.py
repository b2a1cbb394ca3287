"""The trained null as a report states it (summary.nulls.kinds.trained): the null runs'
pairs (the group's recipe and seeds trained on a surrogate with the data's mean and
covariance and no sparse structure), matched exactly like the real pairs, and the real
pairs' excess over them PAIR BY PAIR.

Null pair (s, t) shares its inits and data orders with real pair (s, t); only the data's
sparse structure differs. So the excess is taken per pair, d_st = observed(s, t) -
null(s, t), of the pair's median matched cosine (and of its PW-MCC, the mean matched cosine),
and stated as the mean of d_st over the pairs with its delete-one-run jackknife interval
(`inference.run_interval` on a `PairedRuns` of the d_st): deleting a seed removes its real
and its null runs together, so the null's own seed-to-seed spread widens the interval
instead of being taken as known (as the analytic nulls' medians are). Only the seeds with
null runs take part (the group's first ones).

Not in the per-feature evidence: a `NullModel` must draw dictionaries that share nothing
and pool enough matched cosines for BY at any shape; the trained null is a handful of
trained pairs with shared inits, so it stays a summary null. Nothing here reads a file.
"""

from __future__ import annotations

import numpy as np

from saefast.stats.matched import matched_statistics
from saefast.stats.nulls import QUANTILES

EXCESS_MEDIAN = ("mean over the pairs (s, t) of (observed median matched cosine of real pair "
                 "(s, t) - that of null pair (s, t))")
EXCESS_PW_MCC = ("mean over the pairs (s, t) of (observed PW-MCC of real pair (s, t) - PW-MCC "
                 "of null pair (s, t)), PW-MCC the mean matched cosine")
METHOD = ("the group's recipe and first seeds retrained on one surrogate sample of the "
          "training token count with the data's mean and covariance and no sparse structure "
          "({surrogate}); null pair (s, t) shares inits and data order with real pair (s, t) "
          "and is matched exactly like it; median_cosine, quantiles: the null pairs' matched "
          "cosines pooled; excess pair by pair, delete-one-run jackknife over the seeds with "
          "null runs (real and null run of a seed deleted together)")


def skipped(name: str, reason: str) -> dict:
    return {"kind": name, "skipped": True, "reason": f"skipped: {reason}"}


def trained_null(pairs: list[dict], seeds: list[int | None],
                 null_cosines: dict[tuple[int, int], np.ndarray], *, name: str,
                 surrogate: str, recipe: str | None, hist_edges: np.ndarray) -> dict:
    """The kind's entry of summary.nulls.kinds.

    pairs: the report's pairs (index_a, index_b, median_cosine, mean_cosine); seeds: each
    run's seed (None: unknown); null_cosines: {(s, t), s < t: matched cosines of null pair
    (s, t)}. Keys: the analytic nulls' (median_cosine, mean_cosine = pw_mcc, quantiles,
    n_draws = null pairs, n_per_draw, draw_medians and draw_median_spread over the null
    pairs, histogram over hist_edges, excess_median, excess_pw_mcc), plus n_runs (null seeds),
    recipe (its fingerprint), surrogate, and `pairs` [{seeds, observed_median, null_median,
    observed_pw_mcc, null_pw_mcc}]."""
    from saefast.stats import inference

    keys = sorted(null_cosines)
    if not keys:
        return skipped(name, "no null pairs")
    draws = [np.asarray(null_cosines[k], dtype=np.float64).ravel() for k in keys]
    pooled = np.concatenate(draws)
    s = matched_statistics(pooled)
    medians = np.array([np.median(c) for c in draws])
    null_seeds = sorted({x for k in keys for x in k})
    entry = {
        "kind": name, "skipped": False, "reason": None, "surrogate": surrogate,
        "method": METHOD.format(surrogate=surrogate), "recipe": recipe,
        "n_runs": len(null_seeds), "seeds": null_seeds, "n_draws": len(keys),
        "n_per_draw": int(draws[0].size), "median_cosine": s["median"],
        "mean_cosine": s["mean"], "pw_mcc": s["mean"], "max_cosine": s["max"],
        "fraction_above": s["fraction_above"],
        "quantiles": {f"{q:g}": float(np.quantile(pooled, q)) for q in QUANTILES},
        "draw_medians": medians.tolist(),
        "draw_median_spread": {"min": float(medians.min()), "max": float(medians.max()),
                               "std": float(medians.std(ddof=1)) if medians.size > 1 else 0.0},
        "histogram": {"edges": np.asarray(hist_edges).tolist(),
                      "counts": np.histogram(np.clip(pooled, -1, 1), bins=hist_edges)[0].tolist()},
    }
    position = {seed: i for i, seed in enumerate(null_seeds)}
    med, pw, rows = {}, {}, []
    for p in pairs:
        a, b = seeds[p["index_a"]], seeds[p["index_b"]]
        key = (min(a, b), max(a, b)) if a is not None and b is not None else None
        if key not in null_cosines:
            continue
        c = np.asarray(null_cosines[key], dtype=np.float64)
        row = {"seeds": list(key), "observed_median": p["median_cosine"],
               "null_median": float(np.median(c)), "observed_pw_mcc": p["mean_cosine"],
               "null_pw_mcc": float(np.mean(c))}
        rows.append(row)
        ij = (position[key[0]], position[key[1]])
        med[ij] = [row["observed_median"] - row["null_median"]]
        pw[ij] = [row["observed_pw_mcc"] - row["null_pw_mcc"]]
    entry["pairs"] = rows
    if not rows:
        entry["excess_median"] = entry["excess_pw_mcc"] = None
        entry["note"] = "no real pair has seeds of two null runs"
        return entry
    n = len(null_seeds)
    entry["excess_median"] = inference.run_interval(
        inference.PairedRuns.from_dict(n, med), inference.mean(), about=EXCESS_MEDIAN)
    entry["excess_pw_mcc"] = inference.run_interval(
        inference.PairedRuns.from_dict(n, pw), inference.mean(), about=EXCESS_PW_MCC)
    return entry


EVIDENCE_METHOD = (
    "each real feature's nearest cosine in the other run against the pooled nearest cosines of "
    "the null runs' pairs (both sides, every null pair: the trained null has few pairs, so "
    "one pool for all real pairs); the share beyond chance matched to the observed bulk "
    "(stats.share); BY per real pair of its matched cosines against the null pairs' pooled "
    "matched cosines (null_large_enough false when that pool is below what BY needs)")


def evidence_block(real: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]],
                   null: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_runs: int, *,
                   name: str) -> dict:
    """`evidence.by_null[name]` of the trained null, so the headline (`stats.verdict`) can
    rest on it. real[(i, j)]: the real pair's (nearest cosines of A's features, of B's, matched
    cosines); null: the same of each null pair. Keys the headline reads: share_beyond_chance
    (`share.null_share`), significance {n_significant_by, n_matched, null_large_enough},
    fraction_significant_by; no seed-count curve (the null runs are too few)."""
    from saefast.stats import inference as inf
    from saefast.stats import share as sh

    near = np.sort(np.concatenate([np.r_[a, b] for a, b, _ in null]))
    matched = np.sort(np.concatenate([m for _, _, m in null]))
    z, by, n_all = {}, {}, 0
    for key, (a, b, m) in real.items():
        p = inf.feature_pvalues(np.r_[a, b], near)
        z[key] = sh.zscores(p, near.size)
        sig = inf.significance(m, matched)
        by[key] = sig["by"].astype(float)
        n_all += int(m.size)
    n_by = int(sum(v.sum() for v in by.values()))
    large = matched.size >= inf.min_null_size(max(m.size for _, _, m in real.values()))
    return {
        "null": {"kind": name, "description": "SAEs of the group's recipe on surrogate "
                 "activations (the data's mean and covariance, no sparse structure)",
                 "null_pairs": len(null), "pooled_nearest": int(near.size),
                 "pooled_matched": int(matched.size)},
        "skipped": False, "reason": None, "method": EVIDENCE_METHOD,
        "share_beyond_chance": dict(sh.null_share(z, n_runs), pvalues="nearest"),
        "significance": {"procedure": "benjamini-yekutieli", "alpha": inf.FDR_ALPHA,
                         "family": "one pair", "n_matched": n_all, "n_significant_by": n_by,
                         "fraction_significant_by": n_by / max(n_all, 1),
                         "null_large_enough": bool(large)},
        "fraction_significant_by": inf.run_interval(inf.PairedRuns.from_dict(n_runs, by),
                                                    inf.mean()),
    }
