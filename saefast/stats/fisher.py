"""A Pearson r between paired samples with its Fisher-z interval, and the sample size that
gives an interval of a wanted width. The ablation view's attribution check uses both (its
pairs, features of one run, are treated as independent: one removal each)."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from saefast.stats.inference import DEFAULT_LEVEL

FISHER_METHOD = "Fisher z: tanh(atanh(r) +- z_(1+level)/2 / sqrt(n - 3)), n independent pairs"


def fisher_interval(x, y, *, level: float = DEFAULT_LEVEL) -> dict:
    """Pearson r of paired samples x, y [n] with its Fisher-z interval (independent pairs):
    {estimate, ci, n, level, method}; no interval below n = 4, no r below n = 3 or where a
    side does not vary."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = int(x.size)
    ok = n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
    r = float(np.corrcoef(x, y)[0, 1]) if ok else None
    ci = None
    if r is not None and n >= 4:
        z, h = np.arctanh(np.clip(r, -1 + 1e-15, 1 - 1e-15)), \
            sps.norm.ppf(0.5 + float(level) / 2) / np.sqrt(n - 3)
        ci = [float(np.tanh(z - h)), float(np.tanh(z + h))]
    return {"estimate": r, "ci": ci, "n": n, "level": level, "method": FISHER_METHOD}


def fisher_size(half_width: float, at_r: float, *, level: float = DEFAULT_LEVEL) -> int:
    """Pairs n for a Fisher-z interval of half-width <= half_width at r = at_r (to first
    order: (1 - r^2) z / sqrt(n - 3))."""
    z = sps.norm.ppf(0.5 + float(level) / 2)
    return int(np.ceil(3 + (z * (1 - at_r ** 2) / half_width) ** 2))
