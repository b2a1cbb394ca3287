"""The per-feature evidence against the spectrum-matched null (`saefast.stats.spectrum_null`):
`evidence.by_null["spectrum"]` of a report whose runs' training activations are known.

Per pair (those of the first `spectrum_runs` runs: the pairs' work is bounded), both sides:
each feature's nearest cosine in the other run against its own conditional null (the other
run rotated within the spectrum's bands), p-values with the fitted tail below 1/(D+1)
(`saefast.stats.tail_fit`), Benjamini-Yekutieli per side (the family: one run's features
against the other run), and the share beyond chance (1 -
Storey's pi0) pooled over pairs with its delete-one-run jackknife interval, at the stated band
width and at half and double it (the latter two from SHARE_DRAWS draws, empirical p-values:
Storey's pi0 reads p-values near lambda = 0.5, not the tail).

The block has the keys the tables read from every null's block (significance, share_beyond_
chance, fraction_significant_by; no seed-count curve) plus `share_by_width`, `pairs` (the
per-pair p-value arrays) and `null` (the bands, how spherical the runs' rows are in each).
Nothing here reads or writes a file.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from scipy import stats as sps

from saefast.stats import inference as inf
from saefast.stats import share as sh
from saefast.stats import spectrum_bands as sb
from saefast.stats import spectrum_null as sn
from saefast.stats import tail_fit

NAME = "spectrum"
SHARE_DRAWS = 20  # draws per pair at half and double the width (Storey only)
WIDTH_FACTORS = {"half": 0.5, "stated": 1.0, "double": 2.0}
ONE_THREAD_MAX = 1 << 30  # n_a n_b d up to which a pair's draws run on one torch thread
# sum over the pairs judged of (draws at the three widths) x n_a x n_b, at most: beyond it only
# the pairs of the first runs that fit (>= 3 runs). In d = 768 at the ~22 GFLOP/s one core gave
# here: 5 x 4,096 features, all 10 pairs, ~47 core-minutes; 20 x 16,384, the first 3 runs
# (3 pairs), ~1 core-hour; 20 x 1,024, all 190 pairs, ~55 core-minutes
SPECTRUM_WORK = 1 << 36
JUDGED = "features (nearest cosine, each side of each pair)"

METHOD = {
    "pvalues": sn.METHOD,
    "tail": tail_fit.METHOD,
    "significance": "Benjamini-Yekutieli at FDR 5 % per side of each pair (one run's features "
                    "against the other run; nearest cosines of one run are dependent); a side "
                    "is underpowered where a feature's null has fewer than "
                    f"{sn.RESOLVED} draws at or above its nearest cosine and no tail fit passed "
                    "its check (its p-value stays the empirical one, >= 1/(D+1)); pooled = "
                    "summed over pairs",
    "share_beyond_chance": "the share beyond the bulk-matched null (stats.share) of the "
                           "conditional p-values, both sides of every pair pooled, delete-one-run jackknife over runs; at "
                           "the stated width and at half and double it "
                           f"({SHARE_DRAWS} draws per pair there, empirical p-values)",
    "runs": "the pairs of the first runs_used runs: all while the draws' work (sum over pairs "
            "of draws x n_a x n_b) stays under 2^36, else the most that fit, at least 3",
    "exactness": "bands[].spherical: how evenly the judged runs' rows spread their energy over "
                 "a band's directions (participation ratio / dims; 1 = even). The null is exact "
                 "where rows are spherical within bands; where a band's eigenvalues differ and "
                 "the rows follow them (spherical well below 1, min_spherical), rotated rows "
                 "are more spread than real ones and the p-values are too small",
}


def _by(p: np.ndarray) -> np.ndarray:
    return sps.false_discovery_control(p, method="by") <= inf.FDR_ALPHA


def _threads(n_a: int, n_b: int, d: int):
    if n_a * n_b * d > ONE_THREAD_MAX:
        return nullcontext()
    from saefast.stats.evidence import single_thread

    return single_thread()


def _pair(p: dict, rows: list, spectrum: sb.Spectrum, width: float, seed: int) -> dict:
    """One pair's record: p-value arrays, BY counts, tail and underpowered counts, and the
    empirical p-values at half and double the width (`shares`, not stored)."""
    i, j = p["index_a"], p["index_b"]
    n_a, n_b = len(rows[i]), len(rows[j])
    with _threads(n_a, n_b, spectrum.d):
        got = sn.pair_pvalues(rows[i], rows[j], spectrum, width=width, seed=[seed, i, j, 0])
        other = {k: sn.pair_pvalues(rows[i], rows[j], spectrum, width=width * f,
                                    n_draws=min(got["n_draws"], SHARE_DRAWS), fit_tail=False,
                                    seed=[seed, i, j, n + 1])
                 for n, (k, f) in enumerate(WIDTH_FACTORS.items()) if k != "stated"}
    a, b = got["a"], got["b"]
    by_a, by_b = _by(a["pvalues"]), _by(b["pvalues"])
    under = int(a["underpowered"].sum() + b["underpowered"].sum())
    checks = a["checks"] + b["checks"]
    pv = np.concatenate([a["pvalues"], b["pvalues"]])
    return {
        "index_a": i, "index_b": j, "n_draws": got["n_draws"],
        "pvalues_a": a["pvalues"].tolist(), "pvalues_b": b["pvalues"].tolist(),
        "significant_by_a": np.flatnonzero(by_a).tolist(),
        "significant_by_b": np.flatnonzero(by_b).tolist(),
        "n_significant_by": int(by_a.sum() + by_b.sum()),
        "share_beyond_chance": sh.share_at(np.sort(sh.zscores(pv, got["n_draws"])),
                                           np.ones(pv.size)),
        "n_tail": int(a["tail"].sum() + b["tail"].sum()), "n_underpowered": under,
        "underpowered": under > 0,
        "tail_checks": {"passed": sum(c["passed"] for c in checks), "n": len(checks),
                        "strata": checks},
        "_p": pv, "_by": np.concatenate([by_a, by_b]).astype(float),
        "_widths": {k: np.concatenate([v["a"]["pvalues"], v["b"]["pvalues"]])
                    for k, v in other.items()},
    }


def spectrum_runs(sizes: list[int]) -> int:
    """How many runs (the first S') the spectrum evidence judges: all while the pairs' work
    stays under SPECTRUM_WORK, else the most that fit, at least min(3, S) (a jackknife)."""
    def work(s):
        return sum((sn.pair_draws(sizes[i], sizes[j]) + 2 * min(SHARE_DRAWS, sn.pair_draws(
            sizes[i], sizes[j]))) * sizes[i] * sizes[j] for i in range(s) for j in range(i + 1, s))
    s = len(sizes)
    while s > 3 and work(s) > SPECTRUM_WORK:
        s -= 1
    return s


def _share(S: int, by_pair: dict, n_draws: dict, width: float, draws) -> dict:
    """The share beyond the bulk-matched null (`stats.share`) of conditional p-values
    by_pair[(i, j)] from n_draws[(i, j)] draws each."""
    z = {k: sh.zscores(p, n_draws[k]) for k, p in by_pair.items()}
    return dict(sh.null_share(z, S), pvalues="spectrum-conditional nearest",
                width=float(width), draws_per_pair=draws)


def spectrum_evidence(pairs: list[dict], rows: list, cov, *, width: float = sb.WIDTH,
                      seed: int = 0) -> dict:
    """evidence.by_null["spectrum"] of a report: pairs (index_a, index_b into rows), rows[r]
    the decoder rows run r was matched with, cov [d, d] the training activations' Σ."""
    spectrum = sb.Spectrum.from_cov(cov)
    S = spectrum_runs([len(r) for r in rows])
    recs = [_pair(p, rows, spectrum, width, seed) for p in pairs
            if p["index_a"] < S and p["index_b"] < S]
    key = {id(r): (r["index_a"], r["index_b"]) for r in recs}
    n_all = sum(r["_p"].size for r in recs)
    n_by = [r["n_significant_by"] for r in recs]
    draws = sorted({r["n_draws"] for r in recs})
    n_draws = {key[id(r)]: r["n_draws"] for r in recs}
    shares = {"stated": _share(S, {key[id(r)]: r["_p"] for r in recs}, n_draws, width, draws)}
    for k, f in WIDTH_FACTORS.items():
        if k != "stated":
            shares[k] = _share(S, {key[id(r)]: r["_widths"][k] for r in recs},
                               {kk: min(v, SHARE_DRAWS) for kk, v in n_draws.items()},
                               width * f, [min(d, SHARE_DRAWS) for d in draws])
    coords = np.concatenate([spectrum.coords(r) for r in rows[:S]])
    bands = sb.describe(spectrum.bands(width), spectrum.values, coords)
    block = {
        "null": {"kind": NAME, "description": sn.DESCRIPTION, "width": float(width),
                 "fingerprint": spectrum.key, "draws_per_pair": draws, "runs_used": S,
                 "pairs_used": len(recs), "bands": bands,
                 "min_spherical": min(b["spherical"] for b in bands)},
        "skipped": False, "reason": None, "method": dict(METHOD),
        "significance": {
            "procedure": "benjamini-yekutieli", "alpha": inf.FDR_ALPHA,
            "family": "one side of one pair", "judged": JUDGED, "n_matched": n_all,
            "n_significant_by": sum(n_by), "fraction_significant_by": sum(n_by) / n_all,
            "per_pair_by": n_by, "n_tail": sum(r["n_tail"] for r in recs),
            "n_underpowered": sum(r["n_underpowered"] for r in recs),
            "underpowered": any(r["underpowered"] for r in recs),
            "tail_checks_passed": sum(r["tail_checks"]["passed"] for r in recs),
            "tail_checks": sum(r["tail_checks"]["n"] for r in recs)},
        "share_beyond_chance": shares["stated"],
        "share_by_width": shares,
        "fraction_significant_by": inf.run_interval(
            inf.PairedRuns.from_dict(S, {key[id(r)]: r["_by"] for r in recs}), inf.mean()),
        "pairs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in recs],
    }
    return block
