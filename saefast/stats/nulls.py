"""Data-shaped nulls for matched decoder cosines, and the activation moments they need.

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

import hashlib
import math

import numpy as np

from saefast.errors import ActivationError, ConfigError
from saefast.stats.matched import matched_statistics, random_baseline

QUANTILES = (0.95, 0.99, 0.999)
MIN_POOLED_COSINES = 10_000  # draws_for: pooled matched cosines per null (see module doc)
MIN_DRAWS = 2  # at least two independent draws, so the spread over draws exists
_CHUNK_ROWS = 1 << 16  # ActivationMoments: rows per float64 block (bounds the copy's memory)
MOMENTS_FORMAT = "saefast.activation_moments/1"


# ------------------------------------------------------------------ helpers


def _as_float_array(x, name: str) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (no copy when already numpy)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ActivationError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def _check_finite(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        raise ActivationError(f"{name} contains NaN or infinite values")


def fingerprint(*arrays) -> str:
    """Short SHA-256 hex of arrays' shapes, dtypes and bytes: the memo key of a Σ or a pool."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:20]


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


# ------------------------------------------------------------------ moments


class ActivationMoments:
    """Streaming mean and centred covariance of activation vectors, in float64.

    Fed batch by batch (`update(x)`, x [n, d] float32/float64, torch or numpy). Each block's
    own mean and centred scatter are merged with Chan et al.'s pairwise formula, so no
    cancellation from a large mean (a raw sum of outer products loses digits when |mean| >>
    std). `cov` is [d, d], centred and unbiased (n - 1), like `np.cov(x, rowvar=False)`.
    """

    def __init__(self, d: int | None = None):
        self.n = 0
        self.d = d
        self._mean: np.ndarray | None = None  # [d] float64
        self._m2: np.ndarray | None = None  # [d, d] float64: sum of centred outer products

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if n_b == 0:
            return
        if self.n == 0:
            self.n, self._mean, self._m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n = self.n + n_b
        delta = mean_b - self._mean  # [d]
        self._m2 += m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self._mean += delta * (n_b / n)
        self.n = n

    def update(self, x) -> "ActivationMoments":
        """Add a batch of activation vectors [n, d]; returns self."""
        x = _as_float_array(x, "activations")
        if x.ndim != 2:
            raise ActivationError(f"activations must be 2-D [n, d], got shape {x.shape}")
        if self.d is None:
            self.d = int(x.shape[1])
        if x.shape[1] != self.d:
            raise ActivationError(f"activations have d={x.shape[1]}, the moments d={self.d}")
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            block = x[start:start + _CHUNK_ROWS].astype(np.float64)  # [b, d]
            _check_finite(block, "activations")
            mean_b = block.mean(axis=0)
            block -= mean_b
            self._combine(block.shape[0], mean_b, block.T @ block)
        return self

    def merge(self, other: "ActivationMoments") -> "ActivationMoments":
        """Add another accumulator's data (e.g. another shard or worker); returns self."""
        if not isinstance(other, ActivationMoments):
            raise ConfigError(f"merge: expected ActivationMoments, got {type(other).__name__}")
        if other.n == 0:
            return self
        if self.d is not None and other.d != self.d:
            raise ActivationError(f"merge: d={other.d} into moments of d={self.d}")
        self.d = other.d
        self._combine(other.n, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        """[d] float64 mean of everything seen."""
        if self.n == 0:
            raise ActivationError("ActivationMoments: no activations seen yet")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """[d, d] float64 centred, unbiased covariance (needs n >= 2)."""
        if self.n < 2:
            raise ActivationError("ActivationMoments: covariance needs >= 2 vectors, "
                                  f"have {self.n}")
        m2 = self._m2 / (self.n - 1)
        return (m2 + m2.T) / 2  # exactly symmetric (the GEMM need not be)

    def fingerprint(self) -> str:
        """Short hash of n, mean and scatter (a memo key for the covariance null)."""
        return fingerprint(np.array([self.n]), self._mean, self._m2)

    def to_dict(self, arrays: bool = False) -> dict:
        """{"format", "n", "d", "mean" [d], "m2" [d, d]}: lists (JSON; Python floats
        round-trip float64 exactly) or, with arrays=True, numpy arrays the caller saves."""
        conv = (lambda a: a.copy()) if arrays else (lambda a: a.tolist())
        empty = self.n == 0
        return {"format": MOMENTS_FORMAT, "n": int(self.n), "d": self.d,
                "mean": None if empty else conv(self._mean),
                "m2": None if empty else conv(self._m2)}

    @classmethod
    def from_dict(cls, data: dict) -> "ActivationMoments":
        """Inverse of to_dict (lists or arrays)."""
        if not isinstance(data, dict) or data.get("format") != MOMENTS_FORMAT:
            raise ConfigError(f"not an activation-moments record (format {MOMENTS_FORMAT!r})")
        out = cls(data.get("d"))
        n = data.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"activation moments: bad n {n!r}")
        if n == 0:
            return out
        mean = np.asarray(data["mean"], dtype=np.float64)
        m2 = np.asarray(data["m2"], dtype=np.float64)
        d = mean.shape[0] if mean.ndim == 1 else -1
        if d < 1 or m2.shape != (d, d) or (out.d is not None and out.d != d):
            raise ConfigError(f"activation moments: mean {mean.shape} and m2 {m2.shape} "
                              f"do not fit d={out.d}")
        out.n, out.d, out._mean, out._m2 = n, d, mean, m2
        return out


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
    c = _as_float_array(cov, "covariance").astype(np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
        raise ActivationError(f"covariance must be square [d, d], got shape {c.shape}")
    _check_finite(c, "covariance")
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
    c = _as_float_array(cov, "covariance").astype(np.float64)
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


class TokenPool:
    """Activations grouped by token id, one group per distinct id: what the activation null
    samples from. acts [N, d], token_ids [N] (any 1-D array np.unique can sort: ids, or a
    dedup key). `mean`: subtracted from every row; default the mean of acts (pass the
    training mean, e.g. ActivationMoments.mean, when acts is a subsample)."""

    def __init__(self, acts, token_ids, mean=None):
        x = _as_float_array(acts, "activations")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ActivationError(f"activations must be 2-D [N, d] with N >= 1, got {x.shape}")
        ids = np.asarray(token_ids.detach().cpu() if hasattr(token_ids, "detach") else token_ids)
        if ids.shape != (x.shape[0],):
            raise ActivationError(f"token_ids must be [N] = [{x.shape[0]}], got {ids.shape}")
        _check_finite(x, "activations")
        self.acts = x  # [N, d]
        self.mean = (x.mean(axis=0, dtype=np.float64) if mean is None
                     else np.asarray(mean, dtype=np.float64))  # [d]
        if self.mean.shape != (x.shape[1],):
            raise ActivationError(f"mean must be [d] = [{x.shape[1]}], got {self.mean.shape}")
        _, codes, counts = np.unique(ids, return_inverse=True, return_counts=True)
        self.codes = codes.reshape(-1).astype(np.int64)  # [N]: distinct id -> 0..M-1
        self.order = np.argsort(self.codes, kind="stable")  # [N]: rows grouped by id
        self.counts = counts.astype(np.int64)  # [M]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])  # [M]
        self.n_distinct = int(self.counts.size)

    def fingerprint(self) -> str:
        return fingerprint(self.acts, self.codes, self.mean)

    def sample_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """[n] row indices of n distinct token ids (ids without replacement, then one random
        vector of each id). Raises ConfigError if n > n_distinct."""
        if n > self.n_distinct:
            raise ConfigError(f"only {self.n_distinct} distinct tokens for {n} features")
        groups = rng.choice(self.n_distinct, size=n, replace=False)  # [n] distinct ids
        offsets = (rng.random(n) * self.counts[groups]).astype(np.int64)  # [n] in [0, count)
        return self.order[self.starts[groups] + offsets]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """[len(idx), d] float32 centred rows."""
        return (self.acts[idx].astype(np.float64) - self.mean).astype(np.float32)


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
