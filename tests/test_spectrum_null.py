"""The spectrum-matched null (saefast.stats.spectrum_bands, spectrum_null, tail_fit,
spectrum_evidence): the band rule, the rotations within bands, per-feature p-values
conditional on a feature's place in the spectrum (uniform within spectral strata where the
pooled nearest-neighbour p-values are not), planted shared features, the tail fit against
held-out and independent draws, underpowered counts, and the shares at three band widths.
Planted data in d = 48: nothing is trained."""

import numpy as np
import pytest
from scipy import stats as sps

from saefast.stats import nulls, tail_fit
from saefast.stats import spectrum_bands as sb
from saefast.stats import spectrum_evidence as se
from saefast.stats import spectrum_null as sn

D = 48
PLATEAUS = np.repeat([1.0, 1 / 3, 1 / 9, 1 / 27], 12)  # 4 flat bands of 12: the exact case
ONE_OVER_K = 1.0 / np.arange(1, D + 1)  # a smooth spectrum: the merged top band is not flat


def _sigma(values, seed=0):
    """(Σ [D, D] with these eigenvalues in a random basis, F with rows z F^T ~ N(0, Σ))."""
    v, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((D, D)))
    return v @ np.diag(values) @ v.T, v * np.sqrt(values)


def _rows(f, n, rng):
    return (rng.standard_normal((n, D)) @ f.T).astype(np.float32)


# ---------------------------------------------------------------------------- bands


def test_bands_have_equal_log_width_and_at_least_8_directions():
    lam = np.exp(-np.linspace(0, 6, 64))  # log-linear: every bin holds ~7.4 directions
    for width in (sb.WIDTH / 2, sb.WIDTH, 2 * sb.WIDTH):
        for offset in (0.0, 0.3 * width, 0.9 * width):
            bands = sb.bands(lam, width, offset)
            assert np.array_equal(np.concatenate(bands), np.arange(64))  # contiguous, all
            assert all(b.size >= sb.MIN_DIMS for b in bands)
            bins = np.floor((np.log(lam[0]) - np.log(lam) + offset) / width)
            for upper, lower in zip(bands, bands[1:]):  # every boundary is a bin edge
                assert bins[upper[-1]] < bins[lower[0]]
            for b in bands[:-1]:  # merged only as far as needed: without its last bin < 8
                assert np.count_nonzero(bins[b] < bins[b[-1]]) < sb.MIN_DIMS
    # a wide flat spectrum gets one band per bin, each spanning at most the width in log λ
    wide = np.exp(-np.repeat(np.arange(5) * 0.5 + 0.25, 10))
    bands = sb.bands(wide, 0.5, 0.0)
    assert [b.size for b in bands] == [10] * 5


def test_the_floor_is_one_band_and_fewer_than_8_directions_are_one_band():
    lam = np.r_[ONE_OVER_K[:40], np.zeros(5), 1e-14 * np.ones(3)][::-1]
    lam = np.sort(lam)[::-1]
    bands = sb.bands(lam)
    assert np.array_equal(bands[-1], np.arange(40, 48))  # zeros and rounding noise together
    assert all(b.size >= sb.MIN_DIMS for b in bands[:-1])
    assert [b.size for b in sb.bands(ONE_OVER_K[:6])] == [6]


def test_the_offset_moves_the_edges():
    edges = {tuple(b[0] for b in sb.bands(ONE_OVER_K, sb.WIDTH, o))
             for o in np.linspace(0, sb.WIDTH, 9, endpoint=False)}
    assert len(edges) > 2


def test_the_band_rule_reads_the_eigenvalues_only():
    """The same spectrum in another basis, or scaled, gives the same bands."""
    cov_a, _ = _sigma(ONE_OVER_K, seed=1)
    cov_b, _ = _sigma(ONE_OVER_K, seed=2)
    a, b = sb.Spectrum.from_cov(cov_a), sb.Spectrum.from_cov(7.5 * cov_b)
    for off in (0.0, 0.4):
        assert [x.tolist() for x in a.bands(offset=off)] == \
            [x.tolist() for x in b.bands(offset=off)]
    with pytest.raises(ValueError):
        sb.bands(ONE_OVER_K[::-1])  # not descending: not eigenvalues in the rule's order


# ---------------------------------------------------------------------------- rotations


def test_a_rotation_keeps_each_rows_energy_per_band_and_the_gram_matrix():
    cov, f = _sigma(ONE_OVER_K)
    spec = sb.Spectrum.from_cov(cov)
    c = spec.coords(_rows(f, 30, np.random.default_rng(3))).astype(np.float64)
    bands = spec.bands(offset=0.2)
    r = sb.rotate(c, bands, np.random.default_rng(4))
    for b in bands:
        np.testing.assert_allclose((r[:, b] ** 2).sum(1), (c[:, b] ** 2).sum(1), rtol=1e-12)
        assert not np.allclose(r[:, b], c[:, b])  # but moved within it
    np.testing.assert_allclose(r @ r.T, c @ c.T, atol=1e-12)


def test_a_rotation_is_haar_within_a_band():
    """A fixed unit vector in a band of k directions lands uniformly on its sphere: its
    squared first coordinate is Beta(1/2, (k-1)/2); both orientations (det +-1) occur."""
    k, rng = 12, np.random.default_rng(5)
    e = np.zeros((1, k))
    e[0, 0] = 1.0
    band = [np.arange(k)]
    first = np.array([sb.rotate(e, band, rng)[0, 0] for _ in range(3000)])
    assert sps.kstest(first ** 2, sps.beta(0.5, (k - 1) / 2).cdf).pvalue > 0.01
    assert abs(first.mean()) < 4 / np.sqrt(3000 * k)
    dets = [np.sign(np.linalg.det(sb.haar(k, rng))) for _ in range(200)]
    assert 60 < dets.count(1.0) < 140


# ---------------------------------------------------------------------------- conditional p-values


def _strata_pvalues(values, pairs=6, n=64, draws=100):
    """Independent pairs of N(0, Σ) dictionaries (nothing shared): per feature, the
    conditional p-value, the pooled nearest-neighbour p-value (one null pooled over features,
    as evidence.py has it) and its energy in the top quarter of the spectrum."""
    cov, f = _sigma(values)
    spec = sb.Spectrum.from_cov(cov)
    rng = np.random.default_rng(6)
    pooled_null = np.sort(np.concatenate(
        [np.concatenate(sn.nearest(spec.coords(_rows(f, n, rng)), spec.coords(_rows(f, n, rng))))
         for _ in range(100)]))
    cond, pooled, top = [], [], []
    for p in range(pairs):
        a, b = _rows(f, n, rng), _rows(f, n, rng)
        got = sn.pair_pvalues(a, b, spec, n_draws=draws, seed=p, fit_tail=False)
        for side, x in (("a", a), ("b", b)):
            cond.append(got[side]["pvalues"])
            obs = got[f"observed_{side}"]
            pooled.append((1 + pooled_null.size - np.searchsorted(pooled_null, obs, "left"))
                          / (pooled_null.size + 1))
            top.append((spec.coords(x)[:, :D // 4].astype(np.float64) ** 2).sum(1))
    cond, pooled, top = map(np.concatenate, (cond, pooled, top))
    strata = np.searchsorted(np.quantile(top, [1 / 3, 2 / 3]), top)
    return cond, pooled, strata, spec


def test_conditional_pvalues_are_uniform_within_spectral_strata_where_pooled_ones_are_not():
    cond, pooled, strata, _ = _strata_pvalues(PLATEAUS)
    ks_cond = [sps.kstest(cond[strata == s], "uniform").pvalue for s in range(3)]
    ks_pool = [sps.kstest(pooled[strata == s], "uniform") for s in range(3)]
    assert min(ks_cond) > 1e-3, ks_cond
    # pooled: exact over all features, but features high in the spectrum get small p-values
    assert ks_pool[2].pvalue < 1e-4 and np.mean(pooled[strata == 2]) < 0.45
    assert ks_pool[0].pvalue < 1e-4 and np.mean(pooled[strata == 0]) > 0.55
    assert sps.kstest(pooled, "uniform").pvalue > 1e-3


def test_the_sphericity_diagnostic_flags_bands_whose_eigenvalues_the_rows_follow():
    """Exact where Σ is flat within bands (plateaus); under a smooth 1/k spectrum the top band
    (15 directions, eigenvalues 1 .. 1/15) is not flat, N(0, Σ) rows follow it, the rotated
    rows spread wider than the real ones and the conditional p-values come out too small:
    the per-band `spherical` diagnostic says so."""
    for values, exact in ((PLATEAUS, True), (ONE_OVER_K, False)):
        cov, f = _sigma(values)
        spec = sb.Spectrum.from_cov(cov)
        rows = spec.coords(_rows(f, 400, np.random.default_rng(8)))
        top = sb.describe(spec.bands(offset=0.1), spec.values, rows)[0]
        assert (top["spherical"] > 0.9) == exact, top
    cond, _, _, _ = _strata_pvalues(ONE_OVER_K, pairs=3)
    assert np.mean(cond) < 0.4  # anti-conservative there: what the diagnostic warns of


def test_planted_shared_features_get_small_pvalues_and_the_rest_do_not():
    cov, f = _sigma(PLATEAUS)
    spec = sb.Spectrum.from_cov(cov)
    rng = np.random.default_rng(9)
    a, b = _rows(f, 128, rng), _rows(f, 128, rng)
    noise = rng.standard_normal((16, D)) * np.linalg.norm(a[:16], axis=1, keepdims=True) * 0.15
    b[:16] = a[:16] + noise / np.sqrt(D)  # 16 shared features, cosine ~0.99
    got = sn.pair_pvalues(a, b, spec, n_draws=120, seed=1)
    for side in ("a", "b"):
        p = got[side]["pvalues"]
        assert np.all(p[:16] < 1e-8) and np.all(p[:16] > 0)  # below 1/(D+1): the tail
        assert got[side]["tail"][:16].all() and not got[side]["underpowered"].any()
        by = sps.false_discovery_control(p, method="by") <= 0.05
        assert by[:16].all() and by[16:].sum() <= 2
        assert sps.kstest(p[16:], "uniform").pvalue > 1e-3


# ---------------------------------------------------------------------------- the tail fit


def test_the_tail_fit_passes_its_check_and_agrees_with_independent_draws():
    cov, f = _sigma(PLATEAUS)
    spec = sb.Spectrum.from_cov(cov)
    rng = np.random.default_rng(10)
    a, b = _rows(f, 128, rng), _rows(f, 128, rng)
    ca, cb = spec.coords(a), spec.coords(b)
    null_a, _ = sn.null_maxima(ca, cb, spec, width=sb.WIDTH, n_draws=200, rng=rng)
    obs = np.quantile(null_a, 0.5, axis=0).astype(np.float32)  # placeholder observed values
    side = sn.side_pvalues(obs, null_a, spec.position(ca))
    assert side["checks"] and all(c["passed"] for c in side["checks"])
    # 2000 further draws: the fitted tail at their 99.5 % quantile, per stratum, within 2x
    more, _ = sn.null_maxima(ca, cb, spec, width=sb.WIDTH, n_draws=2000, rng=rng)
    fit = null_a[:150].astype(np.float64)  # the fit draws (the last 50 are held out)
    mean, sd = fit.mean(0), fit.std(0, ddof=1)
    strata = tail_fit.strata(spec.position(ca))
    for c in side["checks"]:
        cols = strata == c["stratum"]
        z = ((more[:, cols] - mean[cols]) / sd[cols]).ravel()
        t = np.quantile(z, 0.995)
        fitted = tail_fit.gev_sf(t, c["loc"], c["scale"], c["shape_k"])
        assert 0.5 < fitted / np.mean(z >= t) < 2.0, (c["stratum"], fitted)


def test_a_failed_check_marks_the_features_underpowered_never_zero():
    """A null the GEV cannot describe (two-valued maxima): the check fails, features beyond
    every draw keep the empirical floor 1/(D+1) and are counted underpowered."""
    rng = np.random.default_rng(11)
    n, draws = 128, 100
    null = (rng.random((draws, n)) < 0.2).astype(np.float32)
    obs = np.full(n, 0.5, dtype=np.float32)
    obs[:10] = 2.0  # beyond every draw
    side = sn.side_pvalues(obs, null, np.zeros(n))
    assert not any(c["passed"] for c in side["checks"])
    assert side["underpowered"][:10].all() and not side["underpowered"][10:].any()
    np.testing.assert_allclose(side["pvalues"][:10], 1 / (draws + 1))
    assert not side["tail"].any()


def test_gev_fit_recovers_a_known_law():
    k, loc, scale = 0.15, 0.3, 1.2
    x = sps.genextreme.rvs(k, loc=loc, scale=scale, size=20000,
                           random_state=np.random.default_rng(12))
    got = tail_fit.gev_fit(x)
    assert got == pytest.approx((loc, scale, k), abs=0.05)
    z = np.array([2.0, 4.0])
    np.testing.assert_allclose(tail_fit.gev_sf(z, loc, scale, k),
                               sps.genextreme.sf(z, k, loc=loc, scale=scale), rtol=1e-9)


# ---------------------------------------------------------------------------- the report's blocks


def test_the_evidence_block_has_shares_at_three_widths_and_finds_the_planted_share():
    cov, f = _sigma(PLATEAUS)
    rng = np.random.default_rng(13)
    shared = _rows(f, 32, rng)
    rows = []
    for _ in range(3):
        x = _rows(f, 64, rng)
        x[:32] = shared + 0.02 * np.linalg.norm(shared, axis=1, keepdims=True) * \
            rng.standard_normal((32, D)).astype(np.float32) / np.sqrt(D)
        rows.append(x)
    pairs = [{"index_a": i, "index_b": j} for i in range(3) for j in range(i + 1, 3)]
    ev = se.spectrum_evidence(pairs, rows, cov)
    assert set(ev["share_by_width"]) == {"half", "stated", "double"}
    assert ev["share_by_width"]["stated"] == ev["share_beyond_chance"]
    widths = {k: v["width"] for k, v in ev["share_by_width"].items()}
    assert widths["half"] * 2 == widths["stated"] == widths["double"] / 2
    for share in ev["share_by_width"].values():  # half the features are shared
        assert share["estimate"] == pytest.approx(0.5, abs=0.15)
    sig = ev["significance"]
    assert sig["n_matched"] == 3 * 2 * 64 and sig["n_significant_by"] >= 3 * 2 * 30
    assert all(set(p["significant_by_a"]) >= set(range(30)) for p in ev["pairs"])
    assert len(ev["pairs"][0]["pvalues_b"]) == 64 and ev["null"]["bands"]


def test_the_matched_summary_equals_the_covariance_null_where_the_null_is_exact():
    """Σ flat within bands and Gaussian rows: B rotated within the bands has B's law, so A
    matched with it is matched like two independent N(0, Σ) dictionaries."""
    cov, f = _sigma(PLATEAUS)
    spec = sb.Spectrum.from_cov(cov)
    rng = np.random.default_rng(14)
    pairs = [(_rows(f, 64, rng), _rows(f, 64, rng)) for _ in range(4)]
    got = sn.spectrum_matched_null(pairs, spec, n_draws=40)
    ref = nulls.covariance_null(cov, 64, 64, n_draws=40)
    assert got["kind"] == "spectrum" and len(got["cosines"]) == 40 * 64
    assert got["median_cosine"] == pytest.approx(ref["median_cosine"], abs=0.03)
    assert got["mean_cosine"] == pytest.approx(ref["mean_cosine"], abs=0.03)
    assert got["quantiles"]["0.99"] == pytest.approx(ref["quantiles"]["0.99"], abs=0.05)
    assert sn.pair_draws(16384, 16384) == sn.MIN_DRAWS and sn.pair_draws(64, 64) == sn.MAX_DRAWS


def test_summary_nulls_has_the_spectrum_kind_with_data_and_says_why_without():
    from saefast.data.moments import ActivationMoments
    from saefast.match import match_decoders
    from saefast.stats.null_summary import NullData, add_nulls

    cov, f = _sigma(PLATEAUS)
    rng = np.random.default_rng(15)
    rows = [_rows(f, 32, rng) for _ in range(3)]
    pairs = []
    for i in range(3):
        for j in range(i + 1, 3):
            m = match_decoders(rows[i], rows[j])
            pairs.append({"index_a": i, "index_b": j, "n_features_a": 32, "n_features_b": 32,
                          "all_cosines": m.cosines.tolist()})
    moments = ActivationMoments(D).update(_rows(f, 5000, rng))
    reasons = {"covariance": None, "activations": "skipped: no token ids"}
    for data, computed in ((NullData(moments, None, reasons, None, "k", {}), True),
                           (NullData(None, None, {"covariance": "skipped: no store",
                                                  "activations": "skipped: no store"},
                                     "no store", None, {}), False)):
        report = {"summary": {"d_model": D, "n_runs": 3}, "pairs": pairs}
        kind = add_nulls(report, data, spectrum_rows={"full": rows})["kinds"]["spectrum"]
        assert kind["skipped"] != computed
        if computed:
            assert kind["excess_median"]["ci"] and kind["pw_mcc"] == kind["mean_cosine"]
            assert sum(kind["histogram"]["counts"]) == kind["n_draws"] * 32
        else:
            assert kind["reason"] == "skipped: no store"
    assert se.spectrum_runs([128] * 5) == 5 and se.spectrum_runs([16384] * 20) == 3
