"""Feature stability across runs: match every pair of SAEs, summarise, compare to the null.

Pure functions from run directories (read through `artifacts.load_sae`) and matchings to
JSON-ready dicts: nothing here writes a file. `saefast.report.files` writes a report directory
(stability.json, CSVs, plots) and decides when a stored report can be reused.

The original study's names and JSON keys are kept unchanged (keys are only ever added):

    compute_sae_pair_alignment(run_a, run_b, threshold=0.9, top_k=20)          -> pair dict
    compute_stability_report(run_dirs, threshold=0.9, top_k=20)                -> report
    compute_live_only_alignment(run_a, run_b, threshold=0.9, top_k=20)         -> pair dict
    compute_live_only_stability_report(run_dirs, threshold=0.9, top_k=20)      -> report

plus `compute_analysis` (the full report, with the live-only one inside it under "live_only"
when asked: what `reports.analyze_runs` stores) and `recurrence_rows`.

A matched pair "counts" when its cosine is >= threshold. Live-only variants restrict each run
to the features that `feature_analysis.json` marks `dead: false`; indices in their output
(`top_matches`, `a_indices`, ...) are the runs' ORIGINAL feature indices. The same run given
twice (the same directory, or two directories holding identical decoder weights) is refused
with a RunDirError: it would only report a median of 1.0.

Pair dict keys: run_a, run_b, run_a_name, run_b_name, threshold, n_matched_pairs,
matched_count_above_threshold, median_cosine (median of THIS pair's matched cosines),
mean_cosine, top_matches [{a_idx, b_idx, cosine}] (best first), all_cosines (ordered like
a_indices, ascending in A) -- the original keys -- plus mode ("full" | "live_only"),
stability_fraction, fraction_above {"0.5","0.7","0.9"}, a_indices, b_indices, n_features_a,
n_features_b, d_model, solver, certified, timings, baseline_median_cosine (the null's median
for this pair's shapes; None when baseline=False), index_a/index_b (positions in
summary.runs, reports only) and, live-only, live_features_a / live_features_b (counts).

Report: {"pairs": [...], "summary": {...}}. Summary keys of the original study: n_runs,
n_pairs, threshold, median_of_medians, mean_of_means, stability_fraction_per_pair (list, pair
order), mean_stability_fraction. Added by saefast: mode, top_k, solver, certified, d_model,
global_median, global_mean, fraction_above (pooled), best_pair {run_a_name, run_b_name,
median_cosine}, baseline (the null for the most common pair shape, see
`stats.random_baseline`; None when baseline=False), runs [{name, label, path, format,
n_features, n_live, k}], feature_recurrence, seed_intervals, evidence (per-feature
significance, share beyond chance, nearest / max-cardinality statistics, diagnostics,
seed-count curve: `saefast.stats.evidence`, which also adds per-pair keys listed there).

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
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from saefast.errors import ConfigError, RunDirError
from saefast.match import Matching, resolve_solver
from saefast.match import cache as match_cache
from saefast.match.cache import MatchingCache
from saefast.runs.artifacts import WEIGHTS, LoadedSAE, load_sae
from saefast.stats.matched import (
    DEFAULT_THRESHOLDS,
    matched_statistics,
    random_baseline,
)

DEFAULT_THRESHOLD = 0.9
DEFAULT_TOP_K = 20

Progress = Callable[[int, int, dict], None]


# ---------------------------------------------------------------------------- helpers


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


def _as_sae(run: str | Path | LoadedSAE) -> LoadedSAE:
    return run if isinstance(run, LoadedSAE) else load_sae(run)


def load_runs(run_dirs) -> list[LoadedSAE]:
    """Load a set of runs to compare (run directories or LoadedSAEs). RunDirError when there
    are fewer than two, when their d_model differ, or when one run is given twice."""
    if isinstance(run_dirs, (str, Path, LoadedSAE)):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if len(run_dirs) < 2:
        raise RunDirError(f"need at least two runs to compare, got {len(run_dirs)}"
                          + _folder_hint(run_dirs))
    saes = [_as_sae(r) for r in run_dirs]
    _check_same_d(saes)
    _check_distinct(saes)
    return saes


def shared_init_warning(run_dirs) -> str | None:
    """A warning when runs of different groups (another corpus, hook, budget...) share a seed
    and a dictionary shape: saefast's init depends on the seed and shape alone, so such runs
    started from the same decoder and their matched cosines are inflated. None otherwise,
    and for formats without run.json."""
    from saefast.runs.artifacts import RUN, read_json

    first: dict[tuple, tuple[str, str]] = {}
    for run in run_dirs:
        path = Path(run.path if isinstance(run, LoadedSAE) else run) / RUN
        try:
            info = read_json(path) if path.is_file() else {}
        except RunDirError:
            continue  # load_sae reports it
        cfg = info.get("config") if isinstance(info, dict) else None
        if not isinstance(cfg, dict):
            continue
        key = (cfg.get("train", {}).get("seed"), cfg.get("sae", {}).get("n_features"),
               (info.get("model") or {}).get("d_model"))
        name, group = str(info.get("name", path.parent.name)), str(info.get("group"))
        if None in key:
            continue
        if key in first and first[key][1] != group:
            return (f"{first[key][0]} and {name} are in different groups but share seed "
                    f"{key[0]} and {key[1]} features, so they started from the same decoder and "
                    "their match is inflated; compare runs of different seeds across groups")
        first.setdefault(key, (name, group))
    return None


def _folder_hint(run_dirs: list) -> str:
    """When the one path given is a folder of run directories, say so."""
    if len(run_dirs) != 1 or isinstance(run_dirs[0], LoadedSAE):
        return ""
    folder = Path(run_dirs[0])
    if not folder.is_dir() or (folder / WEIGHTS).is_file():
        return ""
    inside = sorted(p.name for p in folder.iterdir() if (p / WEIGHTS).is_file())
    if not inside:
        return ""
    return (f": {folder} is a folder of {len(inside)} run directories, not a run; pass the "
            f"runs themselves (e.g. {folder / '*'})")


def _check_same_d(saes: Sequence[LoadedSAE]) -> None:
    d0 = saes[0].decoder.shape[1]
    for s in saes[1:]:
        if s.decoder.shape[1] != d0:
            raise RunDirError(
                f"runs have different d_model: {saes[0].path} has d={d0}, {s.path} has "
                f"d={s.decoder.shape[1]}; only SAEs on the same activations can be matched")


def _check_distinct(saes: Sequence[LoadedSAE]) -> None:
    """RunDirError when two entries are the same directory or hold identical decoders."""
    by_path: dict[Path, LoadedSAE] = {}
    by_key: dict[tuple, list[LoadedSAE]] = {}
    for s in saes:
        where = Path(s.path).resolve()
        if where in by_path:
            raise RunDirError(
                f"the same run was given twice: {by_path[where].path} and {s.path}; matching a "
                f"run with itself only reports a median cosine of 1.0")
        by_path[where] = s
        dec = s.decoder  # [F, d]
        key = (tuple(dec.shape), dec[:1].numpy().tobytes(), dec[-1:].numpy().tobytes())
        for other in by_key.get(key, []):  # cheap key first, the full comparison on a hit
            if torch.equal(other.decoder, dec):
                raise RunDirError(
                    f"{other.path} and {s.path} hold identical decoder weights (the same SAE "
                    f"twice?); matching a run with itself only reports a median cosine of 1.0")
        by_key.setdefault(key, []).append(s)


def _labels(saes: Sequence[LoadedSAE]) -> list[str]:
    """Run names, or the path for runs that share a name (paths are distinct: _check_distinct)."""
    counts = Counter(s.name for s in saes)
    return [s.name if counts[s.name] == 1 else str(s.path) for s in saes]


def _features(sae: LoadedSAE, live_only: bool) -> tuple[np.ndarray, Any]:
    """(original indices [n] int64, decoder rows [n, d]) of the features taking part."""
    if not live_only:
        return np.arange(sae.n_features, dtype=np.int64), sae.decoder
    live = sae.live_indices  # raises RunDirError when feature_analysis.json is missing
    if live.numel() == 0:
        raise RunDirError(f"{sae.path}: every feature is dead, nothing to match in live-only mode")
    return live.numpy().astype(np.int64), sae.decoder[live]


def pair_matching(sa: LoadedSAE, sb: LoadedSAE, *, live_only: bool, solver: str,
                  matchings: MatchingCache | None = None) -> tuple[np.ndarray, np.ndarray, Matching]:
    """(A's feature indices, B's, their decoder matching): the matching a report's pair is
    made of, read from `matchings` when it was computed before (a sweep's cache)."""
    idx_a, dec_a = _features(sa, live_only)
    idx_b, dec_b = _features(sb, live_only)
    rows = (lambda idx: idx) if live_only else (lambda idx: None)
    m = match_cache.match(matchings, dec_a, dec_b, solver=solver,
                          kind="decoder-live" if live_only else "decoder",
                          id_a=match_cache.identity(sa.decoder, rows(idx_a)),
                          id_b=match_cache.identity(sb.decoder, rows(idx_b)))
    return idx_a, idx_b, m


def _pair(sa: LoadedSAE, sb: LoadedSAE, *, threshold: float, top_k: int, solver: str,
          live_only: bool, baseline: bool,
          matchings: MatchingCache | None = None) -> dict[str, Any]:
    _check_same_d([sa, sb])
    idx_a, idx_b, m = pair_matching(sa, sb, live_only=live_only, solver=solver,
                                    matchings=matchings)
    a_idx, b_idx, cos = idx_a[m.rows], idx_b[m.cols], m.cosines  # original indices
    n = int(cos.size)
    count = int(np.count_nonzero(cos >= threshold))
    best = np.argsort(-cos, kind="stable")[:top_k]
    d = int(sa.decoder.shape[1])
    null = None
    if baseline:
        null = random_baseline(len(idx_a), len(idx_b), d, solver=solver)["median_cosine"]
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
        "baseline_median_cosine": null,
    }
    if live_only:
        out["live_features_a"] = int(len(idx_a))
        out["live_features_b"] = int(len(idx_b))
    return out


# ---------------------------------------------------------------------------- pairs


def compute_sae_pair_alignment(run_a, run_b, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K, *,
                               solver: str = "auto", baseline: bool = True) -> dict[str, Any]:
    """Match all features of run_a and run_b (run directories) one-to-one by decoder cosine."""
    check_args(threshold, top_k)
    sa, sb = _as_sae(run_a), _as_sae(run_b)
    _check_distinct([sa, sb])
    return _pair(sa, sb, threshold=threshold, top_k=top_k,
                 solver=solver, live_only=False, baseline=baseline)


def compute_live_only_alignment(run_a, run_b, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K, *,
                                solver: str = "auto", baseline: bool = True) -> dict[str, Any]:
    """Like compute_sae_pair_alignment, on each run's live features only (original indices)."""
    check_args(threshold, top_k)
    sa, sb = _as_sae(run_a), _as_sae(run_b)
    _check_distinct([sa, sb])
    return _pair(sa, sb, threshold=threshold, top_k=top_k,
                 solver=solver, live_only=True, baseline=baseline)


# ---------------------------------------------------------------------------- reports


def compute_stability_report(run_dirs, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K, *,
                             solver: str = "auto", baseline: bool = True,
                             progress: Progress | None = None) -> dict:
    """Match every pair of runs (all features) and summarise; see the module docstring.
    `progress(i, n_pairs, pair_dict)` is called after each pair when given."""
    return _report(_checked(run_dirs, threshold, top_k, solver), threshold=threshold,
                   top_k=top_k, solver=solver, live_only=False, baseline=baseline,
                   progress=progress)


def compute_live_only_stability_report(run_dirs, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                                       *, solver: str = "auto", baseline: bool = True,
                                       progress: Progress | None = None) -> dict:
    """compute_stability_report on each run's live features only."""
    return _report(_checked(run_dirs, threshold, top_k, solver), threshold=threshold,
                   top_k=top_k, solver=solver, live_only=True, baseline=baseline,
                   progress=progress)


def compute_analysis(run_dirs, *, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                     live_only: bool = False, solver: str = "auto", baseline: bool = True,
                     progress: Progress | None = None,
                     data_nulls: Callable[[int], Sequence] | None = None,
                     held_out: Callable[[], tuple] | None = None,
                     matchings: MatchingCache | None = None) -> dict:
    """The report that `reports.analyze_runs` stores, computed without writing anything: the
    full report, plus (live_only=True) the live-only report under the key "live_only". Each
    run is loaded once; every argument is checked before any matching starts. data_nulls(d):
    the data-shaped `NullModel`s of runs of dimension d (`report_nulls.null_models`), judged
    in the evidence beside the isotropic null (baseline=True only). held_out() -> (x [T, d] or
    None, reason, where): the runs' held-out activations for the activation-correlation view
    of summary["equivalence"] (full report only; encoder matching needs none). matchings:
    where pair matchings computed before are read and new ones kept (`match.cache`)."""
    saes = _checked(run_dirs, threshold, top_k, solver)
    others = list(data_nulls(int(saes[0].decoder.shape[1]))) if baseline and data_nulls else []
    kw = dict(threshold=threshold, top_k=top_k, solver=solver, baseline=baseline,
              progress=progress, other_nulls=others, matchings=matchings)
    report = _report(saes, live_only=False, held_out=held_out, **kw)
    if live_only:
        report["live_only"] = _report(saes, live_only=True, **kw)
    return report


def _checked(run_dirs, threshold, top_k, solver) -> list[LoadedSAE]:
    """Every argument checked (a bad solver name fails before anything is loaded), then the
    runs loaded and checked (distinct, one d): once per public call."""
    check_args(threshold, top_k)
    resolve_solver(solver)
    return load_runs(run_dirs)


def _report(saes: list[LoadedSAE], *, threshold, top_k, solver, live_only, baseline,
            progress, other_nulls: Sequence = (), held_out: Callable | None = None,
            matchings: MatchingCache | None = None) -> dict:
    labels = _labels(saes)
    n_runs = len(saes)
    if live_only:
        for s in saes:
            _features(s, True)  # every run must have live features: fail before matching
    index_pairs = [(i, j) for i in range(n_runs) for j in range(i + 1, n_runs)]
    pairs = []
    for p, (i, j) in enumerate(index_pairs):
        pair = _pair(saes[i], saes[j], threshold=threshold, top_k=top_k, solver=solver,
                     live_only=live_only, baseline=baseline, matchings=matchings)
        pair["index_a"], pair["index_b"] = i, j
        pairs.append(pair)
        if progress is not None:
            progress(p + 1, len(index_pairs), pair)
    summary = _summary(saes, labels, pairs, threshold=threshold, top_k=top_k, solver=solver,
                       live_only=live_only, baseline=baseline)
    from saefast.stats import (
        evidence,  # scipy.stats: imported only when a report is computed
    )

    summary["evidence"] = evidence.report_evidence(
        saes, labels, pairs, [_features(s, live_only)[1] for s in saes], threshold=threshold,
        solver=solver, baseline=baseline, other_nulls=other_nulls)
    if not live_only:  # encoder and activation views of the same matchings
        from saefast.stats import equivalence

        x, reason, where = held_out() if held_out is not None else (
            None, "no held-out activations given (reports.analyze_runs passes the store's)", None)
        summary["equivalence"] = equivalence.equivalence(
            saes, pairs, threshold=threshold, solver=solver, held_out=x,
            held_out_reason=reason, source=where, matchings=matchings)
    return {"pairs": pairs, "summary": summary}


def _summary(saes, labels, pairs, *, threshold, top_k, solver, live_only, baseline) -> dict:
    medians = [p["median_cosine"] for p in pairs]
    fractions = [p["stability_fraction"] for p in pairs]
    pooled = np.concatenate([np.asarray(p["all_cosines"], dtype=np.float64) for p in pairs])
    pooled_stats = matched_statistics(pooled, DEFAULT_THRESHOLDS)
    best = max(pairs, key=lambda p: p["median_cosine"])
    d = int(saes[0].decoder.shape[1])
    null = None
    if baseline:
        shapes = Counter(_matched_shape(p) for p in pairs)
        (n_a, n_b), count = shapes.most_common(1)[0]
        null = dict(random_baseline(n_a, n_b, d, solver=solver), n_pairs_with_this_shape=count)
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


def _seed_intervals(pairs: list[dict], n_runs: int, threshold: float, null: dict | None) -> dict | None:
    """90 % intervals with the run as the unit (delete-one-run jackknife, t(S-1); it reuses
    the matchings) for the pooled median, the fraction at or above the threshold and the
    excess of the median over the isotropic null. None below 3 runs."""
    from saefast.stats import inference

    if n_runs < 3:
        return None
    data = inference.PairedRuns.from_dict(
        n_runs, {(p["index_a"], p["index_b"]): p["all_cosines"] for p in pairs})
    stats = [inference.median(), inference.fraction_at_least(threshold)]
    if null is not None:
        stats.append(inference.excess_median(null["median_cosine"]))
    out = {}
    for stat in stats:
        jk = inference.jackknife(data, stat)
        out[stat.name] = {k: jk[k] for k in ("estimate", "ci", "se", "level", "method")}
    return out


def _matched_shape(pair: dict) -> tuple[int, int]:
    """(n_a, n_b) of the dictionaries that were matched: all features, or the live ones."""
    if pair["mode"] == "live_only":
        return pair["live_features_a"], pair["live_features_b"]
    return pair["n_features_a"], pair["n_features_b"]


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
