"""Inference at the right unit: seed-level intervals, per-feature significance, share beyond chance.

The independent unit is the SEED (the run), not the pair of runs and not the matched feature:
  - S runs give S(S-1)/2 pairs, but each run takes part in S-1 of them, so the pairs share
    whatever is peculiar to a run (its init, its data order, its dead features): 10 pairs of
    5 seeds carry the information of 5 draws, not 10;
  - the matched cosines of one pair come from ONE joint assignment (a feature taken by one
    match cannot be taken by another), so they are dependent, not F independent draws.
Resampling therefore works on runs and reuses the pairwise matchings already computed (never
re-matches): a statistic of the pooled matched cosines is recomputed with each pair weighted
by how often the resample uses it (`PairedRuns`, `Statistic`, `jackknife`, `cluster_bootstrap`).

Per-feature significance (`feature_pvalues`, `significance`) compares each matched cosine of a
pair with the matched cosines of null dictionaries of the same shape (e.g. the `cosines` of
`stats.random_baseline`); the families are the matched features of one pair, and because those
are dependent, Benjamini-Yekutieli is the procedure that controls the FDR (BH is reported
beside it for comparison). `storey_pi0` / `share_beyond_chance` estimate the share of matched
features that recur beyond chance, 1 - pi0, at a fixed lambda (Storey 2002), and as a
`Statistic` it gets its seed-level interval like any other.

Nothing here reads or writes files; a report is assembled in `saefast.report.assemble`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps

from saefast.errors import ConfigError
from saefast.stats import pair_variance

DEFAULT_LEVEL = 0.90  # the level of every interval a report states (defined here only)
LEVEL_TEXT = f"{100 * DEFAULT_LEVEL:g} %"  # "90 %", as the reports' method texts write it
DEFAULT_BOOT = 2000
STOREY_LAMBDA = 0.5  # Storey (2002)'s default; documented in every result that uses it
FDR_ALPHA = 0.05

JACKKNIFE_METHOD = ("delete-one-run jackknife over the pairwise matchings, its pair-level "
                    "variance counted once (U-statistic correction from the pairs' own "
                    "statistics), t(S-1) interval")
BOOTSTRAP_METHOD = ("cluster bootstrap over runs (pair (i, j) weighted c_i * c_j, self-pairs "
                    "dropped), {} interval")
EXPANDED = "expanded percentile (Hesterberg 2015)"


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PairedRuns:
    """Per-pair arrays of S runs: `values[p]` [n_p] belongs to runs `pairs[p]` = (i, j), i < j.

    Usually each pair's matched cosines; `map` turns them into p-values. Pooled once, sorted,
    with each element's pair id, so a resample only changes per-pair weights."""

    n_runs: int
    pairs: tuple[tuple[int, int], ...]
    values: tuple[np.ndarray, ...]
    _sorted: np.ndarray = field(init=False, repr=False, compare=False)  # [M] pooled, ascending
    _pair_of: np.ndarray = field(init=False, repr=False, compare=False)  # [M] pair id of each

    def __post_init__(self):
        if int(self.n_runs) != self.n_runs or self.n_runs < 2:
            raise ConfigError(f"PairedRuns: need at least 2 runs, got {self.n_runs!r}")
        if len(self.pairs) != len(self.values) or not self.pairs:
            raise ConfigError("PairedRuns: need one value array per pair, and at least one pair")
        seen = set()
        for i, j in self.pairs:
            if not (0 <= i < j < self.n_runs) or (i, j) in seen:
                raise ConfigError(f"PairedRuns: pair {(i, j)} is not a new (i, j) with "
                                  f"0 <= i < j < {self.n_runs}")
            seen.add((i, j))
        vals = [np.asarray(v, dtype=np.float64).ravel() for v in self.values]
        pooled = np.concatenate(vals)
        pair_of = np.repeat(np.arange(len(vals)), [v.size for v in vals])
        order = np.argsort(pooled, kind="stable")
        object.__setattr__(self, "values", tuple(vals))
        object.__setattr__(self, "_sorted", pooled[order])
        object.__setattr__(self, "_pair_of", pair_of[order])

    @classmethod
    def from_dict(cls, n_runs: int, by_pair: Mapping[tuple[int, int], np.ndarray]) -> "PairedRuns":
        """From {(i, j): values}; (j, i) is read as (i, j)."""
        items = sorted(((min(k), max(k)), v) for k, v in by_pair.items())
        return cls(int(n_runs), tuple(k for k, _ in items), tuple(v for _, v in items))

    @classmethod
    def from_report(cls, report: dict, key: str = "all_cosines") -> "PairedRuns":
        """From a stability report (or its live-only part): pairs' index_a/index_b and `key`."""
        n_runs = len(report["summary"]["runs"])
        return cls.from_dict(n_runs, {(p["index_a"], p["index_b"]): p[key]
                                      for p in report["pairs"]})

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> "PairedRuns":
        """The same pairs with fn applied to each pair's array (e.g. cosines -> p-values)."""
        return PairedRuns(self.n_runs, self.pairs, tuple(fn(v) for v in self.values))

    def pair_values(self, stat: "Statistic") -> np.ndarray:
        """[P] each pair's first-order value of stat (`Statistic.pair_values`)."""
        P = len(self.pairs)
        if stat.pair_values is not None:
            return np.asarray(stat.pair_values(self._sorted, self._pair_of, P), float)
        return np.array([stat.fn(np.sort(v), np.ones(v.size)) if v.size else np.nan
                         for v in self.values])

    def element_weights(self, pair_weights: np.ndarray) -> np.ndarray:
        """[M] weight of each pooled (sorted) element from the [P] weights of the pairs."""
        return np.asarray(pair_weights)[self._pair_of]

    def evaluate(self, stat: "Statistic", pair_weights: np.ndarray | None = None) -> float:
        """stat of the pooled values, pair p counted pair_weights[p] times (default once)."""
        w = np.ones(len(self.pairs)) if pair_weights is None else np.asarray(pair_weights)
        elements = self.element_weights(w)
        if not np.any(elements > 0):  # no pair left, or only pairs without values
            return float("nan")
        return float(stat.fn(self._sorted, elements))


# ---------------------------------------------------------------------------- statistics


class Statistic(NamedTuple):
    """A statistic of a pooled set: fn(values [M] ascending, weights [M] >= 0) -> float.

    pair_values(pooled [M] ascending, pair id of each [M], P) -> [P]: each pair's first-order
    value, whose spread around an additive run + run fit is the pair term the jackknife's
    variance drops (`stats.pair_variance`); None: fn of each pair's values alone (exact for
    means and fractions, like the vectorised ones below)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    pair_values: Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None = None


def _weighted_median(v: np.ndarray, w: np.ndarray) -> float:
    # integer weights: exactly np.median of the multiset with v[k] repeated w[k] times
    cw = np.cumsum(w)
    total = cw[-1]
    lo = np.searchsorted(cw, (total - 1) // 2, side="right")
    hi = np.searchsorted(cw, total // 2, side="right")
    return 0.5 * (v[lo] + v[hi])


def median() -> Statistic:
    """Global (pooled) median: every matched feature pair weighs the same."""
    return Statistic("global_median", _weighted_median, pair_variance.median_pair_values)


def _weighted_mean(v: np.ndarray, w: np.ndarray) -> float:
    # not np.dot: a 1-D BLAS call wakes OpenBLAS's threads, ~1000x slower on a busy machine
    return float(np.sum(v * w) / w.sum())


def mean() -> Statistic:
    return Statistic("global_mean", _weighted_mean, pair_variance.pair_means)


PW_MCC_ABOUT = ("PW-MCC (the pairwise mean-max cosine of Paulo & Belrose 2025; with a "
                "one-to-one matching, the mean matched cosine): the mean of the matched "
                "cosines pooled over every pair, each pair matched one-to-one over min(n_a, "
                "n_b) features (with one pair shape, the mean of the pairs' PW-MCC)")


def pw_mcc() -> Statistic:
    """PW-MCC pooled over pairs (`PW_MCC_ABOUT`): the pooled mean under its own name."""
    return Statistic("pw_mcc", _weighted_mean, pair_variance.pair_means)


def excess_pw_mcc(null_mean: float) -> Statistic:
    """Pooled PW-MCC minus the null's (the mean of its matched cosines), taken as known like
    `excess_median`'s null median."""
    m0 = float(null_mean)
    return Statistic("excess_pw_mcc", lambda v, w: _weighted_mean(v, w) - m0,
                     lambda v, of, P: pair_variance.pair_means(v, of, P) - m0)


def fraction_at_least(t: float) -> Statistic:
    """Pooled fraction of values >= t (the report's fraction_above)."""
    t = float(t)
    return Statistic(f"fraction_above_{t:g}",
                     lambda v, w: float(w[np.searchsorted(v, t, side="left"):].sum() / w.sum()),
                     lambda v, of, P: pair_variance.pair_fractions(v >= t, of, P))


def excess_median(null_median: float) -> Statistic:
    """Pooled median minus the null's median. The null median is taken as known: it comes
    from many draws (stats.random_baseline), its own error is far below the seed-level one."""
    m0 = float(null_median)
    return Statistic("excess_median", lambda v, w: _weighted_median(v, w) - m0,
                     lambda v, of, P: pair_variance.median_pair_values(v, of, P) - m0)


def share_beyond_chance(lam: float = STOREY_LAMBDA) -> Statistic:
    """1 - Storey's pi0 of pooled P-VALUES (use on `PairedRuns.map(...)` of p-values)."""
    lam = _check_lambda(lam)

    def fn(p, w):
        above = w[np.searchsorted(p, lam, side="right"):].sum()  # weight of p > lambda
        return 1.0 - min(1.0, above / ((1.0 - lam) * w.sum()))

    def per_pair(p, of, P):
        return 1.0 - np.minimum(1.0, pair_variance.pair_fractions(p > lam, of, P) / (1.0 - lam))
    return Statistic(f"share_beyond_chance_storey_lambda_{lam:g}", fn, per_pair)


# ---------------------------------------------------------------------------- seed-level intervals


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    return float(level)


def jackknife(data: PairedRuns, stat: Statistic, *, level: float = DEFAULT_LEVEL) -> dict:
    """Delete-one-run jackknife: theta_(r) from the pairs not involving run r, for each r.

    v_J = (S-1)/S * sum_r (theta_(r) - mean)^2 counts the pairs' own variance 2(S-1)/(S-2)
    times (a pooled statistic of pairs is a U-statistic of order 2 in the runs), so its
    interval covered 0.98-0.99 for a nominal 0.90 where only pairs differ
    (tests/test_coverage.py). The variance used is v_J with that term counted once,
    estimated from each pair's first-order value (`stats.pair_variance`: never above v_J; v_J
    itself below 4 runs); interval estimate +- t_{S-1} * SE, the run being the unit.
    `se_jackknife` is the plain sqrt(v_J). Each deletion removes a whole run (S-1 pairs, many
    features), so even the median behaves as a smooth functional here (the delete-one
    jackknife of a median of single iid observations is inconsistent; that is not this
    case). Needs S >= 3 (at S = 2 nothing is left)."""
    level = _check_level(level)
    S = data.n_runs
    if S < 3:
        raise ConfigError(f"jackknife: needs at least 3 runs, got {S}")
    pairs = np.asarray(data.pairs)  # [P, 2]
    keep = [((pairs[:, 0] != r) & (pairs[:, 1] != r)).astype(float) for r in range(S)]
    reps = np.array([data.evaluate(stat, w) for w in keep])  # [S]; NaN: no pair left
    est = data.evaluate(stat)
    plain = jackknife_interval(reps, est, S, level)
    fix = {"variance": float("nan"), "pair_variance": None, "pair_df": 0}
    if np.all(np.isfinite(reps)):
        fix = pair_variance.corrected_variance(
            plain["se"] ** 2, data.pairs, [v.size for v in data.values],
            data.pair_values(stat), S)
    se = float(np.sqrt(fix["variance"])) if np.isfinite(fix["variance"]) else plain["se"]
    q = t_quantile(level, S - 1)
    return {"statistic": stat.name, "method": JACKKNIFE_METHOD, "estimate": est,
            "se": se, "ci": [est - q * se, est + q * se], "bias": plain["bias"],
            "se_jackknife": plain["se"], "pair_variance": fix["pair_variance"],
            "pair_df": fix["pair_df"], "level": level, "n_runs": S, "df": S - 1,
            "replicates": reps.tolist()}


def fraction_interval(interval: dict | None) -> dict | None:
    """A fraction's interval kept within [0, 1] (the jackknife's t interval is not)."""
    if interval and interval.get("ci"):
        interval["ci"] = [float(np.clip(c, 0.0, 1.0)) for c in interval["ci"]]
    return interval


def run_interval(data: PairedRuns, stat: Statistic, *, level: float = DEFAULT_LEVEL,
                 about: str | None = None) -> dict:
    """What a report states for a statistic of paired runs: {estimate, ci, se, level,
    method}, the delete-one-run jackknife from 3 runs on; below that the estimate alone.
    about: what the statistic is, put before the interval's method ("about; method")."""
    if data.n_runs < 3:
        out = {"estimate": data.evaluate(stat), "ci": None, "se": None, "level": level,
               "method": "none: fewer than 3 runs"}
    else:
        jk = jackknife(data, stat, level=level)
        out = {k: jk[k] for k in ("estimate", "ci", "se", "level", "method")}
    if about:
        out["method"] = f"{about}; interval: {out['method']}"
    return out


@lru_cache(maxsize=128)
def t_quantile(level: float, df: int) -> float:
    """The two-sided `level` quantile of Student's t with df degrees of freedom."""
    return float(sps.t.ppf(0.5 + level / 2, df=df))


def jackknife_interval(reps: np.ndarray, estimate: float, S: int, level: float) -> dict:
    """{se, ci, bias} from delete-one-run replicates [S] (finite ones; NaN where nothing was
    left): SE = sqrt((n-1)/n sum (theta_(r) - mean)^2), ci = estimate +- t_{S-1} SE."""
    ok = np.asarray(reps, dtype=np.float64)
    ok = ok[np.isfinite(ok)]
    if ok.size < 2:
        nan = float("nan")
        return {"se": nan, "ci": [nan, nan], "bias": nan}
    se = float(np.sqrt((ok.size - 1) / ok.size * np.sum((ok - ok.mean()) ** 2)))
    q = t_quantile(level, S - 1)
    return {"se": se, "ci": [estimate - q * se, estimate + q * se],
            "bias": float((ok.size - 1) * (ok.mean() - estimate))}


# scipy.stats.bootstrap is not used: it resamples the observations of each sample (or
# same-index observations across samples) independently, while a matched cosine belongs to
# TWO runs at once. It can be forced by resampling run indices with a custom statistic, but a
# resample holding one distinct run has no pair left (probability S^(1-S), 1/625 at S = 5)
# and gives NaN, which scipy does not drop; here such draws are redrawn and counted.
def _bootstrap_weights(rng: np.random.Generator, pairs: np.ndarray, S: int) -> np.ndarray:
    """[P] weights of one resample of S runs with replacement: c_i * c_j position pairs
    (a < b) map to runs {i, j}; position pairs holding the same run twice are dropped."""
    c = np.bincount(rng.integers(0, S, size=S), minlength=S)  # [S] copies of each run
    return (c[pairs[:, 0]] * c[pairs[:, 1]]).astype(float)


def _expanded_level(level: float, S: int) -> float:
    """The level whose normal quantile is t_{S-1}(level) * sqrt(S / (S-1))."""
    z = sps.t.ppf(0.5 + level / 2, df=S - 1) * np.sqrt(S / (S - 1))
    return float(2 * sps.norm.cdf(z) - 1)


def cluster_bootstrap(data: PairedRuns, stat: Statistic, *, level: float = DEFAULT_LEVEL,
                      n_boot: int = DEFAULT_BOOT, seed: int = 0, expand: bool = True) -> dict:
    """Cluster bootstrap over runs: draw S runs with replacement, reuse their pairs' values
    (pair (i, j) weighted by the number of copies c_i * c_j; a run is never paired with its
    own copy), percentile interval. Seeded: same data + seed -> same interval.

    The plain percentile interval is too narrow with few clusters (its spread is the plug-in
    one, sqrt((S-1)/S) of the usual SE, and its tails are normal, not t(S-1)): it covered
    ~0.84 at S = 10 and ~0.78 at S = 5 for a nominal 0.90 (tests/test_inference.py). So the
    percentiles are taken at the expanded level whose normal quantile equals
    t_{S-1} * sqrt(S / (S - 1)) (Hesterberg 2015, "expanded percentile"); `expand=False`
    gives the plain one. `ci_level_used` is the level the percentiles were taken at."""
    level = _check_level(level)
    if int(n_boot) != n_boot or n_boot < 10:
        raise ConfigError(f"cluster_bootstrap: n_boot must be an integer >= 10, got {n_boot!r}")
    S = data.n_runs
    pairs = np.asarray(data.pairs)  # [P, 2]
    rng = np.random.default_rng([int(seed), S, len(data.pairs)])
    reps, redrawn = np.empty(int(n_boot)), 0
    for b in range(int(n_boot)):
        w = _bootstrap_weights(rng, pairs, S)
        while not np.any(w > 0):  # one distinct run (or only missing pairs): no pair to use
            redrawn += 1
            w = _bootstrap_weights(rng, pairs, S)
        reps[b] = data.evaluate(stat, w)
    used = _expanded_level(level, S) if expand else level
    lo, hi = np.quantile(reps, [0.5 - used / 2, 0.5 + used / 2])
    method = BOOTSTRAP_METHOD.format(EXPANDED if expand else "percentile")
    return {"statistic": stat.name, "method": method, "estimate": data.evaluate(stat),
            "se": float(np.std(reps, ddof=1)), "ci": [float(lo), float(hi)], "level": level,
            "ci_level_used": used,
            "n_runs": S, "n_boot": int(n_boot), "seed": int(seed), "redrawn": redrawn}


def seed_intervals(data: PairedRuns, statistics: Sequence[Statistic], *,
                   level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT, seed: int = 0) -> dict:
    """{stat name: {"jackknife": ..., "bootstrap": ...}} for several statistics of one data."""
    return {s.name: {"jackknife": jackknife(data, s, level=level),
                     "bootstrap": cluster_bootstrap(data, s, level=level, n_boot=n_boot,
                                                    seed=seed)}
            for s in statistics}


# ---------------------------------------------------------------------------- significance


def feature_pvalues(cosines, null_cosines) -> np.ndarray:
    """Empirical p of each cosine c: (1 + #{null >= c}) / (N + 1).

    cosines [n]; null_cosines [N]: matched cosines of null dictionaries of the SAME shape
    (all draws pooled). Valid (P(p <= a) <= a under the null) when c and the null are
    exchangeable; the smallest possible p is 1 / (N + 1)."""
    null = np.sort(np.asarray(null_cosines, dtype=np.float64).ravel())  # [N]
    if null.size == 0:
        raise ConfigError("feature_pvalues: the null has no cosines")
    c = np.asarray(cosines, dtype=np.float64)
    n_ge = null.size - np.searchsorted(null, c, side="left")  # [n] #{null >= c}
    return (1.0 + n_ge) / (null.size + 1.0)


def _check_lambda(lam: float) -> float:
    if not 0.0 < float(lam) < 1.0:
        raise ConfigError(f"Storey's lambda must be in (0, 1), got {lam!r}")
    return float(lam)


def storey_pi0(pvalues, lam: float = STOREY_LAMBDA) -> float:
    """Storey's estimate of the share of true nulls: #{p > lambda} / ((1 - lambda) m), at most 1.
    Conservative (biased up) when the null p-values are super-uniform or some non-null p-values
    exceed lambda; 1 - pi0 is then a lower estimate of the share beyond chance."""
    lam = _check_lambda(lam)
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if p.size == 0:
        raise ConfigError("storey_pi0: no p-values")
    return float(min(1.0, np.count_nonzero(p > lam) / ((1.0 - lam) * p.size)))


def min_null_size(m: int, alpha: float = FDR_ALPHA, method: str = "by") -> int:
    """Smallest null size N for which ONE feature of a family of m can be significant: the
    smallest p, 1/(N+1), must reach BH's first threshold alpha/m (BY: alpha/(m H_m))."""
    c = float(np.sum(1.0 / np.arange(1, m + 1))) if method == "by" else 1.0
    return int(np.ceil(m * c / alpha)) - 1


def significance(cosines, null_cosines, *, alpha: float = FDR_ALPHA,
                 lam: float = STOREY_LAMBDA) -> dict:
    """Per-feature significance of ONE pair's matched cosines [n] against the null [N].

    The family is the pair's matched features. They come from one joint assignment and are
    dependent (in no proven positive-regression way), so `by` (Benjamini-Yekutieli, FDR <=
    alpha under any dependence) is the list to use; `bh` (Benjamini-Hochberg) is beside it for
    comparison. Masks are ordered like `cosines` (the report's a_indices / b_indices)."""
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    p = feature_pvalues(cosines, null_cosines)  # [n]
    n_null = int(np.asarray(null_cosines).size)
    by = sps.false_discovery_control(p, method="by") <= alpha
    bh = sps.false_discovery_control(p, method="bh") <= alpha
    pi0 = storey_pi0(p, lam)
    return {"pvalues": p, "by": by, "bh": bh, "n_by": int(by.sum()), "n_bh": int(bh.sum()),
            "alpha": float(alpha), "n_null": n_null,
            "null_large_enough": n_null >= min_null_size(p.size, alpha, "by"),
            "pi0": pi0, "share_beyond_chance": 1.0 - pi0, "storey_lambda": float(lam),
            "method": (f"empirical p = (1 + #null >= c) / (N + 1); FDR {alpha:g} per pair by "
                       f"Benjamini-Yekutieli (dependent matched cosines), BH for comparison; "
                       f"Storey pi0 at lambda = {lam:g}")}


def share_intervals(cosine_pairs: PairedRuns, null_cosines, *, lam: float = STOREY_LAMBDA,
                    level: float = DEFAULT_LEVEL, n_boot: int = DEFAULT_BOOT,
                    seed: int = 0) -> dict:
    """Share beyond chance (1 - Storey pi0, pooled over all pairs) with its seed-level
    jackknife and cluster-bootstrap intervals. Every pair must have the null's shape."""
    null = np.sort(np.asarray(null_cosines, dtype=np.float64).ravel())
    pvals = cosine_pairs.map(lambda c: feature_pvalues(c, null))
    s = share_beyond_chance(lam)
    return {"estimate": pvals.evaluate(s), "storey_lambda": float(lam),
            "jackknife": jackknife(pvals, s, level=level),
            "bootstrap": cluster_bootstrap(pvals, s, level=level, n_boot=n_boot, seed=seed)}
