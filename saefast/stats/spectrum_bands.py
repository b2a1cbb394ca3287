"""Bands of a covariance's eigen-spectrum and random rotations within them: the machinery of
the spectrum-matched null (`saefast.stats.spectrum_null`).

Σ = V Λ V^T (`Spectrum.from_cov`). The band rule reads the eigenvalues and nothing else (not
the eigenvectors, not the dictionaries it will be applied to):

- the floor: eigenvalues <= FLOOR_REL * λ_max (zero variance up to rounding) are one band
  of their own, whatever their number;
- the rest by equal width in log λ: band edges at log λ_max - (offset + k * width), offset
  drawn uniformly in [0, width) per draw, so no edge sits at a fixed place;
- from the top down, consecutive bins are merged until a band holds >= MIN_DIMS directions
  (a rotation within fewer leaves too little to randomise); a remainder below MIN_DIMS at
  the bottom joins the band above it; fewer than MIN_DIMS non-floor directions are one band.

`rotate(coords, bands, rng)`: coords [n, d] in the eigenbasis (rows of B V) times a
Haar-orthogonal Q_k on each band's coordinates, i.e. B' = B V diag(Q_1..Q_m) V^T in the
original basis. One Q per band for all rows, so each row keeps its energy in every band
exactly and the dictionary keeps its own Gram matrix; only where it lies within a band
relative to another dictionary is randomised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from saefast.data.moments import as_float_array, check_finite, fingerprint
from saefast.errors import ConfigError

MIN_DIMS = 8  # directions per band, at least (the floor band excepted)
WIDTH = math.log(2.0)  # the stated band width: a factor 2 in variance
FLOOR_REL = 1e-9  # eigenvalues at most this times λ_max are the floor (zero variance)


@dataclass(frozen=True)
class Spectrum:
    """values [d] descending (floor clipped to 0), vectors [d, d] (column l: eigenvector of
    values[l]), n_floor: how many trailing values are the floor, key: a fingerprint of Σ."""

    values: np.ndarray
    vectors: np.ndarray
    n_floor: int
    key: str

    @classmethod
    def from_cov(cls, cov) -> "Spectrum":
        c = as_float_array(cov, "covariance").astype(np.float64)
        if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0:
            raise ConfigError(f"spectrum: covariance must be square [d, d], got {c.shape}")
        check_finite(c, "covariance")
        w, v = np.linalg.eigh((c + c.T) / 2)  # ascending
        w, v = w[::-1].copy(), np.ascontiguousarray(v[:, ::-1])
        if not w[0] > 0:
            raise ConfigError("spectrum: the covariance has no variance")
        floor = w <= FLOOR_REL * w[0]
        w[floor] = 0.0
        return cls(w, v, int(floor.sum()), fingerprint(c))

    @property
    def d(self) -> int:
        return int(self.values.size)

    def coords(self, rows) -> np.ndarray:
        """[n, d] float32: the rows scaled to unit norm, in the eigenbasis (u V). Cosines are
        the same in either basis; a zero row stays zero."""
        x = as_float_array(rows, "decoder rows").astype(np.float64)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ConfigError(f"spectrum: rows must be [n, {self.d}], got {x.shape}")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        u = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        return (u @ self.vectors).astype(np.float32)

    def position(self, coords: np.ndarray) -> np.ndarray:
        """[n] each unit row's spectral position: the energy-weighted mean of log λ over its
        coordinates (floor directions count at log(FLOOR_REL λ_max))."""
        logs = np.log(np.maximum(self.values, FLOOR_REL * self.values[0]))
        e = np.asarray(coords, dtype=np.float64) ** 2
        return (e @ logs) / np.maximum(e.sum(1), 1e-300)

    def bands(self, width: float = WIDTH, offset: float = 0.0) -> list[np.ndarray]:
        return bands(self.values, width, offset)


def bands(values, width: float = WIDTH, offset: float = 0.0,
          min_dims: int = MIN_DIMS) -> list[np.ndarray]:
    """The band rule (module docstring) on eigenvalues [d] in descending order: a list of
    index arrays into them, top band first, the floor band (if any) last."""
    lam = np.asarray(values, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0 or np.any(np.diff(lam) > 0):
        raise ConfigError("spectrum bands: eigenvalues must be a non-empty descending vector")
    if not width > 0 or not 0 <= offset < width:
        raise ConfigError(f"spectrum bands: need width > 0 and 0 <= offset < width, got "
                          f"{width}, {offset}")
    top = lam[0]
    live = int(np.count_nonzero(lam > FLOOR_REL * top))
    depth = np.log(top) - np.log(lam[:live])  # [live] >= 0, ascending
    bins = np.floor((depth + offset) / width).astype(np.int64)
    out, start = [], 0
    for b in np.unique(bins):  # ascending: from the top of the spectrum down
        end = int(np.searchsorted(bins, b, side="right"))
        if end - start >= min_dims:
            out.append(np.arange(start, end))
            start = end
    if start < live:  # the remainder: its own band only if large enough
        if out and live - start < min_dims:
            out[-1] = np.arange(out[-1][0], live)
        else:
            out.append(np.arange(start, live))
    if live < lam.size:
        out.append(np.arange(live, lam.size))
    return out


def haar(k: int, rng: np.random.Generator) -> np.ndarray:
    """[k, k] orthogonal, Haar-distributed: QR of a Gaussian with R's diagonal signs moved
    into Q (Mezzadri 2007; without it the law is not Haar)."""
    q, r = np.linalg.qr(rng.standard_normal((k, k)))
    return q * np.sign(np.diag(r))


def rotate(coords: np.ndarray, band_list: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """coords [n, d] (eigenbasis) with each band's block of coordinates times its own Haar
    Q_k (the same Q_k for every row). A new array, coords' dtype."""
    out = np.empty_like(coords)
    for idx in band_list:
        q = haar(idx.size, rng).astype(coords.dtype)
        out[:, idx] = coords[:, idx] @ q
    return out


def describe(band_list: list[np.ndarray], values: np.ndarray, coords=None) -> list[dict]:
    """Each band as the report states it: its number of directions and eigenvalue range;
    with coords [n, d] (unit rows in the eigenbasis) also `spherical`: how evenly the rows'
    energy spreads over the band's directions (participation ratio of the mean energy per
    direction over the band's dims: 1 = even). The null is exact where the rows' law within
    a band is spherical; well below 1 (a band of unequal eigenvalues the rows follow), the
    rotated rows are more spread than the real ones and the null is anti-conservative."""
    e = None if coords is None else (np.asarray(coords, np.float64) ** 2).mean(0)  # [d]
    out = []
    for i in band_list:
        row = {"dims": int(i.size), "from": float(values[i[0]]), "to": float(values[i[-1]])}
        if e is not None:
            ei = e[i]
            row["spherical"] = float(ei.sum() ** 2 / max(i.size * (ei ** 2).sum(), 1e-300))
        out.append(row)
    return out
