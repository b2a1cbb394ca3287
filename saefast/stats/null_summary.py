"""The nulls a report states in its summary: the one isotropic null and the `nulls` block.

One isotropic null per shape. `isotropic(n_a, n_b, d)` is `stats.matched.random_baseline` with
the draws the per-feature p-values use (`null_model.report_null_draws`), memoised there, so
`summary.baseline`, `summary.nulls.kinds.isotropic`, each pair's `baseline_median_cosine` and
the evidence's isotropic p-values all read one set of draws. A report's nulls are drawn at one
pair shape (`null_shape`): full reports, the most common pair shape; live-only reports, whose
pairs each have their own live counts, the median (smaller, larger) live counts.

`add_nulls(report, data)` stores summary["nulls"] of the report and of its live-only report:
the isotropic, covariance and activation nulls (`saefast.stats.nulls`) of the data the runs
trained on (`NullData`, which `saefast.report.nulls` reads from the activation store or the
streamed null-data file), and the dictionary-covariance null of the runs' own decoders when
given (`saefast.stats.dictionary_null`: it needs no data), each with the excess of the observed pooled median over the null's
median and its delete-one-run jackknife interval (`inference.run_interval`: the run is the
unit), and the same for PW-MCC, the mean matched cosine (`pw_mcc`: the mean of the null's
pooled matched cosines; `excess_pw_mcc`). `null_models(data)` gives the same data-shaped
nulls as the evidence's `NullModel`s. Nothing here reads or writes a file.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from saefast.data.moments import ActivationMoments, TokenPool
from saefast.stats import nulls as _nulls
from saefast.stats.dictionary_null import NAME as DICTIONARY
from saefast.stats.dictionary_null import DictionaryCovariance, dictionary_null
from saefast.stats.matched import random_baseline
from saefast.stats.null_model import (
    activation_null_model,
    covariance_null_model,
    null_size,
    report_null_draws,
)
from saefast.stats.spectrum_bands import Spectrum
from saefast.stats.spectrum_null import spectrum_matched_null

NULL_SEED = 0
HIST_EDGES = np.linspace(-1.0, 1.0, 401)  # the stored histograms' bins (width 0.005)
KINDS = ("isotropic", "covariance", "activations")
SPECTRUM = "spectrum"  # the spectrum-matched null: needs the data's Σ and the runs' rows
ONE_THREAD_MAX = 1 << 30  # n_a * n_b * d up to which the null draws run on one thread


@dataclass(frozen=True)
class NullData:
    """What a report's data-shaped nulls draw from: the training rows' moments and token pool
    (None where missing), the reason each data-shaped null is missing (`reasons`, by kind),
    the reason there is no data at all (`reason`), `key` naming the data in the nulls' memo,
    and `where` it came from ({store, file, hook, start, n_rows, rows_key, rows ("held_out",
    "training" or "store"), why}: summary.nulls.data, `report.nulls.null_rows`)."""

    moments: ActivationMoments | None
    pool: TokenPool | None
    reasons: dict[str, str | None]
    reason: str | None
    key: str | None
    where: dict[str, Any]

    @property
    def has_data(self) -> bool:
        return self.moments is not None


# ---------------------------------------------------------------------------- the shape


def matched_shape(pair: dict) -> tuple[int, int]:
    """(n_a, n_b) of the dictionaries that were matched: all features, or the live ones."""
    if pair.get("mode") == "live_only":
        return pair["live_features_a"], pair["live_features_b"]
    return pair["n_features_a"], pair["n_features_b"]


def null_shape(pairs: list[dict]) -> tuple[tuple[int, int], list[dict], str]:
    """The one shape a report's nulls are drawn at, the pairs compared with them, and how
    the shape was chosen. Full reports: the most common pair shape and its pairs (a seed
    group has one). Live-only reports, where every pair has its own live counts: the median
    (smaller, larger) live counts, compared with every pair (the null median changes little
    over such spreads; the per-pair evidence uses each pair's own shape), above 1,024 rounded
    to the grid the evidence draws at (`null_model.null_size`), so they share draws."""
    if pairs and pairs[0].get("mode") == "live_only":
        sides = np.array([sorted(matched_shape(p)) for p in pairs])  # [pairs, 2]
        shape = tuple(null_size(int(round(float(np.median(sides[:, c]))))) for c in (0, 1))
        return shape, list(pairs), "the median live-feature counts of the pairs"
    shape, _ = Counter(matched_shape(p) for p in pairs).most_common(1)[0]
    return shape, [p for p in pairs if matched_shape(p) == shape], \
        "the report's most common pair shape"


# ---------------------------------------------------------------------------- isotropic


def isotropic(n_a: int, n_b: int, d: int, *, solver: str = "auto") -> dict:
    """The isotropic null of dictionaries n_a x n_b in d as a report states it: the keys of
    `random_baseline`, with the draws the per-feature p-values use (the same memoised dict).
    Drawn on one torch thread, as the evidence draws it, so its bits do not depend on which
    of the two asks first; above 1,024 features at `null_size`'s grid, as the evidence."""
    from saefast.stats.evidence import single_thread

    n_a, n_b = null_size(n_a), null_size(n_b)
    with single_thread():
        return random_baseline(n_a, n_b, d, seed=NULL_SEED, n_draws=report_null_draws(n_a, n_b),
                               solver=solver)


def baseline(pairs: list[dict], d: int, *, solver: str = "auto") -> dict:
    """summary["baseline"]: the isotropic null at the report's null shape (the numbers of
    summary.nulls.kinds.isotropic, plus every pooled cosine), n_pairs_with_this_shape and
    pw_mcc (the null's PW-MCC: its mean matched cosine)."""
    (n_a, n_b), used, _ = null_shape(pairs)
    null = isotropic(n_a, n_b, d, solver=solver)
    return dict(null, n_pairs_with_this_shape=len(used), pw_mcc=null["mean_cosine"])


# ---------------------------------------------------------------------------- data-shaped


def null_models(data: NullData | None, *, solver: str = "auto") -> list:
    """The data-shaped nulls as `null_model.NullModel`s (covariance, then activations, those
    the data allows), for the per-feature evidence under each null."""
    if data is None or not data.has_data:
        return []
    out = [covariance_null_model(data.moments, data.key, solver=solver)]
    if data.pool is not None:
        out.append(activation_null_model(data.pool, data.key, solver=solver))
    return out


@contextmanager
def _one_thread(n_a: int, n_b: int, d: int):
    """The null draws are hundreds of small eighs, GEMMs and matchings: run them on one
    thread (torch and BLAS), restored afterwards. With two, BLAS and OpenMP threads spin-wait
    for each other whenever the cores are shared: a 128 x 128 covariance null took 17 s
    instead of 0.43 s on this machine under load (docs/benchmarks.md). Large shapes keep
    their threads (their GEMMs gain from them)."""
    if n_a * n_b * d > ONE_THREAD_MAX:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- the block


def _public(null: dict) -> dict:
    """A null as stored in the report: every key but the pooled cosines, plus their histogram
    over HIST_EDGES (what the plot draws)."""
    out = {k: v for k, v in null.items() if k != "cosines"}
    if not null.get("skipped"):
        counts, _ = np.histogram(np.clip(null["cosines"], -1.0, 1.0), bins=HIST_EDGES)
        out["histogram"] = {"edges": HIST_EDGES.tolist(), "counts": counts.tolist()}
    return out


def _skipped(kind: str, reason: str) -> dict:
    return {"kind": kind, "skipped": True, "reason": f"skipped: {reason}"}


def _paired_cosines(n_runs: int, pairs: list[dict]):
    from saefast.stats import inference

    return inference.PairedRuns.from_dict(
        n_runs, {(p["index_a"], p["index_b"]): p["all_cosines"] for p in pairs})


def excess(n_runs: int, pairs: list[dict], null_median: float) -> dict | None:
    """Observed pooled median (of these pairs) minus the null median, with its interval over
    runs (`inference.run_interval`); None below 3 runs."""
    from saefast.stats import inference  # scipy.stats: only when a report is computed

    if n_runs < 3:
        return None
    return inference.run_interval(_paired_cosines(n_runs, pairs),
                                  inference.excess_median(null_median))


EXCESS_PW_MCC = ("observed pooled PW-MCC (mean matched cosine) minus the null's PW-MCC (the "
                 "mean of its pooled matched cosines at the report's null shape)")


def excess_pw_mcc(n_runs: int, pairs: list[dict], null_mean: float) -> dict | None:
    """`excess` for PW-MCC: the observed pooled mean matched cosine minus the null's mean,
    with its interval over runs; None below 3 runs."""
    from saefast.stats import inference

    if n_runs < 3:
        return None
    return inference.run_interval(_paired_cosines(n_runs, pairs),
                                  inference.excess_pw_mcc(null_mean), about=EXCESS_PW_MCC)


def add_nulls(report: dict, data: NullData, *, solver: str = "auto",
              dictionary: dict[str, DictionaryCovariance | None] | None = None,
              spectrum_rows: dict[str, list | None] | None = None) -> dict:
    """Compute the report's nulls and store them as report["summary"]["nulls"], and those of
    the live-only report (report["live_only"], when there is one) in its own summary, for
    its own (live) pair shape. dictionary: {"full": Σ_D of the full report, "live_only": of
    the live-only one} (`dictionary_null.dictionary_covariance`), each adding the
    dictionary-covariance null; None or a missing mode: no "dictionary" kind there.
    spectrum_rows: {"full": rows, "live_only": rows}, rows[r] the decoder rows run r was
    matched with, adding the spectrum-matched null (`stats.spectrum_null`; skipped with the
    reason without the data's moments). Returns the full report's dict:

    {method, shape {n_a, n_b, d}, n_pairs_with_this_shape, data {store, file, hook, start,
     n_rows, rows_key, rows, why, cross_domain (why the runs trained on different data, else
     None), effective_rank, distinct_tokens}, note (why a null is missing, else None),
     computed (the kinds computed, in order),
     kinds {isotropic | covariance | activations | dictionary | spectrum: the null's summary
     (median_cosine, mean_cosine, quantiles {"0.95", "0.99", "0.999"}, draw_median_spread,
     n_draws, ..., histogram; dictionary: also method, n_runs, rows_per_run, pair_deviation,
     isotropic_rank; spectrum: also width, bands, n_pairs_drawn_from, method) with
     excess_median {estimate, ci, se, level, method} (None below 3 runs), pw_mcc (the
     null's PW-MCC: mean_cosine, the mean over its draws of each draw's
     mean matched cosine) and excess_pw_mcc (like excess_median), or {kind, skipped: True,
     reason}}}."""
    dictionary, spectrum_rows = dictionary or {}, spectrum_rows or {}
    out = _add_nulls(report, data, solver, dictionary.get("full"), spectrum_rows.get("full"))
    if report.get("live_only") is not None:
        _add_nulls(report["live_only"], data, solver, dictionary.get("live_only"),
                   spectrum_rows.get("live_only"))
    return out


def _spectrum(rows: list, used: list[dict], data: NullData, n_a: int, n_b: int,
              solver: str) -> dict:
    """The spectrum-matched null's matched cosines at the null shape: A of each pair compared
    with the nulls (in turn) matched with its B rotated within the bands of Σ's spectrum."""
    return spectrum_matched_null([(rows[p["index_a"]], rows[p["index_b"]]) for p in used],
                                 Spectrum.from_cov(data.moments.cov), solver=solver,
                                 n_draws=report_null_draws(n_a, n_b), seed=NULL_SEED)


def _add_nulls(report: dict, data: NullData, solver: str,
               dcov: DictionaryCovariance | None, rows: list | None) -> dict:
    s, pairs = report["summary"], report["pairs"]
    (n_a, n_b), used, how = null_shape(pairs)
    d = int(s["d_model"])
    with _one_thread(n_a, n_b, d):
        # the draws the evidence's p-values and summary.baseline use (memoised): one per shape
        got = _nulls.nulls(n_a, n_b, d, moments=data.moments, pool=data.pool, seed=NULL_SEED,
                           n_draws=report_null_draws(n_a, n_b), solver=solver, key=data.key)
        if dcov is not None:
            got[DICTIONARY] = dictionary_null(dcov, n_a, n_b, seed=NULL_SEED,
                                              n_draws=report_null_draws(n_a, n_b), solver=solver)
        if rows is not None and data.has_data:
            got[SPECTRUM] = _spectrum(rows, used, data, n_a, n_b, solver)
    from saefast.stats.inference import LEVEL_TEXT

    kinds = {}
    extra = ((DICTIONARY,) if DICTIONARY in got else ()) + ((SPECTRUM,) if rows is not None else ())
    for kind in KINDS + extra:
        if kind not in got:  # the spectrum null needs what the covariance null needs
            why = data.reasons.get(kind) or data.reasons["covariance"] or data.reason
            kinds[kind] = _skipped(kind, why.removeprefix("skipped: "))
            continue
        kinds[kind] = _public(got[kind])
        if not got[kind]["skipped"]:
            null = got[kind]
            kinds[kind]["excess_median"] = excess(s["n_runs"], used, null["median_cosine"])
            kinds[kind]["pw_mcc"] = null["mean_cosine"]
            kinds[kind]["excess_pw_mcc"] = excess_pw_mcc(s["n_runs"], used,
                                                         null["mean_cosine"])
    skipped = [k for k, v in kinds.items() if v["skipped"]]
    if skipped and not data.has_data:  # one reason for both data-shaped nulls
        notes = [data.reason]
    else:
        notes = [f"{k} null {kinds[k]['reason']}" for k in skipped]
    out = {
        "method": (f"each null: dictionaries of {how}, matched like the real ones, the same "
                   "draws as the per-feature p-values (null_model.report_null_size: >= "
                   f"{_nulls.MIN_POOLED_COSINES} matched cosines and enough for BY); quantiles of "
                   "the pooled cosines, spread of the per-draw medians. excess_median: observed "
                   f"pooled median minus the null's median, {LEVEL_TEXT} "
                   "delete-one-run jackknife interval (pair term counted once), t(S-1). pw_mcc: the null's PW-MCC, "
                   "the mean of its pooled matched cosines (each draw matched over min(n_a, "
                   "n_b) features); excess_pw_mcc: the observed pooled PW-MCC minus it, the "
                   "same interval"),
        "shape": {"n_a": n_a, "n_b": n_b, "d": d}, "n_pairs_with_this_shape": len(used),
        "data": {**data.where,
                 "effective_rank": kinds["covariance"].get("effective_rank"),
                 "distinct_tokens": kinds["activations"].get("distinct_tokens")},
        "note": "; ".join(notes) or None,
        "computed": [k for k, v in kinds.items() if not v["skipped"]],
        "kinds": kinds,
    }
    s["nulls"] = out
    return out
