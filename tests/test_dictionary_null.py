"""The dictionary-covariance null (saefast.stats.dictionary_null), with planted truth.

Σ_D is checked against an independent computation; then reports of planted run dirs
(`report.files.analyze_runs`, the one assembly): (a) dictionaries that share no feature but
whose rows are independent unit vectors uniform in the span of the top r = 6 directions of an
anisotropic Σ (d = 64) are beyond the isotropic null almost everywhere and beyond this null
nowhere; (b) with 30 % of the features planted shared, the share beyond this null is 0.30; (c)
isotropic dictionaries: this null's median is the isotropic null's, within noise. Adding it
leaves every other null's numbers as they were."""

import numpy as np
import pytest

from saefast.report import assemble
from saefast.report import files as reports
from saefast.stats import dictionary_null as dn
from saefast.stats import null_summary, nulls

from planted_runs import write_rows

D, R, F, S = 64, 6, 128, 5  # 5 runs: with 3 the share moves by +-0.1 between planted seeds
SHARED = 0.30


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _top_directions(r=R, d=D):
    """[d, r]: the top-r eigenvectors of an anisotropic Σ (eigenvalues 1/k in a random basis)."""
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((d, d)))
    w, v = np.linalg.eigh(q @ np.diag(1.0 / np.arange(1, d + 1)) @ q.T)
    return v[:, np.argsort(w)[::-1][:r]]


def _in_span(rng, n, basis):
    """n independent unit rows uniform on the unit sphere of span(basis) ([d, r] orthonormal)."""
    return _unit(rng.standard_normal((n, basis.shape[1])) @ basis.T)


def _runs(root, shared_share=0.0, *, isotropic=False, runs=S, d=D):
    """Run dirs of F features; the first shared_share * F rows are one set of unit rows in
    every run (plus noise of norm ~0.05, so cosines ~0.999), the rest independent per run;
    rows in the span of `_top_directions`, or isotropic."""
    basis = None if isotropic else _top_directions(d=d)
    n_shared = int(round(shared_share * F))
    common = _in_span(np.random.default_rng(99), n_shared, basis) if n_shared else np.empty((0, d))
    out = []
    for s in range(runs):
        rng = np.random.default_rng(1000 + s)
        own = (_unit(rng.standard_normal((F - n_shared, d))) if isotropic
               else _in_span(rng, F - n_shared, basis))
        noisy = _unit(common + 0.05 / np.sqrt(d) * rng.standard_normal(common.shape))
        rows = np.vstack([noisy, own])[rng.permutation(F)]
        out.append(write_rows(root, f"run{s}", rows, seed=s))
    return out


def _report(tmp_path, **kw):
    runs = _runs(tmp_path / "runs", **kw)
    return reports.analyze_runs(runs, tmp_path / "report", plots=False), runs


def _beyond(rep, kind):
    b = rep["summary"]["evidence"]["by_null"][kind]
    assert not b["skipped"]
    return b["share_beyond_chance"]["estimate"], b["significance"]["n_significant_by"]


# ---------------------------------------------------------------------------- Σ_D


def test_sigma_d_is_the_mean_of_each_runs_unit_row_second_moment_and_pairs_deviate_as_stated():
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal((40, 12)) * rng.uniform(0.1, 3.0, (40, 1)),
            rng.standard_normal((25, 12)) @ np.diag(np.linspace(0.2, 2.0, 12)),
            np.vstack([rng.standard_normal((30, 12)), np.zeros((2, 12))])]  # zero rows: left out
    got = dn.dictionary_covariance(rows)
    units = [_unit(r[np.linalg.norm(r, axis=1) > 0]) for r in rows]
    per_run = [np.einsum("ni,nj->ij", u, u) / len(u) for u in units]
    want = sum(per_run) / 3
    np.testing.assert_allclose(got.cov, want, rtol=1e-12, atol=1e-15)
    assert np.trace(got.cov) == pytest.approx(1.0) and got.rows == (40, 25, 30)
    dev = [np.linalg.norm((per_run[a] + per_run[b]) / 2 - want) / np.linalg.norm(want)
           for a, b in ((0, 1), (0, 2), (1, 2))]
    assert got.pair_deviation["max"] == pytest.approx(max(dev), rel=1e-9)
    assert got.pair_deviation["median"] == pytest.approx(np.median(dev), rel=1e-9)
    assert got.key == dn.dictionary_covariance([r.copy() for r in rows]).key  # by content


def test_the_null_draws_rows_in_the_dictionaries_subspace():
    basis = _top_directions()
    rng = np.random.default_rng(1)
    dcov = dn.dictionary_covariance([_in_span(rng, F, basis) for _ in range(S)])
    model = dn.dictionary_null_model(dcov)
    a, b = model.sample([50, 60], np.random.default_rng(2))
    for x in (a, b):
        x = x.astype(np.float64)
        outside = x - (x @ basis) @ basis.T  # the part outside span(basis)
        assert np.linalg.norm(outside) / np.linalg.norm(x) < 1e-5
    assert model.name == "dictionary" and "decoders" in model.description


# ---------------------------------------------------------------------------- planted reports


@pytest.fixture(scope="module")
def unshared(tmp_path_factory):
    return _report(tmp_path_factory.mktemp("unshared"))


def test_a_same_subspace_no_shared_feature_is_chance_under_the_dictionary_null(unshared):
    rep, _ = unshared
    iso_share, _ = _beyond(rep, "isotropic")
    share, n_by = _beyond(rep, "dictionary")
    assert iso_share >= 0.9  # the isotropic null calls nearly every feature recurring
    assert share <= 0.10 and n_by == 0
    kind = rep["summary"]["nulls"]["kinds"]["dictionary"]
    assert not kind["skipped"] and kind["n_runs"] == S and kind["rows_per_run"] == [F] * S
    assert kind["effective_rank"] == pytest.approx(R, rel=0.1)  # Σ_D: the 6-d span
    # the observed median sits within the null's spread: no excess beyond its interval
    ex = kind["excess_median"]
    assert ex["ci"][0] <= 0.02 and "jackknife" in ex["method"] and "Σ_D" in kind["method"]


def test_the_summary_and_the_evidence_read_one_set_of_draws(unshared):
    rep, _ = unshared
    kind = rep["summary"]["nulls"]["kinds"]["dictionary"]
    (shape,) = rep["summary"]["evidence"]["by_null"]["dictionary"]["null"]["shapes"]
    assert shape["n_cosines"] == kind["n_draws"] * kind["n_per_draw"]
    assert shape["median"] == kind["median_cosine"]
    assert kind["excess_median"]["estimate"] == pytest.approx(
        rep["summary"]["global_median"] - kind["median_cosine"])


def test_adding_it_leaves_the_isotropic_evidence_bitwise_the_same(unshared):
    rep, runs = unshared
    alone = assemble.compute_stability_report(runs)  # the original study's: no dictionary null
    assert "dictionary" not in alone["summary"]["evidence"]["by_null"]
    assert alone["summary"]["evidence"]["by_null"]["isotropic"] == \
        rep["summary"]["evidence"]["by_null"]["isotropic"]
    assert [p["pvalues"] for p in alone["pairs"]] == [p["pvalues"] for p in rep["pairs"]]


def test_b_thirty_percent_shared_is_thirty_percent_beyond_the_dictionary_null(tmp_path):
    rep, _ = _report(tmp_path, shared_share=SHARED)
    share, n_by = _beyond(rep, "dictionary")
    assert share == pytest.approx(SHARED, abs=0.08)
    assert n_by > 0  # the shared features are found, pair by pair


def _tight_frames(root, runs=5, d=32):
    """Isotropic dictionaries whose second moment is exactly I / d: each run's F rows are
    F / d random orthonormal bases with random signs (a tight frame)."""
    out = []
    for s in range(runs):
        rng = np.random.default_rng(2000 + s)
        bases = [np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(F // d)]
        rows = np.vstack(bases) * rng.choice([-1.0, 1.0], (F, 1))
        out.append(write_rows(root, f"run{s}", rows[rng.permutation(F)], seed=s))
    return out


def _se(k):  # standard error of a pooled median from the spread of the per-draw medians
    return k["draw_median_spread"]["std"] / np.sqrt(k["n_draws"])


def test_c_for_isotropic_dictionaries_it_is_the_isotropic_null(tmp_path):
    """Σ_D = I / d exactly (tight frames): the null's rows are the isotropic null's normals
    in a rotated basis, so its matched cosines, and its median, are the isotropic null's."""
    runs = _tight_frames(tmp_path / "runs")
    kinds = reports.analyze_runs(runs, tmp_path / "r", plots=False)["summary"]["nulls"]["kinds"]
    iso, dic = kinds["isotropic"], kinds["dictionary"]
    assert dic["effective_rank"] == pytest.approx(32, rel=1e-9)
    assert abs(dic["median_cosine"] - iso["median_cosine"]) <= 3 * np.hypot(_se(iso), _se(dic))
    assert dic["pair_deviation"]["max"] < 1e-6  # every run's own Σ is Σ_D (float32 rows)


def test_c_random_isotropic_rows_give_the_sampling_rank_and_a_conservative_null(tmp_path):
    """Random isotropic rows: Σ_D's effective rank is the sampling prediction d N / (N + d - 1)
    (independent: E tr(Σ^2) of N unit rows), and the null is above the isotropic one, never
    below it (both null dictionaries share Σ_D's sampling anisotropy)."""
    rep, _ = _report(tmp_path, isotropic=True, runs=5, d=32)
    kinds = rep["summary"]["nulls"]["kinds"]
    iso, dic = kinds["isotropic"], kinds["dictionary"]
    n = 5 * F
    assert dic["isotropic_rank"] == pytest.approx(32 * n / (n + 32 - 1), rel=1e-12)
    assert dic["effective_rank"] == pytest.approx(dic["isotropic_rank"], rel=0.02)
    assert dic["median_cosine"] >= iso["median_cosine"] - 3 * np.hypot(_se(iso), _se(dic))
    share, n_by = _beyond(rep, "dictionary")
    assert share <= 0.10 and n_by == 0  # nothing shared: nothing beyond it


def test_live_only_reports_draw_from_their_live_rows(tmp_path):
    basis = _top_directions()
    rng = np.random.default_rng(7)
    runs, all_rows = [], []
    for s in range(S):
        rows = _in_span(rng, F, basis)
        rows[:8] = _unit(rng.standard_normal((8, D)))  # dead features outside the span
        all_rows.append(rows.astype(np.float32).astype(np.float64))  # as stored
        runs.append(write_rows(tmp_path / "runs", f"run{s}", rows, seed=s, dead=range(8)))
    rep = reports.analyze_runs(runs, tmp_path / "report", plots=False, live_only=True)
    full = rep["summary"]["nulls"]["kinds"]["dictionary"]
    live = rep["live_only"]["summary"]["nulls"]["kinds"]["dictionary"]
    assert live["rows_per_run"] == [F - 8] * S and full["rows_per_run"] == [F] * S
    for got, first in ((full, 0), (live, 8)):
        sigma = sum(_unit(r[first:]).T @ _unit(r[first:]) / (F - first) for r in all_rows) / S
        assert got["effective_rank"] == pytest.approx(nulls.effective_rank(sigma), rel=1e-6)
    assert live["effective_rank"] == pytest.approx(R, rel=0.1)
    assert live["effective_rank"] < full["effective_rank"]  # dead rows outside the span
    assert "dictionary" in rep["live_only"]["summary"]["evidence"]["by_null"]


def test_null_summary_without_a_dictionary_keeps_its_three_kinds(unshared):
    rep, _ = unshared
    data = null_summary.NullData(None, None, {"covariance": "x", "activations": "x"}, "x",
                                 None, {})
    again = {"pairs": rep["pairs"], "summary": dict(rep["summary"])}
    assert list(null_summary.add_nulls(again, data)["kinds"]) == list(null_summary.KINDS)
