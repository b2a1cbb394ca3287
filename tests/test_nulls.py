"""saefast.stats.nulls: activation moments, and the isotropic / covariance / activation nulls."""

import json

import numpy as np
import pytest
import torch
from scipy import stats as sstats

from saefast.data import moments
from saefast.data.moments import ActivationMoments, TokenPool
from saefast.errors import ActivationError, ConfigError, SaefastError
from saefast.stats import nulls
from saefast.stats.matched import random_baseline

N_F, D = 64, 32  # small shapes: 64 x 64 features in d = 32


def _rel_err(got, want):
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _data(n=1000, d=D, offset=50.0, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d))
    return (rng.standard_normal((n, d)) @ mix + offset).astype(np.float32)  # large mean


def _low_rank_cov(rank=4, d=D, seed=0):
    """Exactly rank-deficient Σ (eigenvalues 1 x rank, 0 x rest) in a random basis."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q[:, :rank] @ q[:, :rank].T


# ------------------------------------------------------------------ moments


@pytest.mark.parametrize("sizes", [[1000], [1, 999], [7] * 142 + [6], [500, 0, 500], [333, 667]])
def test_moments_match_numpy_cov_for_any_batching(sizes):
    x = _data()
    m = ActivationMoments()
    for part in np.split(x, np.cumsum(sizes)[:-1]):
        m.update(part)
    x64 = x.astype(np.float64)
    assert m.n == 1000 and m.d == D
    assert _rel_err(m.cov, np.cov(x64, rowvar=False)) < 1e-10
    assert _rel_err(m.mean, x64.mean(axis=0)) < 1e-12
    assert np.array_equal(m.cov, m.cov.T)


def test_moments_accept_torch_and_merge_equals_one_stream(monkeypatch):
    monkeypatch.setattr(moments, "_CHUNK_ROWS", 64)  # exercise the chunked path
    x = _data(seed=1)
    whole = ActivationMoments().update(torch.from_numpy(x))
    parts = [ActivationMoments().update(p) for p in np.array_split(x, [10, 400, 401])]
    merged = ActivationMoments()
    for p in parts:
        merged.merge(p)
    merged.merge(ActivationMoments())  # an empty one changes nothing
    want = np.cov(x.astype(np.float64), rowvar=False)
    for m in (whole, merged):
        assert m.n == 1000 and _rel_err(m.cov, want) < 1e-10


def test_moments_round_trip_json_and_arrays_exactly():
    m = ActivationMoments().update(_data(n=50))
    for rec in (json.loads(json.dumps(m.to_dict())), m.to_dict(arrays=True)):
        back = ActivationMoments.from_dict(rec)
        assert back.n == m.n and np.array_equal(back.cov, m.cov)
        assert np.array_equal(back.mean, m.mean) and back.fingerprint() == m.fingerprint()
    assert ActivationMoments.from_dict(ActivationMoments(D).to_dict()).n == 0


def test_moments_errors_are_user_errors():
    m = ActivationMoments().update(np.ones((1, D), np.float32))
    with pytest.raises(ActivationError, match=">= 2"):
        m.cov
    with pytest.raises(ActivationError, match="d=8"):
        m.update(np.ones((3, 8)))
    bad = np.ones((3, D))
    bad[1, 2] = np.nan
    with pytest.raises(ActivationError, match="NaN"):
        m.update(bad)
    with pytest.raises(ConfigError):
        ActivationMoments.from_dict({"format": "other"})
    with pytest.raises(ConfigError):
        ActivationMoments.from_dict({**m.to_dict(), "m2": [[1.0]]})


# ------------------------------------------------------------------ isotropic and covariance


def test_draws_for_pools_ten_thousand_cosines():
    assert nulls.draws_for(64, 64) == 157 and nulls.draws_for(128, 256) == 79
    assert nulls.draws_for(16384, 16384) == nulls.MIN_DRAWS
    with pytest.raises(ConfigError):
        nulls.draws_for(0, 4)


def test_isotropic_null_is_random_baseline_plus_quantiles():
    iso = nulls.isotropic_null(N_F, 48, D, seed=3, n_draws=5)
    base = random_baseline(N_F, 48, D, seed=3, n_draws=5)
    for k in ("median_cosine", "mean_cosine", "max_cosine", "fraction_above", "cosines",
              "n_per_draw", "solver"):
        assert iso[k] == base[k]
    q = iso["quantiles"]
    assert iso["median_cosine"] < q["0.95"] <= q["0.99"] <= q["0.999"] <= iso["max_cosine"]
    spread = iso["draw_median_spread"]
    assert spread["min"] <= iso["median_cosine"] <= spread["max"] and len(iso["draw_medians"]) == 5


def test_covariance_null_with_identity_is_the_isotropic_null():
    # Same key: the same normals (common random numbers) and F = I, so the same cosines.
    cov = nulls.covariance_null(np.eye(D), N_F, N_F, seed=1, n_draws=20)
    assert cov["cosines"] == nulls.isotropic_null(N_F, N_F, D, seed=1, n_draws=20)["cosines"]
    # Independent seeds: the same distribution. Per-draw medians are i.i.d. across draws, so
    # KS on them is valid; pooled cosines of one draw are dependent (KS there is a looser check).
    cov = nulls.covariance_null(np.eye(D) * 7.5, N_F, N_F, seed=11)
    iso = nulls.isotropic_null(N_F, N_F, D, seed=12)
    assert sstats.ks_2samp(cov["draw_medians"], iso["draw_medians"]).pvalue > 0.01
    assert sstats.ks_2samp(cov["cosines"], iso["cosines"]).pvalue > 0.01
    se = np.hypot(cov["draw_median_spread"]["std"], iso["draw_median_spread"]["std"])
    assert abs(cov["median_cosine"] - iso["median_cosine"]) < 4 * se / np.sqrt(cov["n_draws"])


def test_low_rank_covariance_null_is_far_above_isotropic():
    sigma = _low_rank_cov(rank=4)  # rank-deficient: eigh gives tiny negatives, clipped
    assert nulls.effective_rank(sigma) == pytest.approx(4.0)
    cov = nulls.covariance_null(sigma, N_F, N_F)
    iso = nulls.isotropic_null(N_F, N_F, D)
    # 64 x 64 in d=32: isotropic median 0.37, rank 4 0.89 (per-draw medians: std 0.01, 0.02)
    assert cov["median_cosine"] > iso["quantiles"]["0.999"]
    assert cov["draw_median_spread"]["min"] > iso["draw_median_spread"]["max"] + 0.2
    assert cov["effective_rank"] == pytest.approx(4.0)


def test_covariance_factor_reproduces_sigma_and_rejects_bad_input():
    sigma = _low_rank_cov(rank=4) * 3.0
    f = nulls.covariance_factor(sigma)
    assert np.allclose(f @ f.T, sigma / (np.trace(sigma) / D), atol=1e-12)
    assert np.array_equal(nulls.covariance_factor(np.eye(D)), np.eye(D))
    for bad in (np.ones((3, 4)), np.zeros((D, D)), np.full((D, D), np.inf)):
        with pytest.raises(ActivationError):
            nulls.covariance_null(bad, 8, 8, n_draws=2)


def test_nulls_are_deterministic_memoised_and_keyed_by_data():
    sigma = _low_rank_cov(rank=8, seed=2)
    first = nulls.covariance_null(sigma, 32, 40, seed=5, n_draws=4)
    assert nulls.covariance_null(sigma.copy(), 32, 40, seed=5, n_draws=4) is first  # memo
    nulls._NULL_CACHE.clear()
    again = nulls.covariance_null(sigma, 32, 40, seed=5, n_draws=4)
    assert again is not first and again["cosines"] == first["cosines"]  # deterministic
    assert nulls.covariance_null(sigma, 32, 40, seed=6, n_draws=4)["cosines"] != first["cosines"]
    other = _low_rank_cov(rank=8, seed=3)  # another hook's Σ, same shapes: its own null
    assert nulls.covariance_null(other, 32, 40, seed=5, n_draws=4)["fingerprint"] != \
        first["fingerprint"]
    named = nulls.covariance_null(other, 32, 40, seed=5, n_draws=4, key="store/hook")
    assert named["fingerprint"] == "store/hook" and named["cosines"] != first["cosines"]
    m = ActivationMoments().update(_data(n=200))
    assert nulls.covariance_null(m, 32, 40, n_draws=2)["median_cosine"] == \
        nulls.covariance_null(m.cov, 32, 40, n_draws=2)["median_cosine"]


# ------------------------------------------------------------------ activation-sampled


def _duplicated_pool(n_ids=300, copies=5, seed=0):
    """Each token id's vectors are nearly identical (as near the embedding)."""
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((n_ids, D))  # [n_ids, D]
    ids = np.repeat(np.arange(n_ids) * 7 + 3, copies)  # [N], non-contiguous ids
    acts = np.repeat(proto, copies, axis=0) + 1e-3 * rng.standard_normal((ids.size, D))
    perm = rng.permutation(ids.size)
    return acts[perm].astype(np.float32), ids[perm]


def test_activation_null_never_uses_one_token_twice():
    acts, ids = _duplicated_pool()
    pool = TokenPool(acts, torch.from_numpy(ids))
    rng = np.random.default_rng(0)
    seen_rows = set()
    for _ in range(200):
        idx = pool.sample_rows(2 * N_F, rng)
        assert np.unique(ids[idx]).size == idx.size  # distinct ids across A and B
        seen_rows.update(idx.tolist())
    assert len(seen_rows) > 0.9 * ids.size  # every copy of an id can be chosen
    res = nulls.activation_null(pool, N_F, N_F, n_draws=20)
    # a duplicated id across A and B would match at ~1; distinct ids never do
    assert not res["skipped"] and res["max_cosine"] < 0.95 and res["distinct_tokens"] == 300
    assert np.allclose(pool.rows(np.arange(ids.size)).mean(axis=0), 0, atol=1e-5)  # centred


def test_activation_null_skips_with_too_few_distinct_tokens():
    acts, ids = _duplicated_pool(n_ids=100, copies=3)
    res = nulls.activation_null(TokenPool(acts, ids), N_F, N_F)
    assert res["skipped"] and res["median_cosine"] is None and res["cosines"] == []
    assert "only 100 distinct tokens for 128 features" in res["reason"]
    with pytest.raises(SaefastError, match="only 100 distinct tokens"):
        TokenPool(acts, ids).sample_rows(101, np.random.default_rng(0))


def test_activation_null_is_deterministic_and_keyed_by_pool():
    acts, ids = _duplicated_pool(seed=4)
    a = nulls.activation_null(TokenPool(acts, ids), 40, 40, seed=2, n_draws=3)
    nulls._NULL_CACHE.clear()
    b = nulls.activation_null(TokenPool(acts, ids), 40, 40, seed=2, n_draws=3)
    assert a["cosines"] == b["cosines"] and a["fingerprint"] == b["fingerprint"]
    c = nulls.activation_null(TokenPool(acts * 2, ids), 40, 40, seed=2, n_draws=3)
    assert c["fingerprint"] != a["fingerprint"]
    with pytest.raises(ActivationError):
        TokenPool(acts, ids[:-1])


def test_nulls_dispatch_and_check_d():
    m = ActivationMoments().update(_data(n=300))
    acts, ids = _duplicated_pool()
    out = nulls.nulls(16, 16, D, moments=m, pool=TokenPool(acts, ids), n_draws=2)
    assert set(out) == {"isotropic", "covariance", "activations"}
    assert all(r["n_draws"] == 2 and r["d"] == D for r in out.values())
    with pytest.raises(ConfigError, match="d=32"):
        nulls.nulls(16, 16, 16, moments=m)


@pytest.mark.slow
def test_issue_number_rank_32_in_d_384():
    """Issue 11: 128 x 128 in d=384, median 0.12 isotropic and ~0.41 at effective rank 32."""
    iso = nulls.isotropic_null(128, 128, 384)
    sigma = np.diag(np.r_[np.ones(32), np.zeros(352)])  # 32 equal eigenvalues
    cov = nulls.covariance_null(sigma, 128, 128)
    assert iso["median_cosine"] == pytest.approx(0.122, abs=0.005)
    assert cov["median_cosine"] == pytest.approx(0.41, abs=0.01)


def test_null_sizes_above_1024_fall_on_a_grid_that_few_shapes_share():
    """Live-only pairs each have their own shape: at 20 seeds x 16K features drawing every
    one was hours. Above SIZE_EXACT_MAX the nulls draw at sizes within 2.2 % of the run's."""
    from saefast.stats.null_model import SIZE_EXACT_MAX, null_size

    assert [null_size(n) for n in (1, 128, 512, SIZE_EXACT_MAX)] == [1, 128, 512, 1024]
    assert null_size(2048) == 2048 and null_size(16384) == 16384  # powers of 2 stay
    sizes = np.arange(SIZE_EXACT_MAX + 1, 70000)
    grid = np.array([null_size(n) for n in sizes])
    assert np.all(np.abs(grid / sizes - 1) <= 0.022) and np.all(np.diff(grid) >= 0)
    live = np.random.default_rng(0).integers(14500, 16000, 20)  # 20 runs' live counts
    assert len({null_size(n) for n in live}) <= 3
