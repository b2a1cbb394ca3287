"""The spectrum-matched null: each dictionary against copies of the other rotated at random
within bands of the activations' eigen-spectrum (`saefast.stats.spectrum_bands`).

Why: a feature's nearest cosine in another run, max_j cos(a_i, b_j), has a null law that
depends on where a_i lies in Σ's spectrum (under N(0, Σ) rows, a feature in the top
principal directions meets many rows there and gets a high nearest cosine with nothing
shared). One pooled nearest-neighbour null (`evidence`) is exact only under isotropy. Here A
stays fixed and B is rotated, B' = B V diag(Q_1..Q_m) V^T (Q_k Haar on band k, the band
edges offset at random per draw), which keeps each row of B its energy in every band and B
its own Gram matrix, so the null of max_j cos(a_i, b'_j) is conditional on a_i's OWN place in
the spectrum. It is exact when Σ is constant within each band (B's law is then invariant
under the rotations) and approximate where eigenvalues vary within a band (the >= 8
directions a band needs merge the few top eigenvalues: tests/test_spectrum_null.py measures
both).

One draw = one rotation and one [n_a, n_b] GEMM in the eigenbasis (blockwise), whose row
maxima are A's features' null maxima and whose column maxima are B's: cos(a_i, b_j Q) =
cos(a_i Q^T, b_j) and Q^T is Haar too, so the column maxima are exactly B's features against
a rotated A. Per feature: p = (1 + #{draws: null max >= observed}) / (D + 1), and below that
floor a fitted tail (`saefast.stats.tail_fit`).

`spectrum_matched_null`: the same null as a matched-cosine distribution (A matched one-to-one
with a rotated B, like the other nulls of `summary.nulls`), for the report's summary.
Nothing here reads or writes a file.
"""

from __future__ import annotations

import numpy as np
import torch

from saefast.stats import spectrum_bands as sb
from saefast.stats import tail_fit
from saefast.stats.matched import matched_statistics
from saefast.stats.nulls import QUANTILES

NEAREST_WORK = 1 << 32  # nearest-null draws x n_a x n_b per pair, at most (16,384^2: 16)
MIN_DRAWS = 20  # nearest-null draws per pair, at least (the tail fit needs a few per feature)
MAX_DRAWS = 200
HELD_OUT = 0.25  # share of the draws held out to check the tail fit
RESOLVED = 5  # exceedances from which a feature's empirical p-value is used as it is
_BLOCK_BYTES = 32 << 20  # one [block, n_b] float32 block of cosines at a time

DESCRIPTION = ("each dictionary against the other rotated at random within bands of the "
               "activations' eigen-spectrum (each row keeps its energy per band)")
METHOD = (f"B' = B V diag(Q_1..Q_m) V^T, Σ = V Λ V^T the training activations' covariance, Q_k "
          "Haar-orthogonal on band k; bands: equal width in log eigenvalue (stated width "
          f"log 2, a factor 2 in variance), edges offset uniformly at random per draw, merged "
          f"from the top until each holds >= {sb.MIN_DIMS} directions, eigenvalues <= "
          f"{sb.FLOOR_REL:g} λ_max one band. A stays fixed, so each feature's null is "
          "conditional on its own position in the spectrum; both sides of every pair (A vs "
          "rotated B, B vs rotated A: the column maxima of the same draws). Exact when Σ is "
          "constant within bands, approximate otherwise. Per feature: p = (1 + #{draws: null "
          f"nearest >= observed}}) / (D + 1), D = NEAREST_WORK / (n_a n_b) in [{MIN_DRAWS}, "
          f"{MAX_DRAWS}]; where fewer than {RESOLVED} draws reach the observed value, the "
          "fitted tail below")


def pair_draws(n_a: int, n_b: int) -> int:
    """Nearest-null draws of one pair: NEAREST_WORK / (n_a n_b), within [MIN_DRAWS, MAX_DRAWS]."""
    return int(np.clip(NEAREST_WORK // (int(n_a) * int(n_b)), MIN_DRAWS, MAX_DRAWS))


def nearest(ca: np.ndarray, cb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row maxima [n_a], column maxima [n_b]) of ca cb^T, float32, blockwise over ca's rows."""
    a, b = torch.from_numpy(np.ascontiguousarray(ca)), torch.from_numpy(np.ascontiguousarray(cb))
    n_a, n_b = a.shape[0], b.shape[0]
    rows = np.empty(n_a, dtype=np.float32)
    cols = torch.full((n_b,), -float("inf"))
    block = max(1, _BLOCK_BYTES // (4 * n_b))
    for s in range(0, n_a, block):
        c = a[s:s + block] @ b.T  # [block, n_b]
        rows[s:s + block] = c.max(1).values.numpy()
        cols = torch.maximum(cols, c.max(0).values)
    return rows, cols.numpy()


def null_maxima(ca: np.ndarray, cb: np.ndarray, spectrum: sb.Spectrum, *, width: float,
                n_draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """([D, n_a], [D, n_b]): per draw, the row and column maxima against a rotated cb."""
    out_a = np.empty((n_draws, ca.shape[0]), dtype=np.float32)
    out_b = np.empty((n_draws, cb.shape[0]), dtype=np.float32)
    for t in range(n_draws):
        bands = spectrum.bands(width, float(rng.uniform(0.0, width)))
        out_a[t], out_b[t] = nearest(ca, sb.rotate(cb, bands, rng))
    return out_a, out_b


def empirical(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p [n], exceedances [n]): p = (1 + #{draws >= observed}) / (D + 1) per feature."""
    k = (null >= observed[None, :]).sum(0)
    return (1.0 + k) / (null.shape[0] + 1.0), k


def side_pvalues(observed: np.ndarray, null: np.ndarray, position: np.ndarray) -> dict:
    """One side's features: {pvalues [n], tail [n] bool (p from the fitted tail),
    underpowered [n] bool (fewer than RESOLVED exceedances and no fit that passed its check:
    the empirical p, which cannot go below 1/(D+1)), checks (per stratum)}."""
    d = null.shape[0]
    held = max(1, int(round(HELD_OUT * d)))
    p_emp, k = empirical(observed, null)
    p_tail, checks = tail_fit.tail_pvalues(observed, null[:d - held], null[d - held:],
                                           tail_fit.strata(position))
    low = k < RESOLVED
    tail = low & np.isfinite(p_tail)
    return {"pvalues": np.where(tail, p_tail, p_emp), "tail": tail,
            "underpowered": low & ~tail, "checks": checks, "n_draws": d}


def pair_pvalues(rows_a, rows_b, spectrum: sb.Spectrum, *, width: float = sb.WIDTH,
                 n_draws: int | None = None, seed=0, fit_tail: bool = True) -> dict:
    """One pair's conditional per-feature p-values: {"a": side, "b": side, "n_draws",
    "observed_a", "observed_b"} (side: `side_pvalues`; fit_tail=False: empirical p-values
    only, no tail fit). seed: anything np.random.default_rng takes."""
    ca, cb = spectrum.coords(rows_a), spectrum.coords(rows_b)
    d = pair_draws(len(ca), len(cb)) if n_draws is None else int(n_draws)
    obs_a, obs_b = nearest(ca, cb)
    null_a, null_b = null_maxima(ca, cb, spectrum, width=width, n_draws=d,
                                 rng=np.random.default_rng(seed))
    out = {"n_draws": d, "observed_a": obs_a, "observed_b": obs_b}
    for side, obs, null, c in (("a", obs_a, null_a, ca), ("b", obs_b, null_b, cb)):
        if fit_tail:
            out[side] = side_pvalues(obs, null, spectrum.position(c))
        else:
            p, _ = empirical(obs, null)
            out[side] = {"pvalues": p, "n_draws": d}
    return out


def spectrum_matched_null(pairs_rows: list[tuple], spectrum: sb.Spectrum, *, n_draws: int,
                          width: float = sb.WIDTH, seed: int = 0, solver: str = "auto") -> dict:
    """The null's matched cosines at one shape, with the keys of the other nulls
    (`nulls.covariance_null`: median_cosine, mean_cosine = PW-MCC, quantiles, draw spread,
    cosines, ...): draw t matches A of pairs_rows[t % P] one-to-one with its B rotated
    within the bands. pairs_rows: (rows_a, rows_b) of the report's pairs of that shape."""
    from saefast.match import match_decoders

    rng = np.random.default_rng([seed, spectrum.d, len(pairs_rows), n_draws, 17])
    coords = [(spectrum.coords(a), spectrum.coords(b)) for a, b in pairs_rows]
    draws, used = [], None
    for t in range(int(n_draws)):
        ca, cb = coords[t % len(coords)]
        bands = spectrum.bands(width, float(rng.uniform(0.0, width)))
        m = match_decoders(ca, sb.rotate(cb, bands, rng), solver=solver)
        draws.append(np.asarray(m.cosines, dtype=np.float64))
        used = m.solver
    pooled = np.concatenate(draws)
    s = matched_statistics(pooled)
    per_draw = np.array([np.median(c) for c in draws])
    n_a, n_b = (len(x) for x in coords[0])
    return {"kind": "spectrum", "skipped": False, "reason": None, "n_a": n_a, "n_b": n_b,
            "d": spectrum.d, "seed": int(seed), "n_draws": int(n_draws),
            "n_per_draw": int(draws[0].size), "solver": used, "n_pairs_drawn_from":
            len(coords), "width": float(width), "fingerprint": spectrum.key,
            "bands": sb.describe(spectrum.bands(width), spectrum.values),
            "median_cosine": s["median"], "mean_cosine": s["mean"], "max_cosine": s["max"],
            "fraction_above": s["fraction_above"], "cosines": pooled.tolist(),
            "quantiles": {f"{q:g}": float(np.quantile(pooled, q)) for q in QUANTILES},
            "draw_medians": per_draw.tolist(),
            "draw_median_spread": {"min": float(per_draw.min()), "max": float(per_draw.max()),
                                   "std": float(per_draw.std(ddof=1)) if per_draw.size > 1
                                   else 0.0},
            "method": METHOD + "; matched one-to-one like the other nulls"}
