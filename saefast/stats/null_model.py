"""The one place a null plugs into a report's per-feature evidence (`saefast.stats.evidence`).

A `NullModel` answers two questions for dictionaries of the report's d that share nothing:

- `matched(n_a, n_b, n_min)`: pooled matched cosines (one-to-one, maximum total cosine,
  matched like real dictionaries) of null dictionaries of exactly that shape, at least n_min
  of them (fewer only when `MAX_NULL_DRAWS` caps the draws; the evidence says so). Per-feature
  p-values, the one-to-one count's null and the beyond-chance seed-count curve use these;
- `sample(sizes, rng)`: one set of null dictionaries [n_i, d] float32 drawn together (an
  activation-sampled null must draw distinct tokens across all of them), for the statistics
  that need the dictionaries themselves: nearest-neighbour and maximum-cardinality nulls,
  within-SAE redundancy, the null seed-count curve.

The nulls (`saefast.stats.nulls` computes their matched cosines, memoised per shape and data):
- `isotropic_null_model(d)`: Gaussian rows (= the init: "two untrained SAEs"), the matched
  cosines of `stats.matched.random_baseline`;
- `covariance_null_model(cov, key)`: rows ~ N(0, Σ) (also the dictionary-covariance null's,
  `saefast.stats.dictionary_null`, with Σ from the decoders and its own name);
- `activation_null_model(pool, key)`: centred activation vectors of distinct token ids. Its
  `capacity` is the pool's number of distinct ids: a statistic whose dictionaries need more
  rows than that is skipped with the reason (`NullModel.short_of`), never drawn with repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from saefast.data.moments import ActivationMoments
from saefast.errors import ConfigError
from saefast.stats.matched import random_baseline

MAX_NULL_DRAWS = 400  # matched-null draws per shape at most
# draws x n_a x n_b at most: the matchings' cost bound. 1024 x 1024 still gets the 150 draws
# BY needs; 4096 x 4096 gets 16 (null_large_enough is then false: BY lists are underpowered)
NULL_WORK = 1 << 28
COVARIANCE_DESCRIPTION = "Gaussian rows with the training activations' covariance"


@dataclass(frozen=True)
class NullModel:
    """name: e.g. "isotropic"; d: the dimension of every dictionary; key: hashable, names
    the distribution (e.g. with a fingerprint of Σ or of the store), so evidence memoises
    per null and shape; description: one line for the report; sample(sizes, rng) -> [float32
    [n_i, d]]; matched(n_a, n_b, n_min) -> pooled matched cosines [N] (read-only)."""

    name: str
    d: int
    key: tuple
    description: str
    sample: Callable[[Sequence[int], np.random.Generator], list[np.ndarray]]
    matched: Callable[[int, int, int], np.ndarray]
    capacity: int | None = None  # rows one sample() call can draw in all (None: unbounded)

    def short_of(self, sizes: Sequence[int]) -> str | None:
        """Why dictionaries of these sizes cannot be drawn together, or None when they can."""
        need = int(sum(int(n) for n in sizes))
        if self.capacity is None or need <= self.capacity:
            return None
        return (f"the {self.name} null has {self.capacity} distinct tokens, {need} features "
                f"({' + '.join(str(int(n)) for n in sizes)}) need distinct tokens")

    def short_of_pairs(self, shapes: Sequence[Sequence[int]]) -> str | None:
        """`short_of` of the first pair shape (n_a, n_b) the null cannot draw, or None."""
        return next((why for why in (self.short_of(ab) for ab in shapes) if why), None)


def null_draws(n_a: int, n_b: int, n_min: int) -> int:
    """Draws of an n_a x n_b matching (min(n_a, n_b) cosines each) that pool >= n_min cosines,
    at most MAX_NULL_DRAWS and NULL_WORK / (n_a n_b), at least 2, or 1 where one draw alone
    pools the summary's MIN_POOLED_COSINES (from 10,000 features: each draw is a matching of
    seconds, and the pool BY would need is out of reach anyway)."""
    from saefast.stats.nulls import MIN_POOLED_COSINES

    per = min(int(n_a), int(n_b))
    if per < 1:
        raise ConfigError(f"null_draws: empty shape {n_a} x {n_b}")
    cap = min(MAX_NULL_DRAWS, NULL_WORK // (int(n_a) * int(n_b)))
    floor = 1 if per >= MIN_POOLED_COSINES else 2
    return int(max(floor, min(cap, math.ceil(int(n_min) / per))))


# Null draws at the runs' own sizes up to SIZE_EXACT_MAX features; above, at sizes rounded to
# a geometric grid of ratio SIZE_GRID (4.4 %): live-only pairs each have their own shape, and
# at 20 seeds x 16K features drawing every one was hours. A matched or nearest null cosine
# moves with log n: 4.4 % in n shifts it by ~0.0003 at 4,096 features in d = 384, well
# inside any interval a report states.
SIZE_EXACT_MAX = 1024
SIZE_GRID = 2.0 ** (1 / 16)


def null_size(n: int) -> int:
    """The dictionary size a null is drawn at for n features (`SIZE_GRID`)."""
    n = int(n)
    if n <= SIZE_EXACT_MAX:
        return n
    return int(round(SIZE_GRID ** round(math.log(n) / math.log(SIZE_GRID))))


def report_null_size(n_a: int, n_b: int) -> int:
    """Matched null cosines a report pools for the shape: enough for BY's first threshold at
    min(n_a, n_b) features (per-feature p-values) and for the summary's 99.9 % quantile
    (`nulls.MIN_POOLED_COSINES`). The report's summary nulls and baseline (`null_summary`)
    and its p-values (`evidence`) all ask for this many, so they share one set of draws."""
    from saefast.stats.inference import FDR_ALPHA, min_null_size
    from saefast.stats.nulls import MIN_POOLED_COSINES

    return max(min_null_size(min(int(n_a), int(n_b)), FDR_ALPHA, "by"), MIN_POOLED_COSINES)


def report_null_draws(n_a: int, n_b: int) -> int:
    """Draws of the nulls a report states for dictionaries of n_a x n_b (`report_null_size`
    matched cosines pooled, within the draw caps)."""
    return null_draws(n_a, n_b, report_null_size(n_a, n_b))


def isotropic_null_model(d: int, *, solver: str = "auto") -> NullModel:
    """Gaussian rows in d dimensions: the init's distribution, so "two untrained SAEs"."""
    d = int(d)

    def sample(sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.standard_normal((int(n), d)).astype(np.float32) for n in sizes]

    def matched(n_a: int, n_b: int, n_min: int) -> np.ndarray:
        base = random_baseline(n_a, n_b, d, n_draws=null_draws(n_a, n_b, n_min), solver=solver)
        return _frozen(base["cosines"])

    return NullModel("isotropic", d, ("isotropic", d, solver),
                     "isotropic Gaussian rows (the init: two untrained SAEs)", sample, matched)


def _frozen(cosines) -> np.ndarray:
    out = np.asarray(cosines, dtype=np.float64)
    out.setflags(write=False)
    return out


def covariance_null_model(cov, key: str, *, solver: str = "auto", name: str = "covariance",
                          description: str = COVARIANCE_DESCRIPTION) -> NullModel:
    """Rows ~ N(0, Σ), Σ [d, d] (or an ActivationMoments): dictionaries in the activations'
    high-variance subspace that share nothing. key names Σ (e.g. store and rows). name and
    description: another null drawn the same way from another Σ (`dictionary_null`)."""
    from saefast.stats import nulls as _nulls

    if isinstance(cov, ActivationMoments):
        cov = cov.cov
    f = _nulls.covariance_factor(cov)  # [d, d], F F^T = Σ / scale; checks Σ
    d = int(f.shape[0])

    def sample(sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
        return [(rng.standard_normal((int(n), d)) @ f.T).astype(np.float32) for n in sizes]

    def matched(n_a: int, n_b: int, n_min: int) -> np.ndarray:
        got = _nulls.covariance_null(cov, n_a, n_b, n_draws=null_draws(n_a, n_b, n_min),
                                     solver=solver, key=key)
        return _frozen(got["cosines"])

    return NullModel(name, d, (name, d, solver, str(key)), description, sample, matched)


def activation_null_model(pool, key: str, *, solver: str = "auto") -> NullModel:
    """Rows are centred activation vectors of distinct token ids (`nulls.TokenPool`), no id
    twice within one sample() call; capacity = the pool's distinct ids."""
    from saefast.stats import nulls as _nulls

    d = int(pool.acts.shape[1])

    def sample(sizes: Sequence[int], rng: np.random.Generator) -> list[np.ndarray]:
        idx = pool.sample_rows(int(sum(int(n) for n in sizes)), rng)  # distinct ids
        cuts = np.cumsum([0, *[int(n) for n in sizes]])
        return [pool.rows(idx[s:e]) for s, e in zip(cuts[:-1], cuts[1:])]

    def matched(n_a: int, n_b: int, n_min: int) -> np.ndarray:
        got = _nulls.activation_null(pool, n_a, n_b, n_draws=null_draws(n_a, n_b, n_min),
                                     solver=solver, key=key)
        if got["skipped"]:
            raise ConfigError(got["reason"])  # callers check short_of first
        return _frozen(got["cosines"])

    return NullModel("activations", d, ("activations", d, solver, str(key)),
                     "centred activation vectors of distinct tokens", sample, matched,
                     capacity=pool.n_distinct)
