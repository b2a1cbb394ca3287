"""Data-shaped nulls for matched decoder cosines (the moments and token pools they draw from:
`saefast.data.moments`).

A matched-cosine distribution means something only next to a null: the same matching applied
to dictionaries that share nothing. Three nulls, each matched exactly as real dictionaries are
(`saefast.match.match_decoders`, default solver), per shape (n_a, n_b, d) and per hook:

- isotropic: Gaussian rows, i.e. two untrained SAEs (the init is isotropic). This is
  `stats.random_baseline`, which this module reuses draw for draw. Beating it only shows that
  training added shared structure, not that two runs found the same features.
- covariance: rows drawn from N(0, Σ), Σ the centred covariance of the activations the SAEs
  trained on (`ActivationMoments.cov`). Trained decoders fall into the activations'
  high-variance subspace whatever they learn, and two random dictionaries in that subspace
  already match well (128 x 128 in d=384: median 0.122 isotropic, 0.415 with 32 equal
  eigenvalues).
  This is the null "the same feature" must beat.
- activations: rows are random centred activation vectors of DISTINCT tokens (A and B drawn
  without replacement from one pool of distinct token ids, one vector per id): dictionaries
  of data points, closer to the data than any Gaussian. Near the embedding one token id gives
  nearly one vector, so a repeated id would match at ~1: hence distinct ids across both
  dictionaries. With fewer distinct ids than n_a + n_b features the null is skipped with a
  reason (a result, not an exception).

A fourth null follows the decoders instead of the data: the dictionary-covariance null
(`saefast.stats.dictionary_null`), `covariance_null` on Σ_D, the decoders' own second moment.

Every null returns the keys of `stats.random_baseline` (median_cosine, mean_cosine,
max_cosine, fraction_above, cosines: every draw's matched cosines pooled, n_per_draw, ...)
plus `quantiles` (95, 99, 99.9 % of the pooled cosines, numpy's linear interpolation),
`draw_medians` and `draw_median_spread` (min, max, std of the per-draw medians: independent
draws, so this is the honest spread; pooled cosines of one draw are one joint assignment).
Results are deterministic for a key and memoised per key, which includes a fingerprint of Σ
or of the activations (or a caller's `key`), so two hooks never share a null. Treat them as
read-only.

Number of draws (`draws_for`): enough that the pool holds >= 10,000 matched cosines, and at
least 2 draws (a spread). With N pooled values the 99.9 % quantile has ~N/1000 = 10 values
above it; its binomial rank error sqrt(p(1-p)/N) ~ 3e-4 puts the estimate between the true
99.87 % and 99.93 % quantiles (one s.e.). Cosines of one draw are dependent, so this is a
floor; the per-draw spread shows the rest.
"""

from __future__ import annotations

import math

import numpy as np

from saefast.data.moments import (
    ActivationMoments,
    TokenPool,
    as_float_array,
    check_finite,
    fingerprint,
)
from saefast.errors import ActivationError, ConfigError
from saefast.stats.matched import matched_statistics, random_baseline

QUANTILES = (0.95, 0.99, 0.999)
MIN_POOLED_COSINES = 10_000  # draws_for: pooled matched cosines per null (see module doc)
MIN_DRAWS = 2  # at least two independent draws, so the spread over draws exists


# ------------------------------------------------------------------ helpers


def _check_shape_args(**kw) -> None:
    for name, v in kw.items():
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ConfigError(f"nulls: {name} must be a positive integer, got {v!r}")


def draws_for(n_a: int, n_b: int, min_cosines: int = MIN_POOLED_COSINES) -> int:
    """Draws so that the pool holds >= min_cosines matched cosines (min(n_a, n_b) per draw),
    and at least MIN_DRAWS. 64 x 64 -> 157, 128 x 128 -> 79, 16384 x 16384 -> 2."""
    _check_shape_args(n_a=n_a, n_b=n_b, min_cosines=min_cosines)
    return max(MIN_DRAWS, math.ceil(min_cosines / min(int(n_a), int(n_b))))


def effective_rank(cov) -> float:
    """Participation ratio (tr Σ)^2 / tr(Σ^2): d for isotropic Σ, r for r equal eigenvalues."""
    c = np.asarray(cov, dtype=np.float64)
    denom = float(np.sum(c * c))  # tr(Σ^2) = ||Σ||_F^2 for symmetric Σ
    return float(np.trace(c) ** 2 / denom) if denom > 0 else 0.0


# ------------------------------------------------------------------ draws and summaries


def _rng(n_a: int, n_b: int, d: int, seed: int, n_draws: int) -> np.random.Generator:
    # random_baseline's seeding: the same key draws the same normals for the isotropic and
    # covariance nulls (common random numbers; Σ = I then reproduces the isotropic null).
    return np.random.default_rng([n_a, n_b, d, seed, n_draws])


def _match_draws(sample, n_draws: int, rng, solver: str) -> tuple[list[np.ndarray], str]:
    """n_draws times: (a [n_a, d], b [n_b, d]) = sample(rng), matched; the cosines per draw."""
    from saefast.match import match_decoders

    draws, used = [], None
    for _ in range(n_draws):
        a, b = sample(rng)
        m = match_decoders(a, b, solver=solver)
        draws.append(m.cosines)
        used = m.solver
    return draws, used


def _summary(kind: str, draws: list[np.ndarray], base: dict) -> dict:
    """random_baseline's keys for the pooled cosines, plus quantiles and the spread over draws."""
    pooled = np.concatenate(draws)  # [n_draws * n_per_draw]
    s = matched_statistics(pooled)
    out = {**base, "n_per_draw": int(draws[0].size), "median_cosine": s["median"],
           "mean_cosine": s["mean"], "max_cosine": s["max"],
           "fraction_above": s["fraction_above"], "cosines": pooled.tolist()}
    return _add_spread(kind, out, pooled, np.array([np.median(c) for c in draws]))


def _add_spread(kind: str, out: dict, pooled: np.ndarray, per_draw: np.ndarray) -> dict:
    """out + kind, quantiles of the pooled [N] cosines and the spread of per-draw medians."""
    out = {"kind": kind, "skipped": False, "reason": None, **out}
    out["quantiles"] = {f"{q:g}": float(np.quantile(pooled, q)) for q in QUANTILES}
    out["draw_medians"] = per_draw.tolist()
    out["draw_median_spread"] = {
        "min": float(per_draw.min()), "max": float(per_draw.max()),
        "std": float(per_draw.std(ddof=1)) if per_draw.size > 1 else 0.0}
    return out


_NULL_CACHE: dict[tuple, dict] = {}  # (kind, n_a, n_b, d, seed, n_draws, solver[, data key])


def _resolve_draws(n_a, n_b, n_draws) -> int:
    _check_shape_args(n_draws=draws_for(n_a, n_b) if n_draws is None else n_draws)
    return draws_for(n_a, n_b) if n_draws is None else int(n_draws)


# ------------------------------------------------------------------ the three nulls


def isotropic_null(n_a: int, n_b: int, d: int, *, seed: int = 0, n_draws: int | None = None,
                   solver: str = "auto") -> dict:
    """The isotropic null: `stats.random_baseline` (its numbers, its memo) with quantiles and
    the spread over draws added. n_draws None -> draws_for(n_a, n_b)."""
    _check_shape_args(n_a=n_a, n_b=n_b, d=d)
    n_draws = _resolve_draws(n_a, n_b, n_draws)
    key = ("isotropic", int(n_a), int(n_b), int(d), int(seed), n_draws, solver)
    if key not in _NULL_CACHE:
        base = random_baseline(n_a, n_b, d, seed=seed, n_draws=n_draws, solver=solver)
        pooled = np.asarray(base["cosines"], dtype=np.float64)
        per_draw = np.median(pooled.reshape(n_draws, base["n_per_draw"]), axis=1)
        _NULL_CACHE[key] = _add_spread("isotropic", base, pooled, per_draw)
    return _NULL_CACHE[key]


def covariance_factor(cov) -> np.ndarray:
    """F [d, d] with F F^T = Σ / (tr Σ / d), by eigh with negative eigenvalues clipped to 0
    (a rank-deficient or slightly indefinite Σ from rounding works). The scale is irrelevant
    to cosines; dividing by the mean eigenvalue keeps float32 rows in range (Σ = I -> F = I)."""
    c = as_float_array(cov, "covariance").astype(np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ActivationError(f"covariance must be square [d, d], got shape {c.shape}")
    check_finite(c, "covariance")
    scale = np.trace(c) / c.shape[0]
    if not scale > 0:
        raise ActivationError("covariance has no variance (trace <= 0): activations all equal?")
    w, v = np.linalg.eigh((c + c.T) / (2 * scale))  # w [d] ascending, v [d, d] columns
    return v * np.sqrt(np.clip(w, 0.0, None))  # [d, d]: column j = sqrt(w_j) v_j


def covariance_null(cov, n_a: int, n_b: int, *, seed: int = 0, n_draws: int | None = None,
                    solver: str = "auto", key: str | None = None) -> dict:
    """The covariance-shaped null: rows z F^T, z ~ N(0, I), so rows ~ N(0, Σ).

    cov: [d, d] Σ (float64 array) or an ActivationMoments. key: the caller's name for Σ (e.g.
    store key + hook); default a fingerprint of Σ's float64 bytes. Memoised per
    (n_a, n_b, d, seed, n_draws, solver, key). Adds `effective_rank` and `fingerprint`.
    """
    if isinstance(cov, ActivationMoments):
        cov = cov.cov
    c = as_float_array(cov, "covariance").astype(np.float64)
    _check_shape_args(n_a=n_a, n_b=n_b)
    n_draws = _resolve_draws(n_a, n_b, n_draws)
    fp = str(key) if key is not None else fingerprint(c)
    d = int(c.shape[0]) if c.ndim == 2 else 0
    memo = ("covariance", int(n_a), int(n_b), d, int(seed), n_draws, solver, fp)
    if memo in _NULL_CACHE:
        return _NULL_CACHE[memo]
    f = covariance_factor(c)  # [d, d]; also checks c

    def sample(rng):  # the same normals, in the same order, as random_baseline
        a = (rng.standard_normal((n_a, d)) @ f.T).astype(np.float32)  # [n_a, d]
        b = (rng.standard_normal((n_b, d)) @ f.T).astype(np.float32)  # [n_b, d]
        return a, b

    draws, used = _match_draws(sample, n_draws, _rng(n_a, n_b, d, seed, n_draws), solver)
    base = {"n_a": int(n_a), "n_b": int(n_b), "d": d, "seed": int(seed), "n_draws": n_draws,
            "solver": used, "fingerprint": fp, "effective_rank": effective_rank(c)}
    _NULL_CACHE[memo] = _summary("covariance", draws, base)
    return _NULL_CACHE[memo]


def activation_null(pool: TokenPool, n_a: int, n_b: int, *, seed: int = 0,
                    n_draws: int | None = None, solver: str = "auto",
                    key: str | None = None) -> dict:
    """The activation-sampled null: A and B are centred activation vectors of n_a + n_b
    distinct token ids per draw (no id twice, in A, in B or across them).

    With fewer distinct ids than n_a + n_b: {"skipped": True, "reason": "only M distinct
    tokens for F features ...", statistics None}. key: the caller's name for the pool (default
    a fingerprint of acts, ids and mean). Memoised like covariance_null.
    """
    if not isinstance(pool, TokenPool):
        raise ConfigError(f"activation_null: pass a TokenPool, got {type(pool).__name__}")
    _check_shape_args(n_a=n_a, n_b=n_b)
    n_draws = _resolve_draws(n_a, n_b, n_draws)
    d = int(pool.acts.shape[1])
    base = {"n_a": int(n_a), "n_b": int(n_b), "d": d, "seed": int(seed), "n_draws": n_draws,
            "distinct_tokens": pool.n_distinct}
    need = int(n_a) + int(n_b)
    if need > pool.n_distinct:
        reason = (f"skipped: only {pool.n_distinct} distinct tokens for {need} features "
                  f"({n_a} + {n_b}; the two dictionaries need distinct tokens)")
        empty = dict.fromkeys(("solver", "median_cosine", "mean_cosine", "max_cosine",
                               "quantiles", "draw_median_spread"))
        return {"kind": "activations", "skipped": True, "reason": reason, **base, **empty,
                "n_per_draw": 0, "fraction_above": matched_statistics([])["fraction_above"],
                "cosines": [], "draw_medians": []}
    fp = str(key) if key is not None else pool.fingerprint()
    memo = ("activations", int(n_a), int(n_b), d, int(seed), n_draws, solver, fp)
    if memo in _NULL_CACHE:
        return _NULL_CACHE[memo]

    def sample(rng):
        idx = pool.sample_rows(need, rng)  # [n_a + n_b]
        return pool.rows(idx[:n_a]), pool.rows(idx[n_a:])

    draws, used = _match_draws(sample, n_draws, _rng(n_a, n_b, d, seed, n_draws), solver)
    _NULL_CACHE[memo] = _summary("activations", draws,
                                 {**base, "solver": used, "fingerprint": fp})
    return _NULL_CACHE[memo]


def nulls(n_a: int, n_b: int, d: int, *, moments=None, pool: TokenPool | None = None,
          seed: int = 0, n_draws: int | None = None, solver: str = "auto",
          key: str | None = None) -> dict:
    """Every null the inputs allow: {"isotropic": ..., "covariance": ... (with moments or a
    Σ), "activations": ... (with a pool)}. key names the hook's data for the memo."""
    if isinstance(moments, ActivationMoments):
        moments = moments.cov
    for kind, data in (("covariance", moments), ("activations", pool)):
        dk = None if data is None else np.shape(data.acts if kind == "activations" else data)[-1]
        if dk not in (None, d):
            raise ConfigError(f"nulls: the {kind} data has d={dk}, expected d={d}")
    out = {"isotropic": isotropic_null(n_a, n_b, d, seed=seed, n_draws=n_draws, solver=solver)}
    if moments is not None:
        out["covariance"] = covariance_null(moments, n_a, n_b, seed=seed, n_draws=n_draws,
                                            solver=solver, key=key)
    if pool is not None:
        out["activations"] = activation_null(pool, n_a, n_b, seed=seed, n_draws=n_draws,
                                             solver=solver, key=key)
    return out
