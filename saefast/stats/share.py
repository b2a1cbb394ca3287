"""The share of features beyond chance, measured so that a shift cannot pass for it.

Storey's 1 - pi0 at lambda = 0.5 is P(p <= 0.5) - P(p > 0.5) scaled: a location test. If every
unshared feature's nearest cosine sits d null SDs above the null (trained dictionaries are more
concentrated than the null's rows; second-order structure the null lacks), it reports
1 - 2 Phi(-d) of the features as beyond chance (0.68 at d = 1, 0.95 at d = 2) with nothing
shared. Here the null is first matched to the observed bulk, as Efron's empirical null
(Efron 2004, "Large-scale simultaneous hypothesis testing") does:

1. each feature's p-value p (against its pair's own null) becomes z = Phi^-1(1 - p_mid), p_mid
   = p - 1 / (2 (N + 1)) (the mid-p of the empirical null of N cosines), +inf at the floor
   p = 1 / (N + 1) (beyond every draw: such features are kept out of the bulk's density and
   counted above it). Under the null z ~ N(0, 1) whatever the null's own shape (a maximum of
   cosines is skewed);
2. the unshared bulk is fitted as N(delta, sigma^2): delta is the centre of the highest peak of
   the z density at z <= MAX_SHIFT (a binned Gaussian kernel density, refined by a parabola
   through the log density around the peak: Efron's central matching, on the peak alone),
   pi0 = 2 F(delta) (the bulk is symmetric about its centre and everything beyond chance lies
   above it), sigma from the bulk's lower one-SD point (the observed z at level pi0 Phi(-1));
3. p' = P(N(delta, sigma^2) >= z): the null is moved to the bulk and given its width (which at
   lambda = 0.5 does not enter: the share is then 1 - 2 F(delta)). A null the bulk sits far
   below fails the bulk check (below) and does not carry the headline; the share is 1 - Storey's pi0 of p', UNCLAMPED (a negative
   share is an observed bulk the null does not describe, and is shown as it is), at lambda =
   0.5 and over LAMBDAS (its spread over lambda is part of what the share is).

The bulk check: delta, in null SDs, with its delete-one-run interval, and sigma. A null fails
when the observed bulk is below it by more than BULK_TOLERANCE null SDs with an interval wholly
below 0 (too strict for these dictionaries: the dictionary-covariance null of few rows is, by
its sampling anisotropy), or when sigma is outside SIGMA_RANGE (the null's shape does not
describe the bulk). The tolerance: the bulk's centre is a mode, a non-smooth statistic whose
delete-one-run interval is too narrow at 5 runs (exact nulls gave bulks 0.1-0.2 SDs below with
intervals excluding 0), and an offset that small moves the share by < 0.2 x its size in SDs. A null that fails has its share stated, but
the headline (`stats.verdict.headline`) does not rest on it.

Where there is no bulk to match (no density peak at z <= MAX_SHIFT, or fewer than
MIN_BULK_FEATURES features below its lower one-SD point: nearly every feature recurs) the null
is used as it is (delta = 0, sigma = 1) and `fitted` says so. A bulk centred more than MAX_SHIFT
null SDs up is not matched either: a shift that large is not told apart from sharing here.
Planted checks (tests/test_share.py): nothing shared, shifted 0-2 null SDs: share ~0; 30 % and
60 % shared: 0.30 and 0.60, whatever the shift.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from saefast.errors import ConfigError
from saefast.stats import inference as inf

KDE_BANDWIDTH = 0.6  # null SDs: the bulk's density is smoothed this much (0.4: sd of the share 0.07 at a 2-SD shift, 0.6: 0.04)
BIN_WIDTH = 0.02  # null SDs: the density is binned this finely (linear cost in features)
PEAK_HALF_WIDTH = 1.0  # null SDs each side of the density's peak the parabola is fitted on
MAX_SHIFT = 3.0  # null SDs: a bulk centred higher is not matched (module doc)
SIGMA_RANGE = (0.5, 2.0)  # the observed bulk's width over the null's, for the bulk check
MIN_SIGMA = 0.25  # null SDs: the narrowest bulk width used
MIN_BULK_FEATURES = 10  # unshared features below the bulk's lower one-SD point, at least
BULK_TOLERANCE = 0.25  # null SDs the bulk may sit below the null and still pass
LAMBDAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)

NOT_FITTED = (f"no unshared bulk within {MAX_SHIFT:g} null SDs of the null (nearly every feature "
              "beyond it): the null used as it is")

METHOD = (
    "share beyond the null matched to the observed bulk (Efron's empirical null): each "
    "feature's nearest-neighbour p-value (against its pair's own null, N null cosines) as z = "
    "Phi^-1(1 - p + 1/(2(N+1))); the unshared bulk fitted as N(delta, sigma^2): delta the centre "
    "of the z density's highest peak at z <= 3 (kernel density, bandwidth 0.6, parabola on the "
    "log density around the peak), pi0 = 2 F(delta), sigma from the bulk's lower one-SD point; "
    "p' = P(N(delta, "
    "sigma^2) >= z); share = 1 - Storey's pi0 of p' at lambda 0.5, unclamped (a "
    "negative share is shown), and over lambda 0.2-0.8. So a shift of every feature (the "
    "dictionaries more concentrated than the null's rows) is not counted; features far above "
    "the bulk are. Bulk check: delta (null SDs) with its interval and sigma; a null fails when "
    "delta < -0.25 with its interval wholly below 0 (too strict: the observed bulk below it) "
    "or sigma is "
    "outside 0.5-2 (its shape does not describe the bulk). "
    "Intervals: delete-one-run jackknife, the fit redone without each run")


# ---------------------------------------------------------------------------- per feature


def zscores(pvalues, n_null: int) -> np.ndarray:
    """[n] z = Phi^-1(1 - p_mid) of empirical p-values (1 + #null >= c) / (N + 1); +inf where
    p is at (or, fitted, below) the null's floor 1 / (N + 1): beyond every null draw, so
    beyond the bulk whatever its fit (kept out of the bulk's density, counted above it)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if n_null < 1:
        raise ConfigError(f"zscores: the null has no cosines ({n_null})")
    floor = 1.0 / (n_null + 1.0)
    z = norm.isf(np.clip(p - 0.5 * floor, 0.5 * floor, 1.0))
    z[p <= floor * (1 + 1e-9)] = np.inf
    return z


def _quantile(z: np.ndarray, w: np.ndarray, level: float) -> float:
    """Weighted quantile of ascending z (weights w >= 0) at level in (0, 1]."""
    cw = np.cumsum(w)
    return float(z[min(np.searchsorted(cw, level * cw[-1], side="left"), z.size - 1)])


def _storey(p_sorted: np.ndarray, w: np.ndarray, lam: float) -> float:
    """Unclamped Storey pi0 of ascending p-values with weights."""
    above = w[np.searchsorted(p_sorted, lam, side="right"):].sum()
    return float(above / ((1.0 - lam) * w.sum()))


def _counts(z: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binned weights of z on BIN_WIDTH bins: (centres [B], weights [B])."""
    lo, hi = float(z[0]), float(z[-1])
    edges = np.arange(lo - 4 * KDE_BANDWIDTH, hi + 4 * KDE_BANDWIDTH + BIN_WIDTH, BIN_WIDTH)
    counts, _ = np.histogram(z, bins=edges, weights=w)
    return (edges[:-1] + edges[1:]) / 2, counts


def bulk_centre(z: np.ndarray, w: np.ndarray) -> float | None:
    """The centre of the unshared bulk: the highest local maximum at z <= MAX_SHIFT of a
    Gaussian kernel density (bandwidth KDE_BANDWIDTH null SDs, binned), refined by a parabola
    through the log density within +-PEAK_HALF_WIDTH; None when the density has no maximum
    there (nearly every feature beyond chance: no bulk to match)."""
    finite = np.isfinite(z)
    if np.count_nonzero(w[finite] > 0) < 2:
        return None
    x, c = _counts(z[finite], w[finite])
    half = int(np.ceil(4 * KDE_BANDWIDTH / BIN_WIDTH))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * BIN_WIDTH / KDE_BANDWIDTH) ** 2)
    dens = np.convolve(c, kernel)[half:half + c.size]  # [B]
    peak = (dens[1:-1] > dens[:-2]) & (dens[1:-1] >= dens[2:]) & (x[1:-1] <= MAX_SHIFT)
    idx = np.flatnonzero(peak) + 1
    if idx.size == 0:
        return None
    k = int(idx[np.argmax(dens[idx])])
    near = (np.abs(x - x[k]) <= PEAK_HALF_WIDTH) & (dens > 0)
    a, b, _ = np.polyfit(x[near] - x[k], np.log(dens[near]), 2)
    return float(x[k] - b / (2 * a)) if a < 0 and abs(b / (2 * a)) <= PEAK_HALF_WIDTH \
        else float(x[k])


def fit_bulk(z: np.ndarray, w: np.ndarray | None = None) -> dict:
    """{delta, sigma, pi0, fitted} of z with weights (default 1): the unshared bulk N(delta,
    sigma^2) (module doc, step 2) and the share of unshared features it implies, pi0 =
    2 F(delta) (the bulk is symmetric about its centre; everything beyond chance lies above)."""
    z = np.asarray(z, dtype=np.float64)
    w = np.ones(z.size) if w is None else np.asarray(w, dtype=np.float64)
    if np.any(z[1:] < z[:-1]):  # (np.diff: inf - inf)
        order = np.argsort(z, kind="stable")
        z, w = z[order], w[order]
    keep = w > 0
    z, w = z[keep], w[keep]
    if z.size < 2 * MIN_BULK_FEATURES:
        return {"delta": 0.0, "sigma": 1.0, "pi0": None, "fitted": False}
    delta = bulk_centre(z, w)
    if delta is None:
        return {"delta": 0.0, "sigma": 1.0, "pi0": None, "fitted": False}
    cw = np.cumsum(w) / w.sum()
    pi0 = float(min(1.0, 2.0 * cw[max(np.searchsorted(z, delta, side="left") - 1, 0)]))
    if pi0 * norm.cdf(-1.0) * z.size < MIN_BULK_FEATURES:
        return {"delta": 0.0, "sigma": 1.0, "pi0": pi0, "fitted": False}
    sigma = delta - _quantile(z, w, pi0 * norm.cdf(-1.0))  # the bulk's lower one-SD point
    return {"delta": float(delta), "sigma": float(sigma), "pi0": pi0, "fitted": True}


def adjusted_pvalues(z, delta: float, sigma: float) -> np.ndarray:
    """p' = P(N(delta, sigma^2) >= z): the null moved to the bulk and given its width (at
    lambda = 0.5 the width does not enter: p' > 0.5 iff z < delta)."""
    return norm.sf((np.asarray(z, dtype=np.float64) - delta) / max(sigma, MIN_SIGMA))


def share_at(z: np.ndarray, w: np.ndarray, lam: float = inf.STOREY_LAMBDA) -> float:
    """1 - unclamped Storey pi0 (at lam) of the bulk-matched p-values of ascending z."""
    fit = fit_bulk(z, w)
    p = adjusted_pvalues(z, fit["delta"], fit["sigma"])[::-1]  # ascending
    return 1.0 - _storey(p, w[::-1], lam)


# ---------------------------------------------------------------------------- statistics


def bulk_share(lam: float = inf.STOREY_LAMBDA) -> inf.Statistic:
    """The share beyond the bulk-matched null, as a statistic of pooled z (`PairedRuns` of
    `zscores`), so the jackknife refits the bulk without each run."""
    return inf.Statistic(f"bulk_matched_share_lambda_{lam:g}", lambda z, w: share_at(z, w, lam))


def bulk_shift() -> inf.Statistic:
    """delta of the bulk fit (null SDs): how far the observed unshared bulk sits above (> 0)
    or below (< 0) the null."""
    return inf.Statistic("bulk_shift_sd", lambda z, w: fit_bulk(z, w)["delta"])


def raw_share(lam: float = inf.STOREY_LAMBDA) -> inf.Statistic:
    """1 - unclamped Storey pi0 of the null's own p-values (no bulk matching): the location
    statistic, kept beside the bulk-matched share."""
    def fn(z, w):
        return 1.0 - _storey(norm.sf(z)[::-1], w[::-1], lam)
    return inf.Statistic(f"share_lambda_{lam:g}", fn)


def bulk_check(shift: dict | None, sigma: float) -> str | None:
    """Why the null fails the bulk check, or None when it passes: the observed bulk is not
    below the null (by more than BULK_TOLERANCE null SDs, with an interval below 0) and is as wide as the null within a factor SIGMA_RANGE (a null whose
    shape is not the bulk's does not say where the unshared features would be)."""
    if shift is None:  # no bulk fitted: every feature beyond this null
        return None
    ci = shift.get("ci")
    low = shift["estimate"] < -BULK_TOLERANCE and (
        ci is None or not all(np.isfinite(ci)) or ci[1] < 0.0)
    if low:
        return (f"the observed bulk sits {-shift['estimate']:.2f} null SDs below it (too "
                "strict)")
    if not SIGMA_RANGE[0] <= sigma <= SIGMA_RANGE[1]:
        return (f"the observed bulk is {sigma:.2f} times as wide as it: its shape does not "
                "describe the unshared features")
    return None


def null_share(z_by_pair: dict[tuple[int, int], np.ndarray], n_runs: int) -> dict:
    """The share block of one null: {estimate, ci, se, level, method, over_lambda {lambda:
    share}, lambda_range [min, max], raw {estimate, ci, ...} (no bulk matching), bulk {shift
    {estimate, ci, ...} (null SDs; None when no bulk was fitted), sigma, pi0, fitted, fails (why
    it fails the bulk check, None when it passes), note}}. z_by_pair: each pair's
    `zscores` of its features' nearest p-values (both sides)."""
    data = inf.PairedRuns.from_dict(n_runs, z_by_pair)
    out = inf.run_interval(data, bulk_share(), about="share beyond the bulk-matched null")
    z = data._sorted
    w = np.ones(z.size)
    fit = fit_bulk(z, w)
    over = {f"{lam:g}": share_at(z, w, lam) for lam in LAMBDAS}
    shift = inf.run_interval(data, bulk_shift()) if fit["fitted"] else None
    out.update(
        over_lambda=over, lambda_range=[min(over.values()), max(over.values())],
        storey_lambda=inf.STOREY_LAMBDA,
        raw=inf.run_interval(data, raw_share(), about="1 - Storey pi0 of the null's own "
                                                      "p-values (a location test)"),
        bulk={"shift": shift, "sigma": fit["sigma"], "pi0": fit["pi0"], "fitted": fit["fitted"],
              "fails": bulk_check(shift, fit["sigma"]),
              "note": None if fit["fitted"] else NOT_FITTED},
        method_detail=METHOD)
    return out
