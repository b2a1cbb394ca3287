"""Feature stability across runs: pair dicts and report summaries from matchings.

Pure functions: loaded runs (`artifacts.LoadedSAE`) and their decoder matchings in, JSON-ready
dicts out; nothing here reads or writes a file or matches anything. The matchings come from
`saefast.report.matchings` and the report is assembled in `saefast.report.assemble`, which also
holds the original study's four functions (compute_sae_pair_alignment,
compute_stability_report, compute_live_only_alignment, compute_live_only_stability_report).

    pair_alignment(sa, sb, idx_a, idx_b, matching, ...)   -> pair dict
    summarise(saes, labels, pairs, ...)                   -> summary (without evidence,
                                                             equivalence, nulls, ablation)
    recurrence_rows(report)                               -> one row per matched feature

A matched pair "counts" when its cosine is >= threshold. Live-only pairs restrict each run
to the features that `feature_analysis.json` marks `dead: false`; indices in their output
(`top_matches`, `a_indices`, ...) are the runs' ORIGINAL feature indices.

Pair dict keys: run_a, run_b, run_a_name, run_b_name, threshold, n_matched_pairs,
matched_count_above_threshold, median_cosine (median of THIS pair's matched cosines),
mean_cosine, top_matches [{a_idx, b_idx, cosine}] (best first), all_cosines (ordered like
a_indices, ascending in A) -- the original keys -- plus mode ("full" | "live_only"),
stability_fraction, fraction_above {"0.5","0.7","0.9"}, a_indices, b_indices, n_features_a,
n_features_b, d_model, solver, certified, timings, baseline_median_cosine (the isotropic
null's median for this pair's shape, `null_summary.isotropic`; None when baseline=False),
pw_mcc (PW-MCC, the mean matched cosine over the pair's min(n_a, n_b) matched features:
`mean_cosine` under the name consistency work reports it by) and baseline_pw_mcc (the
isotropic null's PW-MCC for this pair's shape; None when baseline=False),
index_a/index_b (positions in summary.runs, reports only) and, live-only, live_features_a /
live_features_b (counts).

Report: {"pairs": [...], "summary": {...}}. Summary keys of the original study: n_runs,
n_pairs, threshold, median_of_medians, mean_of_means, stability_fraction_per_pair (list, pair
order), mean_stability_fraction. Added by saefast: mode, top_k, solver, certified, d_model,
global_median, global_mean, pw_mcc (PW-MCC pooled over every pair's matched cosines, so
`global_mean`; with one pair shape the mean of the pairs' pw_mcc; its interval is
seed_intervals.pw_mcc), fraction_above (pooled), best_pair {run_a_name, run_b_name,
median_cosine}, best_feature_pair, fraction_at_threshold, pairwise_medians, baseline (the
isotropic null at the report's null shape, `null_summary.baseline`: the numbers of
summary.nulls.kinds.isotropic; None when baseline=False), runs [{name, label, path, format,
n_features, n_live, k, seed}], feature_recurrence, seed_intervals; the assembly adds
evidence, equivalence, nulls and ablation.

The two medians are different numbers; both are kept:
  - `median_of_medians`: the median over pairs of each pair's `median_cosine` (one value per
    pair, every pair weighs the same; the original study's headline number);
  - `global_median`: the pooled median of ALL matched cosines of all pairs together (every
    matched feature pair weighs the same; `global_mean` and `fraction_above` pool likewise).

feature_recurrence = {threshold, mode, runs: {label: {recurs_in: {"<feature_index>":
[labels of the other runs where its match is >= threshold]}, best_cosine: [per feature, the
best matched cosine over all other runs, or None if it took part in no matching]}}}. Run
labels are run names, made unique with the path where two runs share a name.
`recurrence_rows` flattens it to one row per matched feature.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np

from saefast.errors import ConfigError, RunDirError
from saefast.match import Matching
from saefast.runs.artifacts import LoadedSAE
from saefast.stats import null_summary
from saefast.stats.matched import DEFAULT_THRESHOLDS, matched_statistics

DEFAULT_THRESHOLD = 0.9
DEFAULT_TOP_K = 20

Progress = Callable[[int, int, dict], None]


# ---------------------------------------------------------------------------- inputs


def check_args(threshold: float, top_k: int) -> None:
    """ConfigError unless threshold is a cosine in [-1, 1] and top_k a non-negative integer."""
    try:
        ok = -1.0 <= float(threshold) <= 1.0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"threshold must be a cosine in [-1, 1], got {threshold!r}")
    try:
        ok = int(top_k) == top_k and top_k >= 0
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"top_k must be a non-negative integer, got {top_k!r}")


def check_same_d(saes: Sequence[LoadedSAE]) -> None:
    """RunDirError unless every run's decoder has the same d_model."""
    d0 = saes[0].decoder.shape[1]
    for s in saes[1:]:
        if s.decoder.shape[1] != d0:
            raise RunDirError(
                f"runs have different d_model: {saes[0].path} has d={d0}, {s.path} has "
                f"d={s.decoder.shape[1]}; only SAEs on the same activations can be matched")


def labels(saes: Sequence[LoadedSAE]) -> list[str]:
    """Run names, or the path for runs that share a name (the runs' paths are distinct)."""
    counts = Counter(s.name for s in saes)
    return [s.name if counts[s.name] == 1 else str(s.path) for s in saes]


def features(sae: LoadedSAE, live_only: bool) -> tuple[np.ndarray, Any]:
    """(original indices [n] int64, decoder rows [n, d]) of the features taking part."""
    if not live_only:
        return np.arange(sae.n_features, dtype=np.int64), sae.decoder
    live = sae.live_indices  # raises RunDirError when feature_analysis.json is missing
    if live.numel() == 0:
        raise RunDirError(f"{sae.path}: every feature is dead, nothing to match in live-only mode")
    return live.numpy().astype(np.int64), sae.decoder[live]


# ---------------------------------------------------------------------------- pairs


def pair_alignment(sa: LoadedSAE, sb: LoadedSAE, idx_a: np.ndarray, idx_b: np.ndarray,
                   m: Matching, *, threshold: float, top_k: int, live_only: bool,
                   baseline: bool, solver: str = "auto") -> dict[str, Any]:
    """The pair dict (module docstring) of runs sa and sb from their decoder matching m of
    the features idx_a and idx_b (original indices, `features`)."""
    a_idx, b_idx, cos = idx_a[m.rows], idx_b[m.cols], m.cosines  # original indices
    n = int(cos.size)
    count = int(np.count_nonzero(cos >= threshold))
    best = np.argsort(-cos, kind="stable")[:top_k]
    d = int(sa.decoder.shape[1])
    null = None
    if baseline:
        null = null_summary.isotropic(len(idx_a), len(idx_b), d, solver=solver)
    out: dict[str, Any] = {
        "run_a": str(sa.path),
        "run_b": str(sb.path),
        "run_a_name": sa.name,
        "run_b_name": sb.name,
        "threshold": float(threshold),
        "n_matched_pairs": n,
        "matched_count_above_threshold": count,
        "median_cosine": float(np.median(cos)),
        "mean_cosine": float(np.mean(cos)),
        "top_matches": [{"a_idx": int(a_idx[i]), "b_idx": int(b_idx[i]), "cosine": float(cos[i])}
                        for i in best],
        "all_cosines": cos.tolist(),
        # ---- added by saefast
        "mode": "live_only" if live_only else "full",
        "stability_fraction": count / n,
        "fraction_above": matched_statistics(cos, DEFAULT_THRESHOLDS)["fraction_above"],
        "a_indices": a_idx.tolist(),
        "b_indices": b_idx.tolist(),
        "n_features_a": sa.n_features,
        "n_features_b": sb.n_features,
        "d_model": d,
        "solver": m.solver,
        "certified": bool(m.certified),
        "timings": {k: round(v, 6) for k, v in m.timings.items()},
        "baseline_median_cosine": None if null is None else null["median_cosine"],
        "pw_mcc": float(np.mean(cos)),
        "baseline_pw_mcc": None if null is None else null["mean_cosine"],
    }
    if live_only:
        out["live_features_a"] = int(len(idx_a))
        out["live_features_b"] = int(len(idx_b))
    return out


# ---------------------------------------------------------------------------- summary


def summarise(saes, labels, pairs, *, threshold, top_k, solver, live_only, baseline) -> dict:
    """The summary of a report's pairs (each with index_a/index_b into saes): the module
    docstring's keys but the ones the assembly adds."""
    medians = [p["median_cosine"] for p in pairs]
    fractions = [p["stability_fraction"] for p in pairs]
    pooled = np.concatenate([np.asarray(p["all_cosines"], dtype=np.float64) for p in pairs])
    pooled_stats = matched_statistics(pooled, DEFAULT_THRESHOLDS)
    best = max(pairs, key=lambda p: p["median_cosine"])
    d = int(saes[0].decoder.shape[1])
    null = null_summary.baseline(pairs, d, solver=solver) if baseline else None
    runs = []
    for s, label in zip(saes, labels):
        runs.append({"name": s.name, "label": label, "path": str(s.path), "format": s.format,
                     "n_features": s.n_features,
                     "n_live": None if s.dead is None else int((~s.dead).sum()),
                     "k": s.k, "seed": (s.info.get("config") or {}).get("train", {}).get("seed")})
    summary = {
        "n_runs": len(saes),
        "n_pairs": len(pairs),
        "threshold": float(threshold),
        "median_of_medians": float(np.median(medians)),
        "mean_of_means": float(np.mean([p["mean_cosine"] for p in pairs])),
        "stability_fraction_per_pair": fractions,
        "mean_stability_fraction": float(np.mean(fractions)),
        # ---- added by saefast
        "mode": "live_only" if live_only else "full",
        "top_k": int(top_k),
        "solver": sorted({p["solver"] for p in pairs}),
        "certified": all(p["certified"] for p in pairs),
        "d_model": d,
        "global_median": pooled_stats["median"],
        "global_mean": pooled_stats["mean"],
        "pw_mcc": pooled_stats["mean"],
        "fraction_above": pooled_stats["fraction_above"],
        "best_pair": {"run_a_name": best["run_a_name"], "run_b_name": best["run_b_name"],
                      "median_cosine": best["median_cosine"]},
        "best_feature_pair": _best_feature_pair(pairs),
        "fraction_at_threshold": float(np.mean(pooled >= threshold)),
        "pairwise_medians": _pairwise_medians(pairs, len(saes)),
        "baseline": null,
        "runs": runs,
        "feature_recurrence": _recurrence(saes, labels, pairs, threshold, live_only),
        "seed_intervals": _seed_intervals(pairs, len(saes), threshold, null),
    }
    return summary


def _best_feature_pair(pairs: list[dict]) -> dict:
    """The matched feature pair with the highest cosine over every pair of runs (the first
    such on ties, in pair order)."""
    best = max(pairs, key=lambda p: max(p["all_cosines"]))
    k = int(np.argmax(best["all_cosines"]))
    return {"run_a_name": best["run_a_name"], "run_b_name": best["run_b_name"],
            "feature_a": int(best["a_indices"][k]), "feature_b": int(best["b_indices"][k]),
            "cosine": float(best["all_cosines"][k])}


def _pairwise_medians(pairs: list[dict], n_runs: int) -> list[list[float | None]]:
    """[n_runs][n_runs] median matched cosine of each pair of runs (symmetric; None on the
    diagonal: a run against itself is not a measurement), in the order of summary.runs."""
    med: list[list[float | None]] = [[None] * n_runs for _ in range(n_runs)]
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        med[i][j] = med[j][i] = p["median_cosine"]
    return med


def _seed_intervals(pairs: list[dict], n_runs: int, threshold: float,
                    null: dict | None) -> dict | None:
    """Intervals with the run as the unit (`inference.run_interval`: delete-one-run jackknife,
    t(S-1); it reuses the matchings) for the pooled median, the fraction at or above the
    threshold, the excess of the median over the isotropic null, the pooled PW-MCC and its
    excess over the isotropic null's PW-MCC. None below 3 runs."""
    from saefast.stats import inference  # scipy.stats: only when a report is computed

    if n_runs < 3:
        return None
    data = inference.PairedRuns.from_dict(
        n_runs, {(p["index_a"], p["index_b"]): p["all_cosines"] for p in pairs})
    stats = [inference.median(), inference.fraction_at_least(threshold)]
    if null is not None:
        stats.append(inference.excess_median(null["median_cosine"]))
    stats.append(inference.pw_mcc())
    if null is not None:
        stats.append(inference.excess_pw_mcc(null["mean_cosine"]))
    about = {"pw_mcc": inference.PW_MCC_ABOUT, "excess_pw_mcc": null_summary.EXCESS_PW_MCC}
    return {stat.name: inference.run_interval(data, stat, about=about.get(stat.name))
            for stat in stats}


def _recurrence(saes, labels, pairs, threshold, live_only) -> dict:
    best = [np.full(s.n_features, np.nan) for s in saes]  # [F_i] best matched cosine
    recurs: list[dict[int, list[str]]] = [{} for _ in saes]
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        a_idx = np.asarray(p["a_indices"], dtype=np.int64)
        b_idx = np.asarray(p["b_indices"], dtype=np.int64)
        cos = np.asarray(p["all_cosines"], dtype=np.float64)
        best[i][a_idx] = np.fmax(best[i][a_idx], cos)
        best[j][b_idx] = np.fmax(best[j][b_idx], cos)
        hit = cos >= threshold
        for f in a_idx[hit].tolist():
            recurs[i].setdefault(f, []).append(labels[j])
        for f in b_idx[hit].tolist():
            recurs[j].setdefault(f, []).append(labels[i])
    order = {lab: n for n, lab in enumerate(labels)}
    runs = {}
    for n, lab in enumerate(labels):
        runs[lab] = {
            "recurs_in": {str(f): sorted(others, key=order.__getitem__)
                          for f, others in sorted(recurs[n].items())},
            "best_cosine": [None if np.isnan(c) else float(c) for c in best[n]],
        }
    return {"threshold": float(threshold), "mode": "live_only" if live_only else "full",
            "runs": runs}


# ---------------------------------------------------------------------------- recurrence


def recurrence_rows(report: dict) -> list[dict[str, Any]]:
    """One row per feature that took part in a matching: {run, feature_index, n_recurs,
    recurs_in (list of run labels, match >= threshold), best_cosine}. Accepts a report, its
    summary, or the feature_recurrence dict itself."""
    rec = report
    if "summary" in rec:
        rec = rec["summary"]
    if "feature_recurrence" in rec:
        rec = rec["feature_recurrence"]
    rows = []
    for label, entry in rec["runs"].items():
        recurs_in = entry["recurs_in"]
        for f, cos in enumerate(entry["best_cosine"]):
            if cos is None:
                continue
            others = recurs_in.get(str(f), [])
            rows.append({"run": label, "feature_index": f, "n_recurs": len(others),
                         "recurs_in": list(others), "best_cosine": cos})
    return rows
