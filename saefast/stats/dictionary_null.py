"""The dictionary-covariance null (issue 22, item 2): random rows concentrated where the
decoders are, so two dictionaries that lie in one subspace are compared with random rows that
lie in it the same way.

Rows ~ N(0, Σ_D) with

    Σ_D = (1/S) sum_r C_r,    C_r = U_r^T U_r / n_r,

U_r [n_r, d] the unit decoder rows run r was matched with (all its features; its live ones in
a live-only report; a row of norm 0 has no direction and is left out). It reads only the
decoders, so every report gets it: runs without an activation store, cross-domain runs and
other tools' runs included. Its dictionaries are drawn and matched by the covariance null's
machinery (`nulls.covariance_null`, `null_model.covariance_null_model`), memoised by a
fingerprint of Σ_D's bytes: the covariance null's cost, plus one U_r^T U_r per run (n_r d^2).

One Σ per report, not one per pair. The issue defines it per pair, Σ_AB = (C_A + C_B) / 2;
Σ_D is exactly the mean of Σ_AB over the S(S-1)/2 pairs (each run is in S-1 of them). A Σ per
pair multiplies the null's cost by the pairs: 10 at 5 seeds (one Σ at 128 features in d = 384
adds ~0.7-0.9 s to a report per mode (full, live-only) on 2 loaded cores, at 512 features
~4.5 s: so ~8-45 s per mode), 190 at 20 seeds (x 16,384 features: each pair's null alone is two 16,384 x 16,384
matchings, its nearest-neighbour draws and a 3-run null curve, so hours); and the
per-feature evidence asks one `NullModel` for null dictionaries of all S runs at once (the
null seed-count curve, within-SAE redundancy), which no one pair's Σ describes. The runs of a
seed group train on the same activations, so their C_r differ little; how little is stored,
`pair_deviation`: ||Σ_AB - Σ_D||_F / ||Σ_D||_F over the pairs (max and median, exact from the
Gram matrix of the C_r). Where it is large (runs of different domains, each dictionary in its
own subspace) Σ_D is wider than a within-domain pair's own Σ_AB and that pair's null is looser
(lower) than the definition's; the report's `pair_deviation` shows it.

Σ_D is estimated from the very rows it tests, so it is anisotropic by sampling alone: for
isotropic rows its effective rank is ~d N / (N + d - 1) (N rows), not d (`isotropic_rank`,
stored beside `effective_rank`). Both null dictionaries share that sampling anisotropy while
two real runs' own anisotropies are independent, so for dictionaries with nothing in common
but isotropy the null sits above the isotropic null (conservative): 32 dimensions, 5 runs of
128 rows (rank 30.5 of 32), median 0.420 against 0.414. Where N is not much larger than d
(the default study: 5 x 128 rows in d = 384, rank ~240 of 384) the shift is large; read the
excess over this null together with `effective_rank` against `isotropic_rank`. A Σ per pair
(2 runs' rows) would be twice as far off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from saefast.data.moments import as_float_array, check_finite, fingerprint
from saefast.errors import ConfigError
from saefast.stats import nulls as _nulls
from saefast.stats.null_model import NullModel, covariance_null_model

NAME = "dictionary"
DESCRIPTION = ("Gaussian rows with the decoders' own covariance: N(0, Σ_D), Σ_D the mean over "
               "the report's runs of U^T U / n of each run's unit decoder rows (one Σ per "
               "report: the mean over pairs of (C_A + C_B) / 2)")
METHOD = ("rows ~ N(0, Σ_D), Σ_D = (1/S) sum_r U_r^T U_r / n_r over the report's S runs (U_r: "
          "run r's unit decoder rows as matched), drawn and matched like the covariance null; "
          "one Σ per report, the mean over pairs of the pair's own (C_A + C_B) / 2, since a Σ "
          "per pair costs S(S-1)/2 nulls and gives the per-feature evidence no one null for all "
          "runs. pair_deviation: ||(C_A + C_B) / 2 - Σ_D||_F / ||Σ_D||_F over the pairs (max, "
          "median): how far one pair's own null Σ is from the one used. Σ_D is estimated from "
          "the rows it tests, so even isotropic rows give it an effective rank below d "
          "(isotropic_rank: 1 / (q + (1 - q) / d), q the sum of the rows' squared weights); "
          "the null is then above the isotropic one (conservative) by that sampling anisotropy")


@dataclass(frozen=True)
class DictionaryCovariance:
    """Σ_D of a report's runs. cov [d, d] float64 (trace 1); key: the null's memo key
    ("dictionary:" + a fingerprint of cov); rows: the unit rows each run contributed;
    pair_deviation {max, median} (None with one run)."""

    cov: np.ndarray
    key: str
    rows: tuple[int, ...]
    pair_deviation: dict | None

    @property
    def n_runs(self) -> int:
        return len(self.rows)

    @property
    def isotropic_rank(self) -> float:
        """The effective rank Σ_D has on average when rows as many as these are isotropic:
        1 / E tr(Σ_D^2) = 1 / (q + (1 - q) / d), q = sum_i w_i^2 over the rows' weights
        w_i = 1 / (S n_r). Below d by sampling alone (d N / (N + d - 1) for N rows in equal
        runs); Σ_D's effective_rank well below it is concentration the rows share."""
        d = self.cov.shape[0]
        q = sum(1.0 / n for n in self.rows) / self.n_runs ** 2
        return float(1.0 / (q + (1.0 - q) / d))


def run_covariance(rows) -> tuple[np.ndarray, int]:
    """(C = U^T U / n [d, d] float64, n) of one run's decoder rows [*, d] (torch or numpy):
    U the rows scaled to unit norm in float64, rows of norm 0 left out."""
    x = as_float_array(rows, "decoder rows").astype(np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ConfigError(f"dictionary null: decoder rows must be [n, d], got shape {x.shape}")
    check_finite(x, "decoder rows")
    norms = np.linalg.norm(x, axis=1)  # [n]
    u = x[norms > 0] / norms[norms > 0, None]  # [n', d]
    if u.shape[0] == 0:
        raise ConfigError("dictionary null: every decoder row is zero (no direction)")
    return u.T @ u / u.shape[0], int(u.shape[0])


def pair_deviation(covs: Sequence[np.ndarray], mean: np.ndarray) -> dict | None:
    """Over the pairs (a, b): ||(C_a + C_b)/2 - mean||_F / ||mean||_F, {max, median}; from the
    Gram matrix G of the deviations D_r = C_r - mean (||(D_a + D_b)/2||^2 =
    (G_aa + G_bb + 2 G_ab) / 4), so no pair's matrix is formed. None below two runs."""
    s = len(covs)
    if s < 2:
        return None
    dev = [c - mean for c in covs]
    gram = np.array([[float(np.vdot(dev[i], dev[j])) for j in range(s)] for i in range(s)])
    scale = float(np.linalg.norm(mean))
    per_pair = np.array([np.sqrt(max(gram[i, i] + gram[j, j] + 2 * gram[i, j], 0.0)) / 2 / scale
                         for i in range(s) for j in range(i + 1, s)])
    return {"max": float(per_pair.max()), "median": float(np.median(per_pair)),
            "n_pairs": int(per_pair.size)}


def dictionary_covariance(rows_per_run: Sequence) -> DictionaryCovariance:
    """Σ_D of the runs' decoder rows (rows_per_run[r]: [n_r, d], the rows run r was matched
    with). Computed on one BLAS thread, so its bits, and so its memo key, do not depend on
    the machine's thread count."""
    from threadpoolctl import threadpool_limits

    if len(rows_per_run) < 1:
        raise ConfigError("dictionary null: no runs")
    with threadpool_limits(limits=1):
        got = [run_covariance(r) for r in rows_per_run]
    covs = [c for c, _ in got]
    if len({c.shape for c in covs}) != 1:
        raise ConfigError("dictionary null: the runs' decoders have different d")
    mean = covs[0].copy()  # [d, d]; summed in place: no [S, d, d] stack
    for c in covs[1:]:
        mean += c
    mean /= len(covs)
    mean = (mean + mean.T) / 2  # exactly symmetric: its fingerprint names the matrix used
    return DictionaryCovariance(mean, f"{NAME}:{fingerprint(mean)}",
                                tuple(n for _, n in got), pair_deviation(covs, mean))


def dictionary_null_model(dcov: DictionaryCovariance, *, solver: str = "auto") -> NullModel:
    """The dictionary-covariance null as the evidence's `NullModel` (`evidence.by_null`
    under "dictionary"): the covariance null's model on Σ_D."""
    return covariance_null_model(dcov.cov, dcov.key, solver=solver, name=NAME,
                                 description=DESCRIPTION)


def dictionary_null(dcov: DictionaryCovariance, n_a: int, n_b: int, *, seed: int = 0,
                    n_draws: int | None = None, solver: str = "auto") -> dict:
    """The null's summary for one shape (the keys of `nulls.covariance_null`, the same
    memoised draws the evidence's p-values use), with kind "dictionary", its method, the
    number of runs and rows Σ_D was made of and `pair_deviation`. A new dict: the memo's
    own is left as it is."""
    got = _nulls.covariance_null(dcov.cov, n_a, n_b, seed=seed, n_draws=n_draws,
                                 solver=solver, key=dcov.key)
    return {**got, "kind": NAME, "method": METHOD, "n_runs": dcov.n_runs,
            "rows_per_run": list(dcov.rows), "pair_deviation": dcov.pair_deviation,
            "isotropic_rank": dcov.isotropic_rank}
