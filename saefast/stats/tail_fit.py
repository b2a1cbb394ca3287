"""Per-feature p-values below 1/(D+1): a fitted upper tail of each feature's null maxima,
checked on held-out null draws (`saefast.stats.spectrum_null` uses it).

With D null draws per feature an empirical p-value is at least 1/(D+1), while
Benjamini-Yekutieli's first threshold is alpha / (m H_m) (~3e-7 at m = 16,384). The
statistic is a maximum of many cosines, whose law is near a generalised extreme-value law
(GEV; a maximum of bounded cosines has a bounded upper tail, shape k > 0 in Hosking's sign,
which the Gumbel, k = 0, overstates: on 128 rows in d = 48 its tail at the held-out 99 %
quantile was 3x the held-out share). The fit:

1. the draws are split: the first D_fit fit, the last D_held are held out;
2. each feature's fit draws give its location and scale (mean, sd): z = (x - mean) / sd;
3. within one spectral stratum (features of similar spectral position, equal-count bins),
   the fit draws' z, each standardised leave-one-out (by the mean and sd of the feature's
   OTHER fit draws, so the pool carries the estimation noise a new draw has), are pooled and
   a GEV is fitted to them by L-moments (Hosking, Wallis and Wood 1985: closed form, no
   optimiser, robust at a few hundred values per stratum);
4. the check: the held-out draws standardised by the fit draws' mean and sd (exactly how an
   observed value is) are pooled per stratum; at each level q of CHECK_LEVELS with at least
   MIN_EXCEED expected exceedances, the fitted tail P(Z >= t_q) at the held-out q-quantile
   t_q must lie within the 99 % Clopper-Pearson interval of the held-out share >= t_q,
   widened by a factor TOLERANCE each way, and no held-out value may lie beyond a bounded
   fit's upper endpoint; a stratum with no level checkable fails;
5. p_tail = the fitted GEV's P(Z >= z_obs) (as -expm1(-t), no cancellation), floored at the
   smallest positive double; an observed value beyond a bounded fit's upper endpoint gets
   that floor and is counted (`beyond_endpoint`): far outside the null, not "p = 0".

The check covers the range the held-out draws resolve; beyond it the p-value is the GEV's
extrapolation (stated, not checked).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

CHECK_LEVELS = (0.9, 0.99, 0.999)
MIN_EXCEED = 10  # expected held-out exceedances for a level to be checked
TOLERANCE = 1.5  # the fitted tail may be this factor outside the binomial interval
CHECK_CONFIDENCE = 0.99
MIN_STRATUM = 64  # features per stratum, at least
MAX_STRATA = 8
TINY = np.finfo(np.float64).tiny

METHOD = ("p-values below the empirical floor 1/(D+1): per feature, location and scale (mean, "
          "sd) of its fit draws; per spectral stratum (equal-count bins of the features' "
          f"spectral position, >= {MIN_STRATUM} features, at most {MAX_STRATA}), a GEV fitted "
          "by L-moments to the fit draws standardised leave-one-out; checked on the "
          "held-out draws standardised like an observed value: at each of the levels "
          f"{', '.join(f'{q:g}' for q in CHECK_LEVELS)} with >= {MIN_EXCEED} expected exceedances "
          "the fitted tail at the held-out quantile must lie within the 99 % Clopper-Pearson "
          f"interval of the held-out share, widened {TOLERANCE:g}x, and no held-out value beyond "
          "a bounded fit's endpoint; a stratum failing (or with "
          "no checkable level) gives no tail p-values: its features keep their empirical "
          "p-value and are counted underpowered. Beyond the held-out range the p-value is the "
          "GEV's extrapolation; beyond a bounded fit's endpoint it is the smallest positive "
          "double, counted as beyond_endpoint")


def strata(position: np.ndarray) -> np.ndarray:
    """[n] stratum of each feature: equal-count bins of its spectral position, as many as
    keep >= MIN_STRATUM features each (1 to MAX_STRATA)."""
    n = position.size
    k = int(np.clip(n // MIN_STRATUM, 1, MAX_STRATA))
    order = np.argsort(position, kind="stable")
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) * k // max(n, 1)
    return out


def _loo(x: np.ndarray) -> np.ndarray:
    """[D, n] each draw standardised by the mean and sd (ddof 1) of the feature's other D-1
    draws (closed form from the sums)."""
    d = x.shape[0]
    s1, s2 = x.sum(0), (x * x).sum(0)
    m = (s1 - x) / (d - 1)
    var = ((s2 - x * x) - (d - 1) * m * m) / (d - 2)
    return (x - m) / np.sqrt(np.maximum(var, 0.0))


def gev_fit(x: np.ndarray) -> tuple[float, float, float]:
    """(loc, scale, k) of a GEV by L-moments (Hosking et al. 1985), Hosking's sign: k > 0 a
    bounded upper tail, k = 0 the Gumbel."""
    x = np.sort(np.asarray(x, np.float64))
    n = x.size
    i = np.arange(n)
    b0 = x.mean()
    b1 = float(np.sum(i / (n - 1) * x)) / n
    b2 = float(np.sum(i * (i - 1) / ((n - 1) * (n - 2)) * x)) / n
    l1, l2, l3 = b0, 2 * b1 - b0, 6 * b2 - 6 * b1 + b0
    c = 2.0 / (3.0 + l3 / l2) - np.log(2) / np.log(3)
    k = 7.8590 * c + 2.9554 * c * c
    if abs(k) < 1e-6:  # the Gumbel
        scale = l2 / np.log(2)
        return float(l1 - 0.5772156649015329 * scale), float(scale), 0.0
    g = math.gamma(1 + k)
    scale = l2 * k / ((1 - 2.0 ** -k) * g)
    return float(l1 - scale * (1 - g) / k), float(scale), float(k)


def gev_sf(z, loc: float, scale: float, k: float) -> np.ndarray:
    """P(Z >= z) of the GEV, without cancellation in the far tail; 0 beyond a bounded upper
    endpoint (callers floor it)."""
    y = (np.asarray(z, np.float64) - loc) / scale
    if k == 0.0:
        t = np.exp(-y)
    else:
        arg = 1.0 - k * y
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            t = np.where(arg > 0, np.abs(arg) ** (1.0 / k), 0.0 if k > 0 else np.inf)
    return -np.expm1(-t)


def check(held_z: np.ndarray, fit: tuple[float, float, float]) -> dict:
    """The held-out check (module docstring, step 4) of one stratum's fitted GEV."""
    z = np.sort(held_z[np.isfinite(held_z)])
    n, rows, ok = z.size, [], True
    alpha = 1 - CHECK_CONFIDENCE
    for q in CHECK_LEVELS:
        if n * (1 - q) < MIN_EXCEED:
            continue
        t = float(np.quantile(z, q))
        k = int(n - np.searchsorted(z, t, side="left"))
        lo = sps.beta.ppf(alpha / 2, k, n - k + 1) if k > 0 else 0.0
        hi = sps.beta.ppf(1 - alpha / 2, k + 1, n - k) if k < n else 1.0
        fitted = float(gev_sf(t, *fit))
        good = lo / TOLERANCE <= fitted <= hi * TOLERANCE
        ok &= good
        rows.append({"level": q, "threshold": t, "held_out_share": k / n, "fitted": fitted,
                     "passed": bool(good)})
    loc, scale, k = fit
    top = loc + scale / k if k > 0 else np.inf  # a bounded fit's upper endpoint
    inside = bool(n == 0 or z[-1] < top)  # no held-out draw the fit calls impossible
    return {"passed": bool(ok and rows and inside), "levels": rows, "n_held_out": int(n),
            "held_out_inside_endpoint": inside}


def tail_pvalues(observed: np.ndarray, fit: np.ndarray, held: np.ndarray,
                 stratum: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """(p [n]: the fitted tail p-value of each observed maximum, NaN where its stratum's fit
    failed the check or its fit draws have no spread; one check dict per stratum).
    observed [n]; fit [D_fit, n], held [D_held, n]: the features' null maxima."""
    fit, held = np.asarray(fit, np.float64), np.asarray(held, np.float64)
    mean, sd = fit.mean(0), fit.std(0, ddof=1)
    spread = sd > 0
    p = np.full(observed.size, np.nan)
    checks = []
    loo = _loo(fit) if fit.shape[0] >= 3 else np.full_like(fit, np.nan)
    for s in np.unique(stratum):
        cols = (stratum == s) & spread
        pool = loo[:, cols].ravel()
        pool = pool[np.isfinite(pool)]
        row = {"stratum": int(s), "n_features": int(cols.sum())}
        if pool.size < 2 * MIN_EXCEED:
            checks.append({**row, "passed": False, "levels": [], "reason": "too few fit draws"})
            continue
        law = gev_fit(pool)
        got = check(((held[:, cols] - mean[cols]) / sd[cols]).ravel(), law)
        row.update(loc=law[0], scale=law[1], shape_k=law[2], **got, beyond_endpoint=0)
        if got["passed"]:
            q = gev_sf((observed[cols] - mean[cols]) / sd[cols], *law)
            row["beyond_endpoint"] = int(np.count_nonzero(q <= 0))
            p[cols] = np.maximum(q, TINY)
        checks.append(row)
    return p, checks
