"""Same features, or only the same subspace (saefast.stats.subspace), with planted truth.

The overlap is checked against scipy.linalg.subspace_angles (1 for one span, r/d on average
for random ones), the firing weighting against an eigendecomposition of sum_i p_i u_i u_i^T;
then reports of planted run dirs with an activation store of N(0, Σ) rows (so the covariance
and activation nulls are there; `report.files.analyze_runs`, the one assembly): (e) rows in
the top-12 span of an anisotropic Σ (12: not on the ladder 8, 16, 32) sharing no feature are
"same subspace, not the same features"; 30 % planted shared features are "same features";
independent N(0, Σ) dictionaries are "nothing beyond chance"."""

import numpy as np
import pytest
from rich.console import Console
from scipy.linalg import subspace_angles

from saefast.data.store import StoreWriter
from saefast.report import files as reports
from saefast.report import html_groups
from saefast.stats import subspace as sub
from saefast.stats.null_model import covariance_null_model, isotropic_null_model

from planted_runs import write_rows

D, F, S, R = 64, 128, 5, 12
SHARED = 0.30


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _sigma(d=D):
    """(Σ [d, d], eigenvectors [d, d] by decreasing eigenvalue): eigenvalues k^-1/2 in a
    random basis (anisotropic, yet N(0, Σ) dictionaries do not all share one top-8 span)."""
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((d, d)))
    return q @ np.diag(np.arange(1, d + 1) ** -0.5) @ q.T, q


def _random_basis(rng, d, r):
    return np.linalg.qr(rng.standard_normal((d, r)))[0]


# ---------------------------------------------------------------------------- geometry


def test_overlap_is_the_mean_squared_cosine_of_the_principal_angles():
    rng = np.random.default_rng(0)
    for d, r in ((32, 8), (64, 12)):
        a, b = _random_basis(rng, d, r), _random_basis(rng, d, r)
        want = np.mean(np.cos(subspace_angles(a, b)) ** 2)
        assert sub.overlap(a, b, r) == pytest.approx(want, abs=1e-12)
        same = a @ np.linalg.qr(rng.standard_normal((r, r)))[0]  # another basis of span(a)
        assert sub.overlap(a, same, r) == pytest.approx(1.0, abs=1e-12)
    # random subspaces: r/d on average (E ||P_A P_B||_F^2 = r^2 / d)
    got = [sub.overlap(_random_basis(rng, 32, 8), _random_basis(rng, 32, 8), 8)
           for _ in range(400)]
    assert np.mean(got) == pytest.approx(8 / 32, abs=3 * np.std(got) / np.sqrt(400))


def test_top_subspace_of_rows_in_one_span_is_that_span_and_weighting_is_by_sqrt_rate():
    rng = np.random.default_rng(1)
    basis = _random_basis(rng, 48, 6)
    rows = rng.standard_normal((40, 6)) @ basis.T * rng.uniform(0.1, 5, (40, 1))  # any norms
    got = sub.top_subspace(rows, None, 6)
    assert sub.overlap(got, basis, 6) == pytest.approx(1.0, abs=1e-10)
    # frequent features in a 4-d span, rare ones everywhere: the weighted top-4 is the span
    span = _random_basis(rng, 32, 4)
    rows = np.vstack([rng.standard_normal((12, 4)) @ span.T, rng.standard_normal((60, 32))])
    rates = np.r_[np.full(12, 0.2), rng.uniform(0, 0.004, 60)]
    assert sub.overlap(sub.top_subspace(rows, rates, 4), span, 4) > 0.95
    assert sub.overlap(sub.top_subspace(rows, None, 4), span, 4) < 0.8  # unweighted: not
    u = _unit(rows)
    w, v = np.linalg.eigh((u * rates[:, None]).T @ u)  # sum_i p_i u_i u_i^T
    want = v[:, np.argsort(w)[::-1][:8]]
    assert sub.overlap(sub.top_subspace(rows, rates, 8), want, 8) == pytest.approx(1, abs=1e-9)
    # fewer rows than d, full rank (the [n, n] Gram's path) and rank 6 < r (the [d, d] one)
    for rows in (rng.standard_normal((30, 64)), rng.standard_normal((30, 6)) @ basis[:40].T):
        u = _unit(rows)
        got = sub.top_subspace(rows, None, 8)
        assert np.allclose(got.T @ got, np.eye(8), atol=1e-9)
        w, v = np.linalg.eigh(u.T @ u)
        k = 8 if np.linalg.matrix_rank(u) > 8 else 6  # beyond the rank: any completion
        assert sub.overlap(got[:, :k], v[:, ::-1][:, :k], k) == pytest.approx(1, abs=1e-9)


def test_the_rank_ladder_stops_at_half_the_smaller_side():
    assert sub.rank_ladder([128, 128], 64) == [8, 16, 32]
    assert sub.rank_ladder([128, 130], 48) == [8, 16, 24]
    assert sub.rank_ladder([20, 128], 64) == [8, 10]  # the fewest rows decide
    assert sub.rank_ladder([12], 64) == [6]
    assert sub.rank_ladder([1], 64) == []


def test_isotropic_null_overlap_is_r_over_d_and_weights_are_the_runs_own():
    sizes, rates = [100, 120], [np.linspace(0, 1, 100), None]
    got = sub.null_overlaps(isotropic_null_model(32), sizes, rates, [4, 8, 16], n_draws=200)
    for k, r in enumerate((4, 8, 16)):
        se = got[:, k].std() / np.sqrt(len(got))
        assert abs(got[:, k].mean() - r / 32) < 4 * se


def test_null_draws_of_runs_with_silent_features_draw_only_the_firing_rows():
    """A run whose features mostly never fire: its null dictionaries are drawn with only as
    many rows as fire (weights 0 add nothing to the Gram). Same distribution as drawing every
    row and weighting it with the rates permuted: the mean overlaps agree, while one top
    subspace with the silent rows in equals the one without them."""
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((100, 32))
    rates = np.r_[rng.uniform(0.01, 0.2, 12), np.zeros(88)]
    rng.shuffle(rates)
    firing = rates > 0
    full = sub.top_subspace(rows, rates, 6)
    assert sub.overlap(full, sub.top_subspace(rows[firing], rates[firing], 6), 6) == \
        pytest.approx(1, abs=1e-9)
    ranks = [2, 6]
    got = sub.null_overlaps(isotropic_null_model(32), [100, 100], [rates, rates], ranks,
                            n_draws=300, seed=1)
    draw = np.random.default_rng(9)
    ref = np.array([[sub.overlap(*(sub.top_subspace(draw.standard_normal((100, 32)),
                                                    draw.permutation(rates), max(ranks))
                                   for _ in range(2)), r) for r in ranks]
                    for _ in range(300)])
    for k in range(len(ranks)):
        se = np.hypot(got[:, k].std(), ref[:, k].std()) / np.sqrt(300)
        assert abs(got[:, k].mean() - ref[:, k].mean()) < 4 * se


def test_verdict_rule_on_one_block():
    sigma, q = _sigma()
    rng = np.random.default_rng(2)
    rows = [rng.standard_normal((F, R)) @ q[:, :R].T for _ in range(S)]
    models = [isotropic_null_model(D), covariance_null_model(sigma, "test")]
    none = {"estimate": 0.01, "ci": [-0.02, 0.04], "null": "dictionary"}
    block = sub.subspace_block(rows, [None] * S, models, share=none)
    assert [row["r"] for row in block["ranks"]] == [8, 16, 32]
    assert block["verdict"]["label"] == sub.SAME_SUBSPACE
    assert block["unweighted_runs"] == [str(i) for i in range(S)]
    assert all(row["nulls"]["isotropic"]["mean"] == pytest.approx(row["random"], abs=0.03)
               for row in block["ranks"])
    same = sub.verdict({"estimate": 0.3, "ci": [0.2, 0.4]}, block)
    assert same["label"] == sub.SAME_FEATURES
    assert sub.verdict({"estimate": 0.03, "ci": [0.01, 0.05]}, block)["label"] == sub.SAME_SUBSPACE
    # a share whose interval clears 0 but below what planted nulls reach (gemma python-docs:
    # 0.05 [0.03, 0.08] vs the trained null) is stated beside the verdict, not claimed as it
    small = sub.verdict({"estimate": 0.05, "ci": [0.03, 0.08], "null": "trained"}, block)
    assert small["label"] == sub.SAME_SUBSPACE
    assert "feature share 0.05 [0.03, 0.08] beyond chance, below the 0.10" in small["text"]
    assert "feature share" not in block["verdict"]["text"]  # its interval includes 0
    assert block["verdict"]["note"] is None and block["verdict"]["judged_by"] == \
        ["isotropic", "covariance"]
    alone = sub.subspace_block(rows, [None] * S, models[:1], share=none)["verdict"]
    assert alone["label"] == sub.SAME_SUBSPACE and "isotropic null only" in alone["text"]
    assert "no data-shaped null" in alone["note"]
    unsure = sub.verdict({"estimate": 0.3, "ci": None}, block)
    assert unsure["label"] is None and "fewer than 3 runs" in unsure["reason"]
    # a null that draws rows in the runs' own span explains the overlap: nothing beyond it
    inside = covariance_null_model(q[:, :R] @ q[:, :R].T + 1e-9 * np.eye(D), "span")
    block = sub.subspace_block(rows, [None] * S, [inside], share=none)
    assert not any(row["beyond_all"] for row in block["ranks"])
    assert block["verdict"]["label"] == sub.NOTHING


# ---------------------------------------------------------------------------- planted reports


def _store(root, sigma, n=20_000):
    """An activation store of n rows ~ N(0, Σ), each its own token id."""
    rows = np.random.default_rng(3).standard_normal((n, len(sigma))) @ np.linalg.cholesky(sigma).T
    w = StoreWriter.open(root, {"hook": "planted"})
    w.add(rows.astype(np.float32), 1, n, token_ids=np.arange(n))
    return root


def _report(tmp_path, kind, **kw):
    """A report of S runs of F features: 'span' (unit rows in the top-R span of Σ, the first
    shared_share * F of them one set shared by every run, + noise), or 'gaussian' (N(0, Σ))."""
    sigma, q = _sigma()
    n_shared = int(round(kw.pop("shared_share", 0.0) * F))
    basis = q[:, :R]
    common = _unit(np.random.default_rng(99).standard_normal((n_shared, R)) @ basis.T)
    runs = []
    for s in range(S):
        rng = np.random.default_rng(1000 + s)
        if kind == "gaussian":
            rows = rng.standard_normal((F, D)) @ np.linalg.cholesky(sigma).T
        else:
            own = _unit(rng.standard_normal((F - n_shared, R)) @ basis.T)
            noisy = _unit(common + 0.05 / np.sqrt(D) * rng.standard_normal(common.shape))
            rows = np.vstack([noisy, own])[rng.permutation(F)]
        # live-only: one feature dead in the first run, or the live-only report is the full one
        dead = (0,) if kw.get("live_only") and s == 0 else ()
        runs.append(write_rows(tmp_path / "runs", f"run{s}", rows, seed=s, dead=dead))
    store = _store(tmp_path / "store", sigma)
    return reports.analyze_runs(runs, tmp_path / "report", plots=False, acts=store, **kw)


def test_e_one_span_no_shared_feature_is_the_same_subspace_not_the_same_features(tmp_path):
    rep = _report(tmp_path, "span", live_only=True)
    block = rep["summary"]["subspace"]
    v = block["verdict"]
    assert v["label"] == sub.SAME_SUBSPACE, v["text"]
    assert v["share"]["null"] == "dictionary" and v["share"]["estimate"] < sub.MIN_SHARE
    assert set(block["nulls"]) == {"isotropic", "covariance", "activations", "dictionary"}
    assert block["nulls"]["dictionary"]["vetoes"] is False
    best = next(row for row in block["ranks"] if row["r"] == v["rank"])
    assert best["beyond_all"] and best["overlap"]["ci"][0] > best["nulls"]["covariance"]["mean"]
    # the dictionary-covariance null explains the shared span: not beyond it, yet no veto
    assert not best["nulls"]["dictionary"]["beyond"]
    assert "jackknife" in best["overlap"]["method"] and "sqrt(firing" in block["method"]
    live = rep["live_only"]["summary"]["subspace"]
    assert live["verdict"]["label"] == sub.SAME_SUBSPACE
    # the terminal line and the page's table
    console = Console(record=True, width=200)
    from saefast.cli.tables import print_report
    print_report(console, rep, "stability")
    text = console.export_text()
    assert f"subspace: {v['text']}" in text and "same subspace, not the same features" in text
    page = html_groups.group_section("g", ["g"], rep, None, {})
    assert "Subspace" in page and v["text"] in page.replace("&#x27;", "'")


def test_thirty_percent_shared_features_are_the_same_features(tmp_path):
    v = _report(tmp_path, "span", shared_share=SHARED)["summary"]["subspace"]["verdict"]
    assert v["label"] == sub.SAME_FEATURES, v["text"]
    assert v["share"]["estimate"] == pytest.approx(SHARED, abs=0.1)


def test_independent_gaussian_dictionaries_are_nothing_beyond_chance(tmp_path):
    block = _report(tmp_path, "gaussian")["summary"]["subspace"]
    assert block["verdict"]["label"] == sub.NOTHING, block["verdict"]["text"]
    # beyond the isotropic null at every rank (Σ is anisotropic), never beyond Σ's own
    assert all(row["nulls"]["isotropic"]["beyond"] for row in block["ranks"])
    assert not any(row["nulls"]["covariance"]["beyond"] for row in block["ranks"])


def test_two_runs_have_no_interval_and_no_verdict_and_the_share_is_the_headlines():
    rng = np.random.default_rng(4)
    rows = [rng.standard_normal((40, 32)) for _ in range(2)]
    block = sub.subspace_block(rows, [None, rng.uniform(0, 1, 40)], [isotropic_null_model(32)],
                               share={"estimate": 0.4, "ci": None})
    assert [row["r"] for row in block["ranks"]] == [8, 16]
    assert all(row["overlap"]["ci"] is None and row["beyond_all"] is None
               for row in block["ranks"])
    assert block["verdict"]["label"] is None and block["unweighted_runs"] == ["0"]
    head = {"null": "dictionary", "share": {"estimate": 0.1, "ci": [0.0, 0.2]}}
    assert sub.headline_share({"headline": head}) == {"estimate": 0.1, "ci": [0.0, 0.2],
                                                      "null": "dictionary"}
    assert sub.headline_share({"headline": {"null": None, "share": None}}) is None
