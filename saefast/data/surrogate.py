"""Surrogate activations for the trained null: token sources that keep the mean and
covariance of real activations and have no sparse structure, read by training exactly like a
store or a stream (`windows.TokenSource`).

Two kinds, for Σ = V Λ V^T (eigendecomposition; negative round-off eigenvalues clipped to 0):

- "gaussian": x' = mu + A g, g ~ N(0, I_d), A = V Λ^1/2. Any A with A A^T = Σ gives the
  distribution of the symmetric root's mu + Σ^1/2 g; this one lets the elliptical kind keep
  only the columns of the directions it whitens.
- "elliptical": x' = mu + A_r (|w| g / |g|), g ~ N(0, I_r), w = W_r^T (x - mu) of the real
  token x at the same position, A_r = V_r Λ_r^1/2 and W_r = V_r Λ_r^-1/2 on the r eigenvalues
  above the floor (`rel_floor` x the largest; the directions below it are treated as having
  no variance: they carry no whitened coordinate and no surrogate variance). It keeps each
  token's Mahalanobis norm |w| exactly (outlier tokens, heavy tails) and draws its direction
  uniformly in the whitened span: all directional structure is gone. Its covariance is Σ
  without the directions below the floor (E[w w^T] = I_r for data whose covariance is Σ).

Row i is made from chunk i // CHUNK_ROWS, whose normals come from a generator seeded by
(seed, chunk index) alone (numpy SeedSequence(seed, spawn_key=(chunk,)), the chunk's child of
SeedSequence(seed).spawn), and a read always computes whole chunks: the rows do not depend on
the order or size of reads, so a resumed training reads bitwise the same rows, and nothing is
stored. One source of the group's token count serves every null seed; the trainer reads it in
each seed's own data order, as it reads a store.

`surrogate_moments` picks the Σ a group's null draws from: the larger of its training range
and the store's held-out block, and refuses fewer than `MIN_MOMENT_TOKENS` rows;
`store_surrogate` is a group's surrogate of its training rows in a store. `SurrogateSpec`
names one such sample by what makes it (small and picklable: a seed worker opens it itself),
and `Placed` puts a sample where the training rows are in a store's order, so a pass reads
its training range from the surrogate and its held-out range from the real store.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import torch

from saefast.data.moments import ActivationMoments, as_float_array
from saefast.data.store import SHARD_TOKENS, StoreSource, training_moments
from saefast.data.windows import TokenSource
from saefast.errors import ActivationError, ConfigError

KINDS = ("gaussian", "elliptical")
CHUNK_ROWS = 4096  # rows per generator: part of what a row is (in the fingerprint)
REL_FLOOR = 1e-10  # eigenvalues <= this x the largest count as zero (float64 eigh noise ~1e-14)
MIN_MOMENT_TOKENS = 20_000  # fewer rows give a Σ too noisy to stand in for the data's


class SurrogateSource(TokenSource):
    """`n_tokens` surrogate activations of `kind` with the mean and covariance of `moments`.

    `real` (elliptical only): the real tokens the surrogate replaces, position by position
    ([n_tokens, d]; read chunk by chunk, forward when it is a stream). `seed` names the
    sample: every null seed of a group reads the same one."""

    def __init__(self, moments: ActivationMoments, n_tokens: int, *, kind: str = "gaussian",
                 seed: int = 0, real: TokenSource | None = None, rel_floor: float = REL_FLOOR):
        if kind not in KINDS:
            raise ConfigError(f"surrogate kind must be one of {KINDS}, got {kind!r}")
        if n_tokens <= 0:
            raise ConfigError(f"a surrogate needs n_tokens > 0, got {n_tokens}")
        if (kind == "elliptical") != (real is not None):
            raise ConfigError("the elliptical surrogate needs the real tokens it replaces "
                              "(real=...); the gaussian one reads none")
        self.kind, self.seed, self.rel_floor = kind, int(seed), float(rel_floor)
        self.n_tokens, self.d = int(n_tokens), int(moments.d)
        self.moments_fingerprint = moments.fingerprint()
        self.mean = moments.mean  # [d] float64
        self.color, self.whiten = factors(moments.cov, kind, rel_floor)  # [d, r], [d, r] | None
        if real is not None:
            if real.d != self.d or real.n_tokens != self.n_tokens:
                raise ActivationError(f"real tokens [{real.n_tokens}, {real.d}] do not fit a "
                                      f"surrogate of [{self.n_tokens}, {self.d}]")
            self.random_access = real.random_access  # a stream is read forward
        self.real = real
        self._last: tuple[int, np.ndarray] | None = None  # (chunk index, its rows): reads overlap

    @property
    def rank(self) -> int:
        """Directions the surrogate varies in (d for the gaussian kind)."""
        return self.color.shape[1]

    def fingerprint(self) -> str:
        """What decides the rows (a checkpoint's data key): kind, seed, length, the moments,
        the floor and the chunking; the elliptical kind names its real rows by the caller's
        key (`data_key` of train_saes: add the real source's own key beside this)."""
        text = repr((self.kind, self.seed, self.n_tokens, self.moments_fingerprint,
                     self.rel_floor, CHUNK_ROWS))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def read(self, start: int, end: int) -> torch.Tensor:  # [end - start, d] float32
        if not 0 <= start <= end <= self.n_tokens:
            raise ValueError(f"read [{start}, {end}) outside the surrogate's "
                             f"{self.n_tokens:,} tokens")
        out = np.empty((end - start, self.d), np.float32)  # [end - start, d]
        pos = start
        while pos < end:
            c = pos // CHUNK_ROWS
            lo, hi = pos - c * CHUNK_ROWS, min(end, (c + 1) * CHUNK_ROWS) - c * CHUNK_ROWS
            out[pos - start:pos - start + hi - lo] = self._chunk(c)[lo:hi]
            pos += hi - lo
        return torch.from_numpy(out)

    def _chunk(self, c: int) -> np.ndarray:
        """Rows [c * CHUNK_ROWS, ...) of the sample, always computed whole: bitwise the same
        whichever read asks for them."""
        if self._last is None or self._last[0] != c:
            a, b = c * CHUNK_ROWS, min((c + 1) * CHUNK_ROWS, self.n_tokens)
            g = chunk_generator(self.seed, c).standard_normal((b - a, self.rank))  # [m, r]
            if self.kind == "elliptical":
                g *= self._whitened_norms(a, b) / np.linalg.norm(g, axis=1, keepdims=True)
            self._last = (c, (g @ self.color.T + self.mean).astype(np.float32))  # [m, d]
        return self._last[1]

    def _whitened_norms(self, a: int, b: int) -> np.ndarray:
        """[b - a, 1] Mahalanobis norms |W_r^T (x - mu)| of the real rows [a, b)."""
        x = as_float_array(self.real.read(a, b), "real activations").astype(np.float64)  # [m, d]
        x -= self.mean
        return np.linalg.norm(x @ self.whiten, axis=1, keepdims=True)


def chunk_generator(seed: int, chunk: int) -> np.random.Generator:
    """The generator of one chunk: child `chunk` of SeedSequence(seed), made directly."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(chunk,))))


def factors(cov: np.ndarray, kind: str, rel_floor: float = REL_FLOOR):
    """(color [d, r], whiten [d, r] or None) from Σ [d, d] (float64).

    gaussian: color = V Λ^1/2 over all d directions (eigenvalues clipped at 0), whiten None.
    elliptical: color = V_r Λ_r^1/2 and whiten = V_r Λ_r^-1/2 over the r eigenvalues above
    rel_floor x the largest; the rest count as zero (no coordinate, no variance)."""
    lam, vec = np.linalg.eigh(np.asarray(cov, dtype=np.float64))  # [d], [d, d] ascending
    lam = np.clip(lam, 0.0, None)
    if lam[-1] <= 0:
        raise ActivationError("the activations' covariance is zero: nothing to imitate")
    if kind == "gaussian":
        return vec * np.sqrt(lam), None
    keep = lam > rel_floor * lam[-1]
    root = np.sqrt(lam[keep])  # [r]
    return vec[:, keep] * root, vec[:, keep] / root


def surrogate_moments(store: str | os.PathLike, train: tuple[int, int],
                      held_out: tuple[int, int],
                      min_tokens: int = MIN_MOMENT_TOKENS) -> ActivationMoments:
    """The moments a group's surrogate imitates: those of the larger of its training rows
    `train` = [start, end) and the store's held-out rows `held_out` (sweep.plan.data_ranges),
    so a small budget does not draw from a Σ estimated on few tokens. A prefix of the store
    comes from `store.training_moments` (cached beside the store); another range is computed
    here. ActivationError when the larger range has fewer than `min_tokens` rows."""
    start, end = max([train, held_out], key=lambda r: r[1] - r[0])
    if end - start < min_tokens:
        raise ActivationError(f"the surrogate's moments need >= {min_tokens:,} tokens; the "
                              f"larger of the training and held-out ranges has {end - start:,} "
                              "(set data.held_out_tokens to a shared held-out block)")
    if start == 0:
        return training_moments(store, end)
    moments, source = ActivationMoments(), StoreSource(store, start, end)
    for a in range(0, source.n_tokens, SHARD_TOKENS):
        moments.update(source.read(a, min(a + SHARD_TOKENS, source.n_tokens)).numpy())
    return moments


def store_surrogate(store: str | os.PathLike, train: tuple[int, int], held_out: tuple[int, int],
                    *, kind: str = "gaussian", seed: int = 0,
                    min_tokens: int = MIN_MOMENT_TOKENS) -> SurrogateSource:
    """The surrogate of a group's training rows `train` = [start, end) of a store: as many
    tokens, moments from `surrogate_moments`, the elliptical kind reading those rows."""
    moments = surrogate_moments(store, train, held_out, min_tokens)
    real = StoreSource(store, *train) if kind == "elliptical" else None
    return SurrogateSource(moments, train[1] - train[0], kind=kind, seed=seed, real=real)


@dataclass(frozen=True)
class SurrogateSpec:
    """One group's surrogate sample, by what makes it: a store, its training rows `train` and
    held-out rows `held_out` ([start, end) each, `sweep.plan.data_ranges`), the kind, the
    sample's seed and the width d. Every null seed of the group trains on `open()`'s rows."""

    store: str
    train: tuple[int, int]
    held_out: tuple[int, int]
    kind: str = "gaussian"
    seed: int = 0
    d: int = 0

    def open(self) -> SurrogateSource:
        return store_surrogate(self.store, self.train, self.held_out, kind=self.kind,
                               seed=self.seed)


class Placed(TokenSource):
    """`base` ([N, d], e.g. a store's harvested rows) with rows [start, start + len(inner))
    read from `inner` instead: a pass's training range comes from the surrogate, its held-out
    range from the real rows. Slicing exactly either part returns that part's own source."""

    def __init__(self, base: TokenSource, start: int, inner: TokenSource):
        if inner.d != base.d or not 0 <= start <= start + inner.n_tokens <= base.n_tokens:
            raise ActivationError(f"a surrogate of [{inner.n_tokens}, {inner.d}] does not fit "
                                  f"rows {start}.. of [{base.n_tokens}, {base.d}]")
        self.base, self.start, self.inner = base, int(start), inner
        self.n_tokens, self.d = base.n_tokens, base.d
        self.random_access = base.random_access and inner.random_access

    def slice(self, start: int, end: int) -> TokenSource:
        a, b = self.start, self.start + self.inner.n_tokens
        if (start, end) == (a, b):
            return self.inner
        if end <= a or start >= b:
            return self.base.slice(start, end)
        return super().slice(start, end)

    def read(self, start: int, end: int) -> torch.Tensor:  # [end - start, d] float32
        a, b = self.start, self.start + self.inner.n_tokens
        parts = []
        for lo, hi, src, off in ((start, min(end, a), self.base, 0),
                                 (max(start, a), min(end, b), self.inner, a),
                                 (max(start, b), end, self.base, 0)):
            if hi > lo:
                parts.append(src.read(lo - off, hi - off))
        return torch.cat(parts) if len(parts) != 1 else parts[0]
