"""Per-feature evidence of a group report: significance, share beyond chance, other notions of
"recurs", diagnostics and the seed-count curve, each next to a null (`null_model.NullModel`).

`add_evidence(pairs, rows, ...)` adds keys to each pair dict and returns the summary's
`evidence` block; `report_evidence` is what `saefast.report.assemble` calls once per report
(with the runs' firing rates it read). Nothing here reads or writes a file. It reuses the
report's matchings: nothing real is matched again. The statistics are
`saefast.stats.inference` (p-values, Benjamini-Yekutieli, Storey, delete-one-run jackknife) and
`saefast.stats.recurrence` (nearest neighbours, maximum-cardinality matching, seed-count curve).

Per pair (keys added): pvalues (ordered like all_cosines), nearest_pvalues (A's features,
then B's, in the order of the matched rows), significant_by, n_significant_by,
n_significant_bh, share_beyond_chance (nearest p-values), share_beyond_chance_matched,
null_large_enough, nearest {median, fraction_above,
n}, max_cardinality {threshold, count, fraction, one_to_one_count, one_to_one_fraction,
null_fraction, null_one_to_one_fraction}.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from saefast.match import match_decoders, parallel
from saefast.stats import inference as inf
from saefast.stats import recurrence as rec
from saefast.stats import share as sh
from saefast.stats import verdict
from saefast.stats.evidence_nulls import EvidenceNulls, redundancy
from saefast.stats.null_model import NullModel

FIRE_BINS = 10  # deciles of firing frequency
NULL_CURVE_WORK = 1 << 30  # null seed-count curve: sum over null pairs of n_a n_b, at most

METHOD = {
    "unit": "the run (seed): S runs make S(S-1)/2 pairs that share runs, and one pair's matched "
            "cosines are one joint assignment; intervals are delete-one-run jackknife over the "
            "stored matchings (no re-matching), the pairs' own variance counted once, "
            f"t(S-1), {inf.LEVEL_TEXT}; none below 3 runs",
    "pvalues": "per matched feature pair: p = (1 + #null >= c) / (N + 1) against the pooled "
               "matched cosines of null dictionaries of the pair's exact shape, N >= "
               "inference.min_null_size(m) so one feature of m can reach BY's first threshold",
    "significance": "per pair, FDR 5 % by Benjamini-Yekutieli (scipy.stats."
                    "false_discovery_control, method='by'): the matched cosines of one assignment "
                    "are dependent with no proven positive dependence, and BY controls the FDR "
                    "under any dependence; BH counts beside it for comparison; pooled = summed "
                    "over pairs",
    "share_beyond_chance": "each feature's nearest-neighbour p-value (its best cosine in the "
                           "other run against the same on null dictionaries of the pair's "
                           "shape), both sides of every pair, against the null matched to the "
                           "observed bulk (stats.share: a shift of every feature is not "
                           "counted), 1 - Storey's pi0 unclamped; `raw` without the bulk "
                           "matching (a location test); share_beyond_chance_matched: 1 - "
                           "Storey's pi0 of the matched p-values (no bulk matching)",
    "headline": "the smallest share over the data-shaped nulls that pass the bulk check, "
                "naming that null (stats.verdict.RULE)",
    "nearest": "each feature's best cosine in the other run (many-to-one), both sides of each "
               "pair pooled; null: the same on null dictionaries of the pair's shape",
    "max_cardinality": "the largest number of disjoint feature pairs whose cosines all clear "
                       "the threshold (Hopcroft-Karp on edges >= t), as a fraction of "
                       "min(n_a, n_b), beside the one-to-one maximum-total count; null: the "
                       "same on null dictionaries",
    "redundancy": "within one SAE, each feature's max cosine to another of its features "
                  "(near-duplicates inflate matches); null: a null dictionary of the same size",
    "by_fire_rate": "matched cosines of each feature (both sides of each pair), grouped by "
                    "deciles of the feature's firing frequency (feature_analysis.json) pooled "
                    "over runs",
    "seed_count_curve": "for N = 2..S runs: the share of a run's features matched (at the "
                        "threshold / BY-significant) in all N-1 others and in at least half; "
                        "mean over runs and choices of runs, jackknife over runs; null: the "
                        "same on null dictionaries of the runs' sizes, matched pairwise (all "
                        "S of them, or null_runs >= 3 when S pairwise matchings would exceed "
                        "2^30 n_a n_b of work)",
}


def _interval(data: inf.PairedRuns, stat: inf.Statistic) -> dict:
    """{estimate, ci, se, level, method}; ci/se None below 3 runs (no jackknife)."""
    return inf.run_interval(data, stat)


def _fraction(interval: dict) -> dict:
    """A fraction's interval kept within [0, 1] (`inference.fraction_interval`)."""
    return inf.fraction_interval(interval)


def _indicator(count: int, n: int) -> np.ndarray:
    """[n] with `count` ones: a pooled count as the mean of a PairedRuns value array."""
    return np.r_[np.ones(count), np.zeros(n - count)]


def _pair_observed(p: dict, a, b, t: float, partners=None) -> tuple[np.ndarray, np.ndarray]:
    """Add one pair's null-free keys (nearest, max_cardinality) to the pair dict p; returns
    the pair's nearest cosines (A's features [n_a], B's [n_b]). partners: the pair's nearest
    neighbours where its matching kept them (`Matching.nearest`), else None."""
    cos = np.asarray(p["all_cosines"], dtype=np.float64)
    best_a, best_b = rec.nearest_cosines(a, b, partners)
    near = np.concatenate([best_a, best_b])
    most = rec.max_pairs_at(a, b, [t], (best_a, best_b))[t]
    one = int(np.count_nonzero(cos >= t))
    p["nearest"] = {"median": float(np.median(near)), "fraction_above": float(np.mean(near >= t)),
                    "n": int(near.size)}
    p["max_cardinality"] = {"threshold": t, "count": most, "fraction": most / cos.size,
                            "one_to_one_count": one, "one_to_one_fraction": one / cos.size,
                            "null_fraction": None, "null_one_to_one_fraction": None}
    return best_a, best_b


def _pair_under(p: dict, best_a, best_b, nulls: EvidenceNulls) -> dict:
    """One pair against one null: the per-pair keys of the module docstring (p-values, BY
    list, shares) and the null's nearest / max-cardinality numbers of the pair's shape."""
    cos = np.asarray(p["all_cosines"], dtype=np.float64)
    n_a, n_b = len(best_a), len(best_b)
    sig = inf.significance(cos, nulls.matched(n_a, n_b))
    np_ = nulls.pair(n_a, n_b)
    near_p = np.concatenate([inf.feature_pvalues(best_a, np_["near_a"]),
                             inf.feature_pvalues(best_b, np_["near_b"])])
    z = np.sort(np.concatenate([sh.zscores(near_p[:n_a], np_["near_a"].size),
                                sh.zscores(near_p[n_a:], np_["near_b"].size)]))
    return {"pvalues": sig["pvalues"].tolist(), "significant_by": sig["by"].tolist(),
            "n_significant_by": sig["n_by"], "n_significant_bh": sig["n_bh"],
            "share_beyond_chance_matched": sig["share_beyond_chance"],
            "null_large_enough": sig["null_large_enough"],
            "nearest_pvalues": near_p.tolist(),
            "share_beyond_chance": sh.share_at(z, np.ones(z.size)), "null": np_, "nearest_z": z}


def _attach(p: dict, under: dict) -> None:
    """The primary null's per-pair results become the pair's own keys (the report's JSON)."""
    p.update({k: v for k, v in under.items() if k not in ("null", "nearest_z")})
    np_ = under["null"]
    p["nearest"]["null_median"] = np_["nearest_median"]
    p["nearest"]["null_fraction_above"] = np_["nearest_fraction_above"]
    p["max_cardinality"]["null_fraction"] = np_["max_cardinality_fraction"]
    p["max_cardinality"]["null_one_to_one_fraction"] = np_["one_to_one_fraction"]


def _by_fire_rate(pairs: list[dict], rates: Sequence[np.ndarray | None]) -> dict | None:
    """Median matched cosine (and share BY-significant) per decile of firing frequency."""
    if any(r is None for r in rates):
        return None
    vals, cos, sig = [], [], []
    for p in pairs:
        c = np.asarray(p["all_cosines"], dtype=np.float64)
        s = np.asarray(p.get("significant_by", np.zeros(c.size, bool)), dtype=bool)
        for side, run in (("a_indices", p["index_a"]), ("b_indices", p["index_b"])):
            vals.append(rates[run][np.asarray(p[side], dtype=np.int64)])
            cos.append(c), sig.append(s)
    vals, cos, sig = np.concatenate(vals), np.concatenate(cos), np.concatenate(sig)
    edges = np.quantile(vals, np.linspace(0, 1, FIRE_BINS + 1))
    which = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, FIRE_BINS - 1)
    bins = []
    for k in range(FIRE_BINS):
        m = which == k
        bins.append({"decile": k + 1, "fire_rate_from": float(edges[k]),
                     "fire_rate_to": float(edges[k + 1]), "n": int(m.sum()),
                     "median_matched_cosine": float(np.median(cos[m])) if m.any() else None,
                     "fraction_significant_by": (float(np.mean(sig[m])) if m.any() and
                                                 "significant_by" in pairs[0] else None)})
    return {"bins": bins, "n": int(vals.size)}


def _hits(pairs: list[dict], sizes: Sequence[int], keep) -> tuple[list, list]:
    return rec.hits_from_report({"summary": {"runs": [{"n_features": n} for n in sizes]},
                                 "pairs": pairs}, keep)


def _curves(pairs, sizes) -> dict:
    return {"at_threshold": rec.seed_count_curve(*_hits(pairs, sizes, None))}


def _beyond_chance_curve(pairs, sizes, under: dict) -> dict:
    """The seed-count curve counting only BY-significant matches under one null."""
    sig = {(p["index_a"], p["index_b"]): under[p["index_a"], p["index_b"]]["significant_by"]
           for p in pairs}
    return rec.seed_count_curve(*_hits(pairs, sizes, lambda p: sig[p["index_a"], p["index_b"]]))


UNPOWERED_CURVE = ("skipped: the null's pool of matched cosines is too small for any p-value to "
                   "reach BY's first threshold at this many features, so its own dictionaries' "
                   "curve would be 0 by construction")


def null_curve_runs(sizes: Sequence[int]) -> int:
    """How many null dictionaries the null seed-count curve matches pairwise: all S runs'
    sizes while the matchings' work (sum of n_a n_b over pairs) stays under NULL_CURVE_WORK,
    else the first S' that fit (at least 3). 20 seeds x 16,384 features would otherwise be
    190 null matchings per null (~10 min each null on 2 cores) for a curve that is ~0."""
    for s in range(len(sizes), 3, -1):
        work = sum(sizes[i] * sizes[j] for i in range(s) for j in range(i + 1, s))
        if work <= NULL_CURVE_WORK:
            return s
    return min(3, len(sizes))


def _null_curves(rows: list, nulls: EvidenceNulls, t: float) -> dict:
    """The seed-count curve of null dictionaries of the runs' sizes (the first
    `null_curve_runs` of them), matched pairwise (memoised per sizes: deterministic, and the
    same for every group of that shape). `null_runs` says how many."""
    sizes = tuple(len(r) for r in rows)
    sizes = sizes[:null_curve_runs(sizes)]
    if sizes not in nulls.curves:
        nulls.curves[sizes] = _compute_null_curves(sizes, nulls, t)
    return nulls.curves[sizes]


def _compute_null_curves(sizes: tuple[int, ...], nulls: EvidenceNulls, t: float) -> dict:
    rng = np.random.default_rng([*sizes, nulls.null.d, 13])
    dicts = nulls.null.sample(sizes, rng)
    pairs = []
    for i in range(len(dicts)):
        for j in range(i + 1, len(dicts)):
            m = match_decoders(dicts[i], dicts[j], solver=nulls.solver)
            pv = inf.significance(m.cosines, nulls.matched(sizes[i], sizes[j]))
            pairs.append({"index_a": i, "index_b": j, "a_indices": m.rows.tolist(),
                          "b_indices": m.cols.tolist(), "all_cosines": m.cosines.tolist(),
                          "threshold": t, "significant_by": pv["by"].tolist()})
    return {"null_at_threshold": rec.seed_count_curve(*_hits(pairs, sizes, None)),
            "null_beyond_chance": rec.seed_count_curve(
                *_hits(pairs, sizes, lambda p: p["significant_by"])),
            "null_runs": len(sizes),
            "null_by": {"n_significant_by": int(sum(sum(p["significant_by"]) for p in pairs)),
                        "n_matched": int(sum(len(p["all_cosines"]) for p in pairs))}}


def add_evidence(pairs: list[dict], rows: list, *, n_features: Sequence[int], labels: Sequence[str],
                 threshold: float, null: NullModel | None, solver: str = "auto",
                 fire_rates: Sequence[np.ndarray | None] | None = None,
                 cosine_to_init: Sequence[dict | None] | None = None,
                 other_nulls: Sequence[NullModel] = (),
                 partners: dict | None = None) -> dict:
    """Add the per-pair keys to `pairs` (each with index_a/index_b into `rows`) and return the
    summary's `evidence` block. rows[r]: the decoder rows run r took part in the matchings
    with (all features, or the live ones), in the order of the pairs' indices' positions;
    n_features[r]: run r's total feature count; fire_rates[r] [n_features[r]] or None.
    null: the primary null, whose results are the pairs' keys and the block's top-level keys
    (None, a report without baseline: only what needs no null). other_nulls: further nulls
    (covariance, activations, dictionary), each judged the same way from the same matchings; every null's
    block is under `by_null[name]` (the primary's too). partners: {(index_a, index_b): each
    pair's nearest neighbours by its matching (`Matching.nearest`) or None}: the nearest
    cosines without a second GEMM per pair (missing: computed)."""
    t = float(threshold)
    S = len(rows)
    partners = partners or {}
    near = {(p["index_a"], p["index_b"]): _pair_observed(
        p, rows[p["index_a"]], rows[p["index_b"]], t, partners.get((p["index_a"], p["index_b"])))
        for p in pairs}
    by = {(p["index_a"], p["index_b"]): p for p in pairs}

    def data(fn):
        return inf.PairedRuns.from_dict(S, {k: fn(p) for k, p in by.items()})

    nearest = inf.PairedRuns.from_dict(S, {k: np.concatenate(v) for k, v in near.items()})
    most = data(lambda p: _indicator(p["max_cardinality"]["count"], p["n_matched_pairs"]))
    one = data(lambda p: _indicator(p["max_cardinality"]["one_to_one_count"], p["n_matched_pairs"]))
    with outer_threads():  # one F x F product a run: seconds on one core at 16K features
        red = [redundancy(r) for r in rows]
    ev = {
        "null": None, "level": inf.DEFAULT_LEVEL, "threshold": t, "method": dict(METHOD),
        "nearest": {"median": _interval(nearest, inf.median()),
                    "fraction_above": _interval(nearest, inf.fraction_at_least(t))},
        "max_cardinality": {"fraction": _interval(most, inf.mean()),
                            "one_to_one_fraction": _interval(one, inf.mean())},
        "redundancy": {"runs": [{"label": lab, "median": float(np.median(r)),
                                 "fraction_above": float(np.mean(r >= t))}
                                for lab, r in zip(labels, red)]},
        "by_fire_rate": None,
        "cosine_to_init": list(cosine_to_init) if cosine_to_init is not None else None,
        "seed_count_curve": _curves(pairs, n_features),
        "significance": None, "share_beyond_chance": None, "share_beyond_chance_matched": None,
        "fraction_significant_by": None, "by_null": {},
    }
    models = ([null] if null is not None else []) + list(other_nulls)
    # each null's draws, matchings and GEMMs are its own (memoised per null): side by side on
    # the threads single_thread() took away, one torch thread each, so the same bits as in turn
    judged = parallel.map_ordered(
        lambda model: _under_null(pairs, rows, near, n_features, model, t, solver), models,
        n_workers=parallel.workers(len(models), threads=_outer[-1] if _outer else None))
    for k, (model, (block, under)) in enumerate(zip(models, judged)):
        ev["by_null"][model.name] = block
        if k == 0:  # the primary null: its results are the pairs' keys and the top level
            for key, p in by.items():
                _attach(p, under[key])
            ev["null"] = block["null"]
            ev["nearest"]["null"] = block["nearest_null"]
            for name in ("significance", "share_beyond_chance", "share_beyond_chance_matched",
                         "fraction_significant_by"):
                ev[name] = block[name]
            ev["max_cardinality"].update(block["max_cardinality_null"])
            ev["redundancy"]["null"] = block["redundancy_null"]
            ev["seed_count_curve"].update(block["seed_count_curve"])
    ev["by_fire_rate"] = _by_fire_rate(pairs, fire_rates or [None] * S)
    ev["headline"] = verdict.headline(ev["by_null"])
    return ev


def _under_null(pairs, rows, near, n_features, model: NullModel, t: float, solver: str):
    """Every null-dependent statistic of a report under one null: (block, per-pair results).
    A null that cannot draw the dictionaries a pair needs (too few distinct tokens) gives
    {"null": ..., "skipped": True, "reason": ...} and no per-pair results."""
    S = len(rows)
    desc = {"kind": model.name, "description": model.description}
    short = model.short_of_pairs([(len(rows[p["index_a"]]), len(rows[p["index_b"]]))
                                  for p in pairs])
    if short is not None:
        return {"null": desc, "skipped": True, "reason": f"skipped: {short}"}, {}
    nulls = EvidenceNulls(model, t, solver)
    under = {(p["index_a"], p["index_b"]): _pair_under(p, *near[p["index_a"], p["index_b"]], nulls)
             for p in pairs}
    keys = list(under)

    def data(field):
        return inf.PairedRuns.from_dict(S, {k: under[k][field] for k in keys})

    n_by = [under[k]["n_significant_by"] for k in keys]
    n_all = sum(p["n_matched_pairs"] for p in pairs)
    storey = inf.share_beyond_chance()
    null_pairs = [under[k]["null"] for k in keys]
    null_red = np.concatenate([nulls.redundancy(len(r)) for r in rows])
    curves = {"beyond_chance": _beyond_chance_curve(pairs, n_features, under)}
    short = model.short_of([len(r) for r in rows])
    powered = all(under[k]["null_large_enough"] for k in keys)
    if short is None and powered:
        curves.update(_null_curves(rows, nulls, t))
    else:  # underpowered: no null p-value reaches BY's first threshold, so the null's own
        # curve is 0 by construction (and at 16K features its matchings cost a minute a null)
        curves.update(null_at_threshold=None, null_beyond_chance=None,
                      null_reason=f"skipped: {short}" if short else UNPOWERED_CURVE)
    block = {
        "null": dict(desc, shapes=nulls.shapes()), "skipped": False, "reason": None,
        "significance": {
            "procedure": "benjamini-yekutieli", "alpha": inf.FDR_ALPHA, "family": "one pair",
            "n_matched": n_all, "n_significant_by": sum(n_by),
            "fraction_significant_by": sum(n_by) / n_all,
            "n_significant_bh": sum(under[k]["n_significant_bh"] for k in keys),
            "per_pair_by": n_by,
            "null_large_enough": all(under[k]["null_large_enough"] for k in keys)},
        "share_beyond_chance": dict(sh.null_share({k: under[k]["nearest_z"] for k in keys}, S),
                                    pvalues="nearest"),
        "share_beyond_chance_matched": dict(_interval(data("pvalues"), storey),
                                            storey_lambda=inf.STOREY_LAMBDA, pvalues="matched"),
        "fraction_significant_by": _fraction(_interval(
            inf.PairedRuns.from_dict(S, {k: np.asarray(under[k]["significant_by"], dtype=float)
                                         for k in keys}), inf.mean())),
        "nearest_null": {k: float(np.mean([q[k] for q in null_pairs]))
                         for k in ("nearest_median", "nearest_fraction_above")},
        "max_cardinality_null": {
            "null_fraction": float(np.mean([q["max_cardinality_fraction"] for q in null_pairs])),
            "null_one_to_one_fraction": float(np.mean([q["one_to_one_fraction"]
                                                       for q in null_pairs]))},
        "redundancy_null": {"median": float(np.median(null_red)),
                            "fraction_above": float(np.mean(null_red >= t))},
        "seed_count_curve": curves,
    }
    return block, under


def report_evidence(saes, labels, pairs, rows, *, threshold, solver, baseline,
                    fire_rates: Sequence[np.ndarray | None] | None = None,
                    other_nulls: Sequence[NullModel] = (), partners: dict | None = None) -> dict:
    """add_evidence for a stability report: saes (artifacts.LoadedSAE) in the order of the
    pairs' index_a/index_b, rows[r] the decoder rows run r was matched with; the isotropic
    null (primary) and the other_nulls unless baseline=False. fire_rates[r]: run r's firing
    frequencies (`artifacts.read_fire_rates`) or None. partners: as in `add_evidence`."""
    from saefast.stats.null_model import isotropic_null_model

    d = int(saes[0].decoder.shape[1])
    drift = [(s.info.get("metrics") or {}).get("decoder_drift") for s in saes]
    with single_thread():
        return add_evidence(
            pairs, rows, n_features=[s.n_features for s in saes], labels=labels,
            threshold=threshold, null=isotropic_null_model(d, solver=solver) if baseline else None,
            solver=solver, fire_rates=fire_rates,
            cosine_to_init=[None if dd is None else {"label": lab, **dd}
                            for lab, dd in zip(labels, drift)],
            other_nulls=other_nulls if baseline else (), partners=partners)


def report_prefetch(d: int, shapes: Sequence[tuple[int, int]], sizes: Sequence[int], *,
                    threshold: float, solver: str, baseline: bool,
                    other_nulls: Sequence[NullModel] = ()) -> tuple[list, list]:
    """Tasks that draw ahead what `report_evidence` will ask its nulls for (the same null
    models, `EvidenceNulls.prefetch`), as (matched pools, the rest), for a report to run
    beside its pair matchings: the matched pools first (the pairs' isotropic baseline is one
    of them), the rest after the pairs. shapes: the pairs' (n_a, n_b); sizes: the runs' row
    counts. None without baseline; a null that cannot draw these shapes is left to the
    evidence (which says why it skips it)."""
    from saefast.stats.null_model import isotropic_null_model

    first, rest = [], []
    if not baseline:
        return first, rest
    for model in [isotropic_null_model(int(d), solver=solver), *other_nulls]:
        if model.short_of_pairs(shapes):
            continue
        matched, other = EvidenceNulls(model, float(threshold), solver).prefetch(shapes, sizes)
        first += matched
        rest += other
    return first, rest


@contextmanager
def single_thread():
    """torch on one thread inside: the evidence is thousands of small ops (null draws,
    [n, d] normalisations, small GEMMs), for which a second OpenMP thread only adds
    synchronisation; on a loaded 2-core machine each such op waited ~10 ms for it (the default
    study's reports: 6 s on one thread, 60 s on two). Also makes the float64 GEMMs' bits
    independent of the machine's thread count."""
    before = torch.get_num_threads()
    _outer.append(before)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        _outer.pop()
        torch.set_num_threads(before)


_outer: list[int] = []  # the thread counts single_thread() took away, innermost last


@contextmanager
def outer_threads():
    """Inside single_thread(): the threads it took away back, for one large GEMM (each
    output element is still one thread's dot product, so its bits do not change)."""
    if not _outer:
        yield
        return
    inner = torch.get_num_threads()
    torch.set_num_threads(_outer[-1])
    try:
        yield
    finally:
        torch.set_num_threads(inner)
