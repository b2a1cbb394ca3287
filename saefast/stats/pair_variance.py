"""The delete-one-run jackknife's variance with its pair-level term counted once.

A statistic of the values pooled over the S(S-1)/2 pairs of S runs is, to first order, a
U-statistic of order 2 in the runs: theta_hat - theta = sum_p a_p psi_p over pairs p = (i, j)
(a_p: the pair's share of the pooled values), and psi_ij = g_i + g_j + r_ij splits (Hoeffding)
into a run part (what run i brings to every pair it is in: its init, its dead features) and a
pair part r_ij uncorrelated with it (the pair's own matching noise). With P equal pairs

    Var theta_hat = 4 sigma_g^2 / S + sigma_r^2 / P,

while the delete-one-run jackknife's variance has expectation

    E v_J = 4 sigma_g^2 / S + 4 sigma_r^2 / (S (S - 2)):

it counts the pair term 2(S-1)/(S-2) times (2.7x at S = 5, 2.25x at 10, 2.1x at 20; the
jackknife overstates a U-statistic's variance by its higher-order terms, Efron & Stein 1981).
Where pairs differ more than runs do, its intervals are too wide: they covered 0.98-0.99 for
a nominal 0.90 at S = 10 and 20 in tests/test_coverage.py.

`pair_term` estimates sigma_r^2 from each pair's first-order value (`PairedRuns.pair_values`;
`pair_means`, `pair_fractions`: for a mean or a fraction, the statistic of the pair's values
alone, which over equal pairs is exactly psi_p; `median_pair_values`: m + (1/2 - F_p(m)) /
f(m)): the residual variance of the additive fit theta_p = mu + g_i + g_j (least squares,
P - rank degrees of freedom; none below 4 runs).
`corrected_variance` then removes the excess: v = max(v_J - k_r s_r^2, 0) + t_r s_r^2, never
above v_J, with k_r (the jackknife's coefficient of sigma_r^2) and t_r = sum a_p^2 (the true
one) computed for the report's actual pairs and sizes (`coefficients`; missing pairs and
unequal sizes included), not taken from the equal-pair formulas. The run part, a difference
cut at 0, keeps the interval a little wide where only pairs differ (0.93-0.96 at S >= 10);
where both differ it covers 0.87-0.91 (docs/findings.md). Nothing here reads a file.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np


@lru_cache(maxsize=256)
def coefficients(pairs: tuple[tuple[int, int], ...], sizes: tuple[int, ...],
                 n_runs: int) -> tuple[float, float]:
    """(k_r, t_r): the coefficient of sigma_r^2 in the delete-one-run jackknife's expected
    variance and in the true variance of a linear pooled statistic, for these pairs (i, j)
    with these numbers of pooled values (pairs of size 0 carry no weight)."""
    p = np.asarray(pairs)  # [P, 2]
    a = np.asarray(sizes, dtype=np.float64)
    a = a / a.sum()  # [P] each pair's share of the pooled values
    S = int(n_runs)
    rows = []
    for r in range(S):
        keep = a * ((p[:, 0] != r) & (p[:, 1] != r))  # [P] weights without run r
        if keep.sum() <= 0:  # deleting run r leaves no pair: no jackknife replicate
            return float("nan"), float("nan")
        rows.append(keep / keep.sum())
    B = np.array(rows)  # [S, P]: replicate r = B[r] @ psi
    C = B - B.mean(axis=0)
    return float((S - 1) / S * np.sum(C * C)), float(np.sum(a * a))


@lru_cache(maxsize=256)
def _residual_maker(pairs: tuple[tuple[int, int], ...], n_runs: int) -> tuple[np.ndarray, int]:
    """(H [P, P], df): H y is y's residual around the least-squares fit mu + g_i + g_j."""
    p = np.asarray(pairs)
    X = np.zeros((len(p), n_runs + 1))  # [P, 1 + S]: intercept, then one column a run
    X[:, 0] = 1.0
    X[np.arange(len(p)), 1 + p[:, 0]] = 1.0
    X[np.arange(len(p)), 1 + p[:, 1]] = 1.0
    rank = int(np.linalg.matrix_rank(X))
    return np.eye(len(p)) - X @ np.linalg.pinv(X), len(p) - rank


def pair_term(pairs: Sequence[tuple[int, int]], pair_stats: np.ndarray,
              n_runs: int) -> tuple[float, int] | None:
    """(s_r^2, degrees of freedom): the residual variance of the pairs' values around the
    additive fit mu + g_i + g_j, or None when the fit leaves no degree of freedom (S < 4)."""
    y = np.asarray(pair_stats, dtype=np.float64)  # [P]
    H, df = _residual_maker(tuple(map(tuple, pairs)), int(n_runs))
    if df < 1 or not np.all(np.isfinite(y)):
        return None
    resid = H @ y
    return float(resid @ resid / df), df


def corrected_variance(v_jack: float, pairs: Sequence[tuple[int, int]], sizes: Sequence[int],
                       pair_stats: np.ndarray, n_runs: int) -> dict:
    """{variance, pair_variance, pair_df, k_r, t_r}: the jackknife variance v_jack with the
    pair term counted once (module doc); v_jack itself (pair_variance None) when the pairs'
    statistics cannot separate it (fewer than 4 runs, a pair without values, NaN)."""
    keep = [k for k, n in enumerate(sizes) if n > 0]
    if len(keep) < len(sizes) or not np.isfinite(v_jack):
        return {"variance": v_jack, "pair_variance": None, "pair_df": 0, "k_r": None,
                "t_r": None}
    term = pair_term(pairs, pair_stats, n_runs)
    if term is None:
        return {"variance": v_jack, "pair_variance": None, "pair_df": 0, "k_r": None,
                "t_r": None}
    s2, df = term
    k_r, t_r = coefficients(tuple(map(tuple, pairs)), tuple(int(n) for n in sizes), n_runs)
    if not np.isfinite(k_r):
        return {"variance": v_jack, "pair_variance": None, "pair_df": 0, "k_r": None,
                "t_r": None}
    v = min(v_jack, max(v_jack - k_r * s2, 0.0) + t_r * s2)
    return {"variance": float(v), "pair_variance": s2, "pair_df": df, "k_r": k_r, "t_r": t_r}


# ---------------------------------------------------------------------------- pair values


def pair_fractions(mask: np.ndarray, pair_of: np.ndarray, n_pairs: int) -> np.ndarray:
    """[P] each pair's share of its pooled values where mask [M] holds (NaN: no values)."""
    n = np.bincount(pair_of, minlength=n_pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(pair_of, weights=mask.astype(np.float64), minlength=n_pairs) / n


def pair_means(values: np.ndarray, pair_of: np.ndarray, n_pairs: int) -> np.ndarray:
    """[P] each pair's mean of its pooled values (NaN: no values)."""
    n = np.bincount(pair_of, minlength=n_pairs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.bincount(pair_of, weights=values, minlength=n_pairs) / n


def median_pair_values(pooled: np.ndarray, pair_of: np.ndarray, n_pairs: int) -> np.ndarray:
    """[P] m + (1/2 - F_p(m)) / f(m): each pair's first-order value of the pooled median m
    of `pooled` [M] (ascending). F_p: the pair's fraction below m, ties counted half; f: the
    pooled density at m, a difference quotient over the central 2h of the pooled values,
    h = M^(-1/3) (Hall & Sheather 1988's rate). A pair's own median would add the lumpiness
    of its few values, which the pooled median does not have."""
    M = pooled.size
    m = 0.5 * (pooled[(M - 1) // 2] + pooled[M // 2])
    h = min(0.25, M ** (-1 / 3))
    spread = np.quantile(pooled, 0.5 + h) - np.quantile(pooled, 0.5 - h)
    if not spread > 0:  # the middle of the pool is one value: no density to divide by
        return np.full(n_pairs, m)
    below = pair_fractions((pooled < m) + 0.5 * (pooled == m), pair_of, n_pairs)  # [P]
    return m + (0.5 - below) * spread / (2 * h)
