"""Surrogate activations for the trained null (saefast.data.surrogate): the mean and
covariance they promise, the elliptical kind's Mahalanobis norms and isotropic directions, rows
that do not depend on how they are read, no sparse structure, and training on them unchanged.

Every tolerance is a sampling error computed from the sample itself (Z standard errors, or a
chi-square quantile at the same level): a right implementation fails one of these seeded checks
with probability ~1e-8, a wrong mean, covariance or direction by far more than Z."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from saefast.config import SAEConfig, TrainConfig
from saefast.data import store as St
from saefast.data.moments import ActivationMoments
from saefast.data.surrogate import (
    CHUNK_ROWS,
    SurrogateSource,
    store_surrogate,
    surrogate_moments,
)
from saefast.data.windows import TensorSource, TokenSource, split
from saefast.errors import ActivationError, ConfigError
from saefast.train.trainer import TrainResult, train_saes

Z = 6.0  # standard errors a sampled statistic may stray
P_FAR = 2 * stats.norm.sf(Z)  # the same level for chi-square statistics
EPS32 = float(np.finfo(np.float32).eps)


def heavy_tailed(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    """[n, d] float32: an anisotropic Gaussian scale mixture (log-normal scales: heavy tails,
    outlier tokens) around a mean several standard deviations from 0."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((d, d)) * np.geomspace(3.0, 0.1, d)  # [d, d] spread spectrum
    scale = np.exp(0.5 * rng.standard_normal((n, 1)))  # [n, 1]
    return (scale * rng.standard_normal((n, d)) @ basis.T + rng.normal(0, 4, d)).astype(np.float32)


def planted_sparse(n: int, d: int = 16, n_atoms: int = 24, active: int = 2, seed: int = 0):
    """([n, d] float32, atoms [n_atoms, d]): each token a few strong unit atoms, little noise."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)  # [n_atoms, d]
    idx = np.stack([rng.choice(n_atoms, active, replace=False) for _ in range(n)])  # [n, active]
    coef = rng.uniform(1, 4, (n, active, 1))  # [n, active, 1]
    x = (coef * atoms[idx]).sum(1) + 0.05 * rng.standard_normal((n, d)) + 0.5  # [n, d]
    return x.astype(np.float32), atoms


def moments_of(x) -> ActivationMoments:
    return ActivationMoments().update(x)


def whitened(x, m: ActivationMoments) -> np.ndarray:
    """[n, d] rows whitened by the Cholesky factor of Σ (any whitener W, W Σ W^T = I, does)."""
    chol = np.linalg.cholesky(m.cov)  # [d, d] lower
    return np.linalg.solve(chol, (np.asarray(x, np.float64) - m.mean).T).T


def surrogate(kind: str, m: ActivationMoments, n: int, real=None, seed: int = 0):
    """A new source (what a resumed process opens); the elliptical kind reads `real` [n, d]."""
    real_src = None if kind == "gaussian" else TensorSource(torch.from_numpy(real))
    return SurrogateSource(m, n, kind=kind, seed=seed, real=real_src)


def surrogate_rows(kind: str, m: ActivationMoments, n: int, real=None) -> np.ndarray:
    return surrogate(kind, m, n, real).read(0, n).numpy()  # [n, d] float32


# ---------------------------------------------------------------------------- mean and covariance


def assert_second_moment(v: np.ndarray, target: np.ndarray, sd: np.ndarray) -> None:
    """The second moment about the true mean, (1/n) sum v v^T of whitened rows, is the target
    within Z of its standard errors (entry by entry)."""
    second = v.T @ v / len(v)  # [d, d]
    assert (np.abs(second - target) / sd).max() < Z


def test_gaussian_surrogate_has_the_mean_and_covariance_it_was_given():
    n, real = 150_000, heavy_tailed(40_000)
    m = moments_of(real)
    v = whitened(surrogate_rows("gaussian", m, n), m)  # [n, d] ~ N(0, I) if right
    d = v.shape[1]
    # the mean: n |mean|^2 ~ chi2(d)
    assert n * (v.mean(0) ** 2).sum() < stats.chi2.isf(P_FAR, d)
    # the covariance: Wishart entries, variance 1/n off the diagonal and 2/n on it
    sd = np.where(np.eye(d, dtype=bool), np.sqrt(2 / n), np.sqrt(1 / n))
    assert_second_moment(v, np.eye(d), sd)


def test_elliptical_surrogate_has_the_mean_and_covariance_of_its_real_tokens():
    n = 150_000
    real = heavy_tailed(n, seed=1)
    m = moments_of(real)
    v = whitened(surrogate_rows("elliptical", m, n, real), m)  # rows R_i u_i, u_i uniform
    r2 = (whitened(real, m) ** 2).sum(1)  # [n] the real rows' squared Mahalanobis norms
    d = v.shape[1]
    # sum R^2 = (n - 1) d: the surrogate's covariance is Σ up to the (n - 1) / n of its estimate
    assert r2.sum() == pytest.approx((n - 1) * d, rel=1e-9)
    # given the norms: the mean's covariance is sum R^2 / (d n^2) I
    assert (v.mean(0) ** 2).sum() / (r2.sum() / (d * n * n)) < stats.chi2.isf(P_FAR, d)
    # E[u_a^2 u_b^2] = 1 / (d (d + 2)), Var(u_a^2) = 3 / (d (d + 2)) - 1 / d^2
    off, diag = 1 / (d * (d + 2)), 3 / (d * (d + 2)) - 1 / d ** 2
    sd = np.sqrt(np.where(np.eye(d, dtype=bool), diag, off) * (r2 ** 2).sum()) / n
    assert_second_moment(v, np.eye(d) * r2.mean() / d, sd)


# ---------------------------------------------------------------------------- the elliptical kind


def test_elliptical_keeps_every_rows_mahalanobis_norm():
    real = heavy_tailed(20_000, seed=2)
    m = moments_of(real)
    y = surrogate_rows("elliptical", m, len(real), real)
    norm_real = np.linalg.norm(whitened(real, m), axis=1)
    norm_surr = np.linalg.norm(whitened(y, m), axis=1)
    # float32 rounding of y (half an ulp per coordinate) moves the norm by at most
    # |Σ^-1/2|_2 x |rounding| <= lambda_min^-1/2 x eps32 / 2 x |y|
    lam_min = np.linalg.eigvalsh(m.cov)[0]
    bound = EPS32 * np.linalg.norm(y, axis=1) / np.sqrt(lam_min) + 1e-9 * norm_real
    assert (np.abs(norm_surr - norm_real) <= bound).all()
    assert np.abs(norm_surr - norm_real).max() < 1e-3 * norm_real.mean()  # and tiny in fact


def test_elliptical_in_a_rank_deficient_sigma_keeps_the_norm_and_the_subspace():
    """Tokens in a 5-dimensional affine subspace of R^8: the floor treats the 3 empty
    directions as zero, so the surrogate stays in the subspace and keeps the norm there."""
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((8, 5))  # [d, 5]
    scale = np.exp(rng.standard_normal((20_000, 1)) / 2)  # [n, 1] heavy tails
    real = (scale * rng.standard_normal((20_000, 5)) @ basis.T + 3.0).astype(np.float32)
    m = moments_of(real)
    source = surrogate("elliptical", m, len(real), real)
    assert source.rank == 5
    y = source.read(0, len(real)).numpy().astype(np.float64)
    pinv = np.linalg.pinv(m.cov, rcond=1e-8, hermitian=True)  # [d, d]

    def norm(x):  # Mahalanobis norm through the pseudo-inverse
        return np.sqrt(np.einsum("nd,de,ne->n", x - m.mean, pinv, x - m.mean))

    assert np.allclose(norm(y), norm(real.astype(np.float64)), rtol=1e-4)
    outside = (y - m.mean) - (y - m.mean) @ basis @ np.linalg.pinv(basis)  # off the span
    assert np.abs(outside).max() < 1e-4 * np.abs(y - m.mean).max()


def test_elliptical_directions_are_isotropic_after_whitening():
    """Real sparse tokens have directions far from isotropic; their surrogate's whitened unit
    directions have mean 0 and second moment I/d within their sampling errors."""
    n = 100_000
    real, _ = planted_sparse(n, d=8, n_atoms=12)
    m = moments_of(real)
    d = real.shape[1]
    off = np.sqrt(1 / (n * d * (d + 2)))  # SD of (1/n) sum u_a u_b for uniform unit u
    diag = np.sqrt((3 / (d * (d + 2)) - 1 / d ** 2) / n)  # SD of (1/n) sum u_a^2
    sd = np.where(np.eye(d, dtype=bool), diag, off)

    def deviation(rows):  # (chi2 of the mean direction, largest |second moment - I/d| in SDs)
        u = whitened(rows, m)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        return n * d * (u.mean(0) ** 2).sum(), (np.abs(u.T @ u / n - np.eye(d) / d) / sd).max()

    chi2_real, second_real = deviation(real)
    chi2_surr, second_surr = deviation(surrogate_rows("elliptical", m, n, real))
    assert chi2_surr < stats.chi2.isf(P_FAR, d) and second_surr < Z
    assert max(chi2_real / stats.chi2.isf(P_FAR, d), second_real / Z) > 10  # the test can tell


# ---------------------------------------------------------------------------- no sparse structure


def fourth_moment_gap(kind: str, real: np.ndarray, m: ActivationMoments, directions: np.ndarray):
    """Per direction a: (surrogate's m4 - its expectation, real m4 - that expectation), in
    standard errors of the surrogate's m4, where m4 = mean(t^4) of t = a.(x - mu) / sqrt(a Σ a).

    gaussian: t ~ N(0, 1): E t^4 = 3, Var t^4 = 105 - 9. elliptical: t = R_i s_i with R_i the
    real rows' Mahalanobis norms and s a coordinate of a uniform unit vector in R^d:
    E s^4 = 3 / (d (d + 2)), E s^8 = 105 / (d (d + 2) (d + 4) (d + 6)); the same in every
    direction, whatever the real tokens do along it."""
    n, d = real.shape
    y = surrogate_rows(kind, m, n, real)
    scale = np.sqrt(np.einsum("ad,de,ae->a", directions, m.cov, directions))  # [A]
    t_real = (real - m.mean) @ directions.T / scale  # [n, A]
    t_surr = (y - m.mean) @ directions.T / scale
    if kind == "gaussian":
        expect, sd = 3.0, np.sqrt(96 / n)
    else:
        r = np.linalg.norm(whitened(real, m), axis=1)  # [n]
        s4, s8 = 3 / (d * (d + 2)), 105 / (d * (d + 2) * (d + 4) * (d + 6))
        expect, sd = (r ** 4).mean() * s4, np.sqrt((r ** 8).sum() * (s8 - s4 ** 2)) / n
    return ((t_surr ** 4).mean(0) - expect) / sd, ((t_real ** 4).mean(0) - expect) / sd


@pytest.mark.parametrize("kind", ["gaussian", "elliptical"])
def test_sparse_structure_is_gone_from_the_surrogate(kind):
    """Along its planted feature directions a sparse dataset is heavy-tailed (a feature is off
    most of the time, strong when on); its surrogate along the same directions is not."""
    real, atoms = planted_sparse(100_000, active=1)
    m = moments_of(real)
    gap_surr, gap_real = fourth_moment_gap(kind, real, m, atoms)
    assert np.abs(gap_surr).max() < Z
    assert gap_real.min() > 3 * Z  # every atom, even one close to others


# ---------------------------------------------------------------------------- deterministic rows


def pieces(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    out, start, i = [], 0, 0
    while start < n:
        out.append((start, min(n, start + sizes[i % len(sizes)])))
        start, i = out[-1][1], i + 1
    return out


@pytest.mark.parametrize("kind", ["gaussian", "elliptical"])
def test_rows_do_not_depend_on_how_they_are_read(kind):
    n = 3 * CHUNK_ROWS + 123
    real = heavy_tailed(n, seed=4)
    m = moments_of(real)

    def fresh(seed=0):
        return surrogate(kind, m, n, real, seed)

    whole = fresh().read(0, n)
    parts = pieces(n, [1, 7, CHUNK_ROWS - 1, CHUNK_ROWS + 1, 333, 2])
    one = fresh()  # one source read forward, one read backward, one in a random order
    assert torch.equal(torch.cat([one.read(a, b) for a, b in parts]), whole)
    two = fresh()
    assert torch.equal(torch.cat([two.read(a, b) for a, b in reversed(parts)][::-1]), whole)
    order = np.random.default_rng(0).permutation(len(parts))
    three, got = fresh(), {}
    for i in order:
        got[i] = three.read(*parts[i])
    assert torch.equal(torch.cat([got[i] for i in range(len(parts))]), whole)
    assert torch.equal(split(fresh(), 4000, 9000).read(500, 4100), whole[4500:8100])
    assert not torch.equal(fresh(seed=1).read(0, n), whole)


def test_a_source_checks_what_it_is_given():
    real = heavy_tailed(1000)
    m, src = moments_of(real), TensorSource(torch.from_numpy(real))
    with pytest.raises(ConfigError, match="kind"):
        SurrogateSource(m, 1000, kind="laplace")
    with pytest.raises(ConfigError, match="real tokens"):
        SurrogateSource(m, 1000, kind="elliptical")
    with pytest.raises(ActivationError, match="do not fit"):
        SurrogateSource(m, 999, kind="elliptical", real=src)
    with pytest.raises(ValueError, match="outside"):
        SurrogateSource(m, 1000).read(10, 1001)

    class Forward(TensorSource):  # a stream: read forward, its windows in order
        random_access = False

    source = SurrogateSource(m, 1000, kind="elliptical", real=Forward(torch.from_numpy(real)))
    assert isinstance(source, TokenSource) and not source.random_access
    assert (len(source), source.d) == (1000, 8) and SurrogateSource(m, 1000).random_access


# ---------------------------------------------------------------------------- moments from a store


def write_store(path, x: np.ndarray) -> None:
    writer = St.StoreWriter.open(path, {"hook": "h"})
    for a in range(0, len(x), 1000):
        writer.add(x[a:a + 1000], 1, len(x))


def test_surrogate_moments_come_from_the_larger_range(tmp_path, monkeypatch):
    monkeypatch.setattr(St, "SHARD_TOKENS", 1500)  # several shards
    x = heavy_tailed(6000, seed=5)
    write_store(tmp_path / "s", x)

    def check(train, held_out, rows):
        got = surrogate_moments(tmp_path / "s", train, held_out, min_tokens=1000)
        want = x[rows].astype(np.float64)
        assert got.n == len(want)
        assert np.allclose(got.mean, want.mean(0), rtol=1e-10, atol=1e-12)
        assert np.allclose(got.cov, np.cov(want, rowvar=False), rtol=1e-9, atol=1e-12)

    check((1000, 6000), (0, 1000), slice(1000, 6000))  # shared held-out block first, smaller
    check((3500, 5000), (0, 3500), slice(0, 3500))  # the held-out block is larger
    check((0, 5400), (5400, 6000), slice(0, 5400))  # the last fraction held out
    assert list(tmp_path.joinpath("s").glob("moments-n*.npz"))  # prefixes cached by the store
    with pytest.raises(ActivationError, match="20,000"):
        surrogate_moments(tmp_path / "s", (0, 5400), (5400, 6000))
    # a group's surrogate: its training rows' count, their norms under the larger range's Σ
    source = store_surrogate(tmp_path / "s", (2000, 6000), (0, 2000), kind="elliptical",
                             min_tokens=1000)
    m = surrogate_moments(tmp_path / "s", (2000, 6000), (0, 2000), min_tokens=1000)
    assert source.n_tokens == 4000 and source.moments_fingerprint == m.fingerprint()
    assert np.allclose(np.linalg.norm(whitened(source.read(0, 4000).numpy(), m), axis=1),
                       np.linalg.norm(whitened(x[2000:], m), axis=1), rtol=1e-4)


# ---------------------------------------------------------------------------- training reads it


def recovered(atoms: np.ndarray, result) -> float:
    """Share of the atoms with a decoder row at |cosine| > 0.9."""
    dec = torch.nn.functional.normalize(result.sae.W_dec.detach().double(), dim=1).numpy()
    return float((np.abs(atoms @ dec.T).max(1) > 0.9).mean())


def test_train_saes_trains_seeds_on_the_surrogate_unchanged(tmp_path):
    """Real sparse tokens: both seeds recover most planted atoms. Their surrogates, same
    recipe: both seeds train (and resume bitwise from a checkpoint), recover hardly any atom,
    and reconstruct worse (a sparse code has nothing sparse to find)."""
    real, atoms = planted_sparse(3000, active=1)
    m, n = moments_of(real), len(real)
    sae, cfg = SAEConfig(24, 1), TrainConfig(epochs=15, batch_size=128, lr=3e-3,
                                             shuffle_buffer=1000, checkpoint_every=2000)
    on_real = train_saes(torch.from_numpy(real), None, sae, cfg, [1, 2])
    assert all(recovered(atoms, r) >= 0.5 for r in on_real)
    worst_real_fvu = max(r.metrics["train"]["fvu"] for r in on_real)
    for kind in ("gaussian", "elliptical"):
        key = surrogate(kind, m, n, real, seed=7).fingerprint()
        on_null = train_saes(surrogate(kind, m, n, real, seed=7), None, sae, cfg, [1, 2],
                             data_key=key)
        assert all(isinstance(r, TrainResult) for r in on_null)
        assert not torch.equal(on_null[0].sae.W_dec, on_null[1].sae.W_dec)
        assert all(recovered(atoms, r) <= 0.1 for r in on_null)
        assert all(r.metrics["train"]["fvu"] > worst_real_fvu for r in on_null)
        ckpt = tmp_path / kind
        assert train_saes(surrogate(kind, m, n, real, seed=7), None, sae, cfg, [1, 2],
                          checkpoint_dir=ckpt, data_key=key, stop_after_steps=150) == []
        resumed = train_saes(surrogate(kind, m, n, real, seed=7), None, sae, cfg, [1, 2],
                             checkpoint_dir=ckpt, data_key=key)
        for a, b in zip(on_null, resumed):
            for name, value in a.sae.state_dict().items():
                assert torch.equal(value, b.sae.state_dict()[name]), (kind, name)
