"""Statistics of matched cosines, and the random-matching baseline (null).

Random unit dictionaries matched one-to-one by maximum total cosine are far from 0 (128 x 128
features in 768-d: median ~0.087, in 384-d ~0.122, measured on this machine), so a
matched-cosine distribution only means something next to the null for the same shapes. One
null per (n_a, n_b, d, seed, n_draws), computed once per process and reused across pairs.

Intervals over seeds, p-values and the seed-count curve are `inference.py` and
`recurrence.py`; the data-shaped nulls `nulls.py`.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from saefast.errors import ConfigError
from saefast.match.parallel import computed_once

DEFAULT_THRESHOLDS = (0.5, 0.7, 0.9)


def threshold_key(t: float) -> str:
    """JSON key of a threshold: 0.5 -> "0.5", 0.9 -> "0.9"."""
    return f"{float(t):g}"


def fractions_above(cosines: np.ndarray, thresholds: Iterable[float]) -> dict[str, float | None]:
    """Fraction of cosines at or above each threshold (None when there are no cosines)."""
    c = np.asarray(cosines, dtype=np.float64)
    return {threshold_key(t): (float(np.mean(c >= t)) if c.size else None) for t in thresholds}


def matched_statistics(cosines, thresholds=DEFAULT_THRESHOLDS) -> dict:
    """Summary of a set of matched cosines: n, median, mean, min, max, and
    `fraction_above` {"0.5": ..., ...} (at or above). Empty input gives None values."""
    c = np.asarray(cosines, dtype=np.float64).ravel()
    empty = c.size == 0
    return {
        "n": int(c.size),
        "median": None if empty else float(np.median(c)),
        "mean": None if empty else float(np.mean(c)),
        "min": None if empty else float(np.min(c)),
        "max": None if empty else float(np.max(c)),
        "fraction_above": fractions_above(c, thresholds),
    }


_BASELINE_CACHE: dict[tuple, dict] = {}


def random_baseline(n_a: int, n_b: int, d: int, *, seed: int = 0, n_draws: int = 3,
                    solver: str = "auto") -> dict:
    """Matched cosines of random unit dictionaries with the given shapes (the null).

    Each of the `n_draws` draws: Gaussian rows [n_a, d] and [n_b, d] (normalised), matched
    like real dictionaries, giving `n_per_draw` = min(n_a, n_b) matched cosines. `cosines`
    holds ALL of them, draw after draw ([n_draws * n_per_draw], what the plots show), and
    every statistic (median_cosine, mean_cosine, max_cosine, fraction_above) is of that same
    pooled list. Deterministic (the generator is seeded by the key) and memoised per
    (n_a, n_b, d, seed, n_draws, solver): treat the returned dict as read-only.
    """
    for name, v in (("n_a", n_a), ("n_b", n_b), ("d", d), ("n_draws", n_draws)):
        if int(v) != v or v < 1:
            raise ConfigError(f"random_baseline: {name} must be a positive integer, got {v!r}")
    key = (int(n_a), int(n_b), int(d), int(seed), int(n_draws))
    # the solver is recorded in the result, so it is in the key; pairs matched side by side
    # ask for the same null together, and it is drawn once
    return computed_once(_BASELINE_CACHE, (key, solver), lambda: _draw_baseline(key, solver))


def _draw_baseline(key: tuple, solver: str) -> dict:
    from saefast.match import match_decoders

    n_a, n_b, d, _, n_draws = key
    rng = np.random.default_rng(list(key))  # same shapes + seed -> same null, whatever the order
    draws, used = [], None
    for _ in range(n_draws):
        a = rng.standard_normal((n_a, d)).astype(np.float32)  # [n_a, d]
        b = rng.standard_normal((n_b, d)).astype(np.float32)  # [n_b, d]
        m = match_decoders(a, b, solver=solver)
        draws.append(m.cosines)
        used = m.solver
    pooled = np.concatenate(draws)
    stats = matched_statistics(pooled)
    result = {
        "n_a": key[0], "n_b": key[1], "d": key[2], "seed": key[3], "n_draws": key[4],
        "n_per_draw": int(draws[0].size),
        "solver": used,
        "median_cosine": stats["median"],
        "mean_cosine": stats["mean"],
        "max_cosine": stats["max"],
        "fraction_above": stats["fraction_above"],
        "cosines": pooled.tolist(),  # every draw's matched cosines, draw after draw
    }
    return result
