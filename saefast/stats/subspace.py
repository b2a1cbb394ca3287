"""Same features, or only the same subspace? The subspace the runs' decoders span, against
the same nulls as the per-feature evidence (`summary.subspace`).

Features of SAEs trained with different seeds can differ one by one while spanning the same
subspace. A report says which of three it sees: the same features (the feature-level share
beyond chance, `stats.evidence`), the same subspace with different features, or nothing
beyond chance. Per run, the top-r right singular vectors of its firing-weighted decoder:
unit rows scaled by the square root of each feature's firing frequency p_i, so that
W^T W = sum_i p_i u_i u_i^T, the second moment of the directions the SAE uses, each counted
as often as it fires (scaling by p_i would count a feature firing 10x as often 100x).
Between two runs, at rank r on a ladder 8, 16, 32, ... and min(n, d) / 2 (n: the run's rows
with a non-zero weight; with n >= d the full spans are all of R^d, so only r <= min(n, d) / 2
says anything), the subspace overlap ||P_A P_B||_F^2 / r = the mean squared cosine of the
principal angles: 1 for the same subspace, r/d expected for random ones.

Each null (`null_model.NullModel.sample`) draws pairs of null dictionaries of the runs'
sizes (cycling through the pairs), their rows weighted with the runs' own firing rates in a
random order, and gives its mean overlap and spread per r. The dictionary-covariance null is
shown but cannot veto a shared subspace: Σ_D is the runs' own decoders' second moment, so
its rows lie in whatever subspace the runs share and two of its dictionaries share it too,
by construction (it answers "are the features more alike than their common subspace
explains", a feature-level question). Nothing here reads or writes a file.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np

from saefast.data.moments import as_float_array, check_finite
from saefast.errors import ConfigError
from saefast.match import parallel
from saefast.stats import inference as inf
from saefast.stats.null_model import NullModel

RANK_START = 8  # the ladder's first rank; then doubling, then min(n, d) / 2
N_DRAWS = 16  # null pairs per null at most (their mean's error enters the excess's se; 32 took
# 28 of a 512-feature report's 105 s on 2 loaded cores)
MIN_DRAWS = 8
DRAW_WORK = 1 << 34  # draws x (n_a + n_b) x d^2 at most: the null's cost (the Gram matrices)
ONE_THREAD_MAX = 1 << 30  # n x d^2 up to which the draws run on one BLAS thread
NON_VETO = frozenset({"dictionary"})  # nulls shown but not allowed to veto a shared subspace
# a feature share beyond chance below this is not "the same features": planted groups with
# nothing shared (tests/test_verdict.py, test_share.py) are bounded at 0.10, and a pure shift
# of the bulk by 1-2 null SDs gave 0.00-0.05 there, so a smaller share is not a claim the
# tests can back (it is stated beside the verdict, not as it)
MIN_SHARE = 0.10
SAME_FEATURES = "same features"
SAME_SUBSPACE = "same subspace, not the same features"
NOTHING = "nothing beyond chance"

METHOD = (
    "per run, the top-r right singular vectors of its firing-weighted decoder: unit decoder "
    "rows scaled by sqrt(firing frequency), so W^T W = sum_i p_i u_i u_i^T weighs each "
    "feature's direction by how often it fires (p_i itself would weigh it by p_i^2); a run "
    "without firing rates is unweighted (`unweighted_runs`). r on a ladder 8, 16, 32, ... "
    "and min(n, d) / 2, n the run's rows of non-zero weight (with n >= d the full spans are "
    "all of R^d). overlap at r: ||P_A P_B||_F^2 / r, the mean squared cosine of the principal "
    "angles (1: the same subspace, r/d expected for random ones), the mean over pairs, "
    f"{inf.LEVEL_TEXT} {inf.JACKKNIFE_METHOD}. Each null: pairs of its dictionaries of the "
    "runs' sizes, rows weighted with the runs' own firing rates in a random order; mean and "
    "sd of their overlap; excess: observed minus the null's mean, its se the jackknife's "
    "widened by the null mean's Monte Carlo error (sd / sqrt(draws)). Beyond a null at r: "
    "the excess's lower bound at the Bonferroni level 1 - 0.10 / (ranks) above 0 (one-sided, "
    "so runs with nothing beyond a null pass at some rank with probability <= 5 %). "
    "beyond_all: beyond the isotropic, covariance and activation nulls computed; the "
    "dictionary-covariance null is shown but does not veto, since Σ_D is the runs' own "
    "decoders' second moment: its rows lie in any subspace the runs share, by construction. "
    "verdict: 'same features' when the feature-level share beyond chance (the smallest over "
    f"the evidence's nulls) has its interval above 0 and an estimate >= {MIN_SHARE}; else "
    "'same subspace, not the same features' when beyond_all holds at some r; else 'nothing "
    "beyond chance'; none (with the reason) when an input has no interval")


# ---------------------------------------------------------------------------- geometry


def rank_ladder(n_rows: Sequence[int], d: int) -> list[int]:
    """8, 16, 32, ... below min(n, d) / 2, then min(n, d) / 2 itself (n: the fewest rows of
    any run); [] when that is below 1."""
    top = min(min(int(n) for n in n_rows), int(d)) // 2
    ladder, r = [], RANK_START
    while r < top:
        ladder.append(r)
        r *= 2
    return ladder + [top] if top >= 1 else []


def _unit_weighted(rows, rates) -> np.ndarray:
    """[n, d] float64: unit rows (zero rows stay zero) scaled by sqrt(rate) when given."""
    x = as_float_array(rows, "decoder rows").astype(np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ConfigError(f"subspace: decoder rows must be [n, d], got shape {x.shape}")
    check_finite(x, "decoder rows")
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # [n, 1]
    u = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    if rates is None:
        return u
    w = np.asarray(rates, dtype=np.float64).ravel()
    if w.shape[0] != x.shape[0] or not np.isfinite(w).all() or (w < 0).any():
        raise ConfigError(f"subspace: need {x.shape[0]} finite firing rates >= 0, got "
                          f"{w.shape[0]}")
    return u * np.sqrt(w)[:, None]


def weighted_rows(rows, rates) -> int:
    """How many of the rows carry weight (non-zero and, with rates, firing)."""
    return int(np.count_nonzero(np.linalg.norm(_unit_weighted(rows, rates), axis=1) > 0))


def top_subspace(rows, rates, r: int) -> np.ndarray:
    """[d, r] orthonormal: the top-r right singular vectors of the firing-weighted decoder
    (`_unit_weighted`), by decreasing singular value (the top eigenvectors of its Gram)."""
    from scipy.linalg import eigh

    u = _unit_weighted(rows, rates)
    d = u.shape[1]
    if rates is not None:  # rows of features that never fire add nothing to the Gram
        u = u[np.asarray(rates, dtype=np.float64).ravel() > 0]
    if not 1 <= r <= d:
        raise ConfigError(f"subspace: rank {r} is not in 1..{d}")
    if r <= u.shape[0] < d:  # fewer rows than d: from the [n, n] Gram, n^2 d + n^3
        w, a = np.linalg.eigh(u @ u.T)  # ascending
        w, a = w[::-1][:r], a[:, ::-1][:, :r]
        if w[-1] > 1e-6 * w[0]:  # V = U^T A / sqrt(w): orthonormal, well conditioned
            return u.T @ a / np.sqrt(w)
        # rank below r: the [d, d] eigh completes the basis with orthonormal directions
    _, vecs = eigh(u.T @ u, subset_by_index=[d - r, d - 1])  # ascending; d^2 n + d^3
    return vecs[:, ::-1]


def overlap(basis_a: np.ndarray, basis_b: np.ndarray, r: int) -> float:
    """||P_A P_B||_F^2 / r of the first r columns of two orthonormal bases [d, >= r]: the mean
    squared cosine of the r principal angles."""
    m = basis_a[:, :r].T @ basis_b[:, :r]  # [r, r]
    return float(np.sum(m * m) / r)


# ---------------------------------------------------------------------------- nulls


def null_draws(sizes: Sequence[int], d: int) -> int:
    """Null pairs per null: N_DRAWS, fewer (>= MIN_DRAWS) where the Gram matrices of two
    dictionaries of the largest size cost more than DRAW_WORK / N_DRAWS."""
    per = 2 * max(int(n) for n in sizes) * int(d) ** 2
    return int(max(MIN_DRAWS, min(N_DRAWS, DRAW_WORK // per)))


def null_overlaps(model: NullModel, sizes: Sequence[int], rates: Sequence, ranks: list[int],
                  *, n_draws: int, seed: int = 0) -> np.ndarray:
    """[n_draws, len(ranks)]: the overlap of pairs of the null's dictionaries, draw k of the
    sizes of the k-th pair of runs (cycling), each weighted with its run's rates permuted."""
    rng = np.random.default_rng([int(seed), zlib.crc32(model.name.encode())])
    pairs = [(i, j) for i in range(len(sizes)) for j in range(i + 1, len(sizes))]
    out = np.empty((n_draws, len(ranks)))
    for k in range(n_draws):
        i, j = pairs[k % len(pairs)]
        # rows weighted 0 (never firing) add nothing, so only the firing rows are drawn,
        # their rates in a random order: the same distribution as all n rows drawn
        wa, wb = (None if rates[x] is None else rng.permutation(rates[x][rates[x] > 0])
                  for x in (i, j))
        a, b = model.sample([sizes[i] if wa is None else len(wa),
                             sizes[j] if wb is None else len(wb)], rng)
        ua, ub = top_subspace(a, wa, ranks[-1]), top_subspace(b, wb, ranks[-1])
        out[k] = [overlap(ua, ub, r) for r in ranks]
    return out


def _excess(observed: dict, mean: float, sd: float, n_draws: int, n_runs: int,
            n_ranks: int) -> tuple[dict, bool | None]:
    """(excess {estimate, ci, se, level, method}, beyond): observed overlap minus the null's
    mean, se widened by the mean's Monte Carlo error; beyond at the Bonferroni level."""
    est = observed["estimate"] - mean
    out = {"estimate": est, "ci": None, "se": None, "level": inf.DEFAULT_LEVEL,
           "method": "observed mean overlap minus the null's mean overlap"}
    if observed.get("se") is None or not math.isfinite(observed["se"]):
        return dict(out, method=out["method"] + "; no interval: fewer than 3 runs"), None
    se = math.hypot(observed["se"], sd / math.sqrt(n_draws))
    from scipy import stats as sps

    q = float(sps.t.ppf(0.5 + inf.DEFAULT_LEVEL / 2, df=n_runs - 1))
    q_rule = float(sps.t.ppf(1 - (1 - inf.DEFAULT_LEVEL) / 2 / n_ranks, df=n_runs - 1))
    out.update(ci=[est - q * se, est + q * se], se=se,
               method=out["method"] + f"; {inf.LEVEL_TEXT} t(S-1) interval, se the "
               "jackknife's widened by sd / sqrt(draws)")
    return out, bool(est - q_rule * se > 0)


# ---------------------------------------------------------------------------- the block


def subspace_block(rows_per_run: Sequence, rates_per_run: Sequence, null_models:
                   Sequence[NullModel], *, labels: Sequence[str] | None = None,
                   share: dict | None = None, seed: int = 0) -> dict:
    """summary["subspace"] of runs' decoder rows (rows_per_run[r] [n_r, d], the rows run r
    took part in the matchings with) and firing rates (rates_per_run[r] [n_r] or None),
    against each null model. share: the feature-level share beyond chance {estimate, ci}
    (`headline_share`), for the verdict.

    {method, d, n_runs, unweighted_runs, n_draws, nulls {kind: {description, vetoes} or
     {skipped: True, reason}}, ranks [{r, random (r/d), overlap {estimate, ci, se, level,
     method}, nulls {kind: {mean, sd, excess {estimate, ci, ...}, beyond}}, beyond_all}],
     verdict (`verdict`)}"""
    from threadpoolctl import threadpool_limits

    S = len(rows_per_run)
    if S < 2 or len(rates_per_run) != S:
        raise ConfigError("subspace: need at least 2 runs and one rates entry per run")
    labels = list(labels) if labels is not None else [str(i) for i in range(S)]
    rates = [None if r is None else np.asarray(r, dtype=np.float64) for r in rates_per_run]
    d = int(as_float_array(rows_per_run[0], "decoder rows").shape[1])
    sizes = [int(len(r)) for r in rows_per_run]
    ranks = rank_ladder([weighted_rows(x, w) for x, w in zip(rows_per_run, rates)], d)
    out = {"method": METHOD, "d": d, "n_runs": S,
           "unweighted_runs": [lab for lab, w in zip(labels, rates) if w is None],
           "n_draws": None, "nulls": {}, "ranks": []}
    if not ranks:
        out["verdict"] = verdict(share, out)
        return out
    pairs = [(i, j) for i in range(S) for j in range(i + 1, S)]
    n_draws = null_draws(sizes, d)
    out["n_draws"] = n_draws
    # small eighs and GEMMs on one thread (a second only waits on a shared machine); large
    # shapes keep their threads, as the matched nulls' draws do (`null_summary._one_thread`)
    small = max(sizes) * d * d <= ONE_THREAD_MAX
    with threadpool_limits(limits=1 if small else None):
        bases = [top_subspace(x, w, ranks[-1]) for x, w in zip(rows_per_run, rates)]
    drawable = []
    for model in null_models:
        short = model.short_of_pairs([(sizes[i], sizes[j]) for i, j in pairs])
        if short is not None:
            out["nulls"][model.name] = {"skipped": True, "reason": f"skipped: {short}"}
            continue
        out["nulls"][model.name] = {"description": model.description,
                                    "vetoes": model.name not in NON_VETO}
        drawable.append(model)
    # the nulls side by side, one BLAS thread each (NumPy's normal draws, GEMMs and eighs
    # release the GIL): at 16K features their draws were 18 s of one thread's report
    w = parallel.workers(len(drawable))
    with threadpool_limits(limits=1 if small or w > 1 else None):
        drawn = dict(zip([m.name for m in drawable], parallel.map_ordered(
            lambda m: null_overlaps(m, sizes, rates, ranks, n_draws=n_draws, seed=seed),
            drawable, n_workers=w)))
    for k, r in enumerate(ranks):
        values = inf.PairedRuns.from_dict(S, {(i, j): [overlap(bases[i], bases[j], r)]
                                              for i, j in pairs})
        observed = inf.run_interval(values, inf.mean(), about="mean subspace overlap over pairs")
        row = {"r": r, "random": r / d, "overlap": observed, "nulls": {}}
        for name, got in drawn.items():
            mean, sd = float(got[:, k].mean()), float(got[:, k].std(ddof=1))
            ex, beyond = _excess(observed, mean, sd, n_draws, S, len(ranks))
            row["nulls"][name] = {"mean": mean, "sd": sd, "excess": ex, "beyond": beyond}
        vetoes = [v["beyond"] for n, v in row["nulls"].items() if out["nulls"][n]["vetoes"]]
        row["beyond_all"] = (None if not vetoes or None in vetoes else all(vetoes))
        out["ranks"].append(row)
    out["verdict"] = verdict(share, out)
    return out


# ---------------------------------------------------------------------------- the verdict


def headline_share(evidence: dict | None) -> dict | None:
    """The feature-level share beyond chance to judge by: the report's headline
    (summary.evidence.headline, `stats.verdict`: the smallest bulk-matched share over the
    data-shaped nulls that pass the bulk check) as {estimate, ci, null}; None without one."""
    head = (evidence or {}).get("headline") or {}
    share = head.get("share") or {}
    est = share.get("estimate")
    if head.get("null") is None or not isinstance(est, (int, float)) or not math.isfinite(est):
        return None
    return {"estimate": est, "ci": share.get("ci"), "null": head["null"]}


def _clearest(block: dict) -> dict | None:
    """The rank whose smallest excess over the vetoing nulls is largest, with that null."""
    best = None
    for row in block["ranks"]:
        vetoing = [(v["excess"]["estimate"], n, v) for n, v in row["nulls"].items()
                   if block["nulls"][n].get("vetoes")]
        if not vetoing:
            continue
        ex, name, null = min(vetoing, key=lambda t: t[0])
        if best is None or ex > best["excess"]:
            best = {"row": row, "excess": ex, "null": name, "null_mean": null["mean"]}
    return best


def _rank_text(best: dict | None) -> str:
    if best is None:
        return "no null to compare the overlap with"
    o = best["row"]["overlap"]
    ci = f" [{o['ci'][0]:.2f}, {o['ci'][1]:.2f}]" if o.get("ci") else ""
    return (f"rank {best['row']['r']} overlap {o['estimate']:.2f}{ci}, {best['null']} null "
            f"{best['null_mean']:.2f}")


def verdict(share: dict | None, block: dict) -> dict:
    """{label (SAME_FEATURES, SAME_SUBSPACE, NOTHING, or None with `reason`), rule, share,
    features_beyond, subspace_beyond, judged_by (the vetoing nulls computed), note (when no
    data-shaped null was among them), rank (the clearest rank: its smallest excess over the
    vetoing nulls is largest), text (one line)}. Same features beat a shared subspace: with
    a minority of shared features the subspace test can lack power, the feature test not."""
    ci = (share or {}).get("ci")
    features = None if ci is None else bool(ci[0] > 0 and share["estimate"] >= MIN_SHARE)
    rows = block["ranks"]
    flags = [row["beyond_all"] for row in rows]
    subspace = (True if any(f is True for f in flags) else
                None if not flags or None in flags else False)
    best = _clearest(block)
    label = reason = None
    if features:
        label = SAME_FEATURES
    elif features is False and subspace is not None:
        label = SAME_SUBSPACE if subspace else NOTHING
    else:
        reason = ("no feature-level share with an interval (fewer than 3 runs, or no null)"
                  if features is None else "no subspace comparison with an interval against "
                  "a vetoing null (fewer than 3 runs, no null, or too few rows for a rank)")
    rank_text = _rank_text(best)
    small = (f"; feature share {share['estimate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] beyond "
             f"chance, below the {MIN_SHARE:.2f} a claim of shared features needs"
             if features is False and ci[0] > 0 else "")
    judges = [n for n, v in block["nulls"].items() if v.get("vetoes")]
    note = (None if set(judges) - {"isotropic"} else
            "no data-shaped null (covariance, activations) judged the subspace: the isotropic "
            "null alone is beaten by any dictionary that follows the data's anisotropy")
    if label is None:
        text = f"not judged: {reason}"
    elif label == SAME_SUBSPACE:
        text = f"the {label} ({rank_text}{'; isotropic null only' if note else ''}{small})"
    else:
        text = (f"{'the ' if label == SAME_FEATURES else ''}{label} (feature share "
                f"{share['estimate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"
                + (f" vs the {share['null']} null" if share.get("null") else "")
                + f"; {rank_text})")
    return {"label": label, "reason": reason, "rule": METHOD.split("verdict: ", 1)[1],
            "share": share, "features_beyond": features, "subspace_beyond": subspace,
            "judged_by": judges, "note": note,
            "rank": None if best is None else best["row"]["r"], "text": text}
