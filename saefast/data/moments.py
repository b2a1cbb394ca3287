"""What the data-shaped nulls need to know about activations, computed where the activations
are: `ActivationMoments` (streaming float64 mean and centred covariance, merged blockwise with
Chan et al.'s pairwise formula) and `TokenPool` (activation vectors grouped by distinct token
id). The store and the streamed pass fill them; `saefast.stats.nulls` draws from them."""

from __future__ import annotations

import hashlib

import numpy as np

from saefast.errors import ActivationError, ConfigError

_CHUNK_ROWS = 1 << 16  # ActivationMoments: rows per float64 block (bounds the copy's memory)
MOMENTS_FORMAT = "saefast.activation_moments/1"


def as_float_array(x, name: str) -> np.ndarray:
    """A torch tensor or array-like as a numpy array (no copy when already numpy)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ActivationError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def check_finite(x: np.ndarray, name: str) -> None:
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
        x = as_float_array(x, "activations")
        if x.ndim != 2:
            raise ActivationError(f"activations must be 2-D [n, d], got shape {x.shape}")
        if self.d is None:
            self.d = int(x.shape[1])
        if x.shape[1] != self.d:
            raise ActivationError(f"activations have d={x.shape[1]}, the moments d={self.d}")
        for start in range(0, x.shape[0], _CHUNK_ROWS):
            block = x[start:start + _CHUNK_ROWS].astype(np.float64)  # [b, d]
            check_finite(block, "activations")
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


class TokenPool:
    """Activations grouped by token id, one group per distinct id: what the activation null
    samples from. acts [N, d], token_ids [N] (any 1-D array np.unique can sort: ids, or a
    dedup key). `mean`: subtracted from every row; default the mean of acts (pass the
    training mean, e.g. ActivationMoments.mean, when acts is a subsample)."""

    def __init__(self, acts, token_ids, mean=None):
        x = as_float_array(acts, "activations")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ActivationError(f"activations must be 2-D [N, d] with N >= 1, got {x.shape}")
        ids = np.asarray(token_ids.detach().cpu() if hasattr(token_ids, "detach") else token_ids)
        if ids.shape != (x.shape[0],):
            raise ActivationError(f"token_ids must be [N] = [{x.shape[0]}], got {ids.shape}")
        check_finite(x, "activations")
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
