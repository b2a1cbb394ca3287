"""saefast.stats.equivalence: encoder matching, the shared criterion and activation correlation,
each checked against a direct dense computation, and as a report states them; the correlation
matchings kept in the matching cache (saefast.report.matchings), so a report recomputed for
another threshold solves none again."""

import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saefast.match import match_decoders
from saefast.runs.artifacts import LoadedSAE
from saefast.stats import correlation as corr
from saefast.stats import equivalence as eq


def random_codes(T, F, k, seed, dead=()):
    """k-sparse codes of T tokens over F features (some features never active), and the
    same activations as a dense [T, F] matrix."""
    g = np.random.default_rng(seed)
    live = np.setdiff1d(np.arange(F), dead)
    idx = np.stack([g.choice(live, k, replace=False) for _ in range(T)])  # [T, k]
    vals = g.exponential(1.0, (T, k)) * (g.random((T, k)) > 0.1)  # some kept values are 0
    dense = np.zeros((T, F))
    np.put_along_axis(dense, idx, vals, 1)
    return corr.Codes(torch.from_numpy(vals).float(), torch.from_numpy(idx), F), \
        dense.astype(np.float32).astype(np.float64)


def pearson(da, db):
    """[F_a, F_b] Pearson r of dense activations, 0 where a feature never varies."""
    za, zb = da - da.mean(0), db - db.mean(0)
    sa, sb = np.sqrt((za ** 2).mean(0)), np.sqrt((zb ** 2).mean(0))
    cov = za.T @ zb / da.shape[0]
    den = np.outer(sa, sb)
    return np.where(den > 0, cov / np.where(den > 0, den, 1), 0.0)


@pytest.fixture(scope="module")
def two_runs():
    a, da = random_codes(600, 40, 4, 1, dead=(3, 17))
    b, db = random_codes(600, 56, 5, 2, dead=(0,))
    return a, da, b, db


def test_correlations_from_sparse_codes_equal_the_dense_pearson(two_runs, monkeypatch):
    a, da, b, db = two_runs
    want = pearson(da, db)
    monkeypatch.setattr(corr, "BLOCK_ELEMS", 7 * b.F)  # several row blocks, one ragged
    np.testing.assert_allclose(corr.correlation_matrix(a, b), want, atol=1e-10)
    g = np.random.default_rng(0)
    ia, ib = g.permutation(a.F)[:30], g.permutation(b.F)[:30]
    np.testing.assert_allclose(corr.pair_correlations(a, b, ia, ib), want[ia, ib], atol=1e-10)
    rv, ri, cv, ci = corr.correlation_topk(a, b, 6)
    np.testing.assert_allclose(rv.numpy(), -np.sort(-want, 1)[:, :6], atol=1e-10)
    np.testing.assert_allclose(cv.numpy(), -np.sort(-want.T, 1)[:, :6], atol=1e-10)
    np.testing.assert_allclose(np.take_along_axis(want, ri.numpy(), 1), rv.numpy(), atol=1e-10)
    np.testing.assert_allclose(np.take_along_axis(want.T, ci.numpy(), 1), cv.numpy(), atol=1e-10)
    assert (corr.correlation_matrix(a, b)[[3, 17]] == 0).all()  # never active: r = 0


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("path", ["dense", "certified sparse"])
def test_the_correlation_matching_is_the_optimal_assignment(two_runs, flip, path, monkeypatch):
    a, da, b, db = two_runs
    if path != "dense":  # the certified solver on top-K candidates, rows recomputed as needed
        monkeypatch.setattr(corr, "DENSE_MAX", 0)
        monkeypatch.setattr(corr, "TOP_K", 3)
    if flip:
        a, da, b, db = b, db, a, da
    ia, ib, r, info = corr.correlation_matching(a, b)
    want = pearson(da, db)
    # among the features that fire (a never-firing one ties at r = 0 with everyone)
    fa, fb = np.flatnonzero(da.std(0) > 0), np.flatnonzero(db.std(0) > 0)
    assert len(fa) < a.F and len(fb) < b.F and info["firing"] == [len(fa), len(fb)]
    sub = want[np.ix_(fa, fb)]
    rows, cols = linear_sum_assignment(sub, maximize=True)
    assert r.sum() == pytest.approx(sub[rows, cols].sum(), abs=1e-9)
    np.testing.assert_allclose(r, want[ia, ib], atol=1e-10)
    assert set(ia) <= set(fa) and set(ib) <= set(fb)
    assert len(set(ia)) == len(ia) == len(set(ib)) == min(len(fa), len(fb))
    assert info["certified"] and info["gap_bound"] < 1e-9
    if path != "dense":
        assert info["k"] == 3 and info["edges"] < a.F * b.F  # it did not need every pair


_SAE = LoadedSAE.in_memory


def test_encoder_matching_and_the_shared_criterion_count_what_they_say():
    """Three runs sharing 20 of 32 features in decoder and encoder, and 6 more in the
    decoder only: the shared fraction at 0.9 is 20/32, the decoder one 26/32."""
    g = np.random.default_rng(4)
    d, F = 24, 32
    base_dec, base_enc = g.standard_normal((26, d)), g.standard_normal((26, d))
    saes = []
    for _ in range(3):
        dec = np.vstack([base_dec + 0.01 * g.standard_normal((26, d)), g.standard_normal((6, d))])
        enc = np.vstack([base_enc[:20] + 0.01 * g.standard_normal((20, d)),
                         g.standard_normal((12, d))])
        perm = g.permutation(F)
        saes.append(_SAE(torch.tensor(enc[perm], dtype=torch.float32),
                         torch.tensor(dec[perm], dtype=torch.float32), 4))
    pairs = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        m = match_decoders(saes[i].decoder, saes[j].decoder)
        pairs.append({"index_a": i, "index_b": j, "a_indices": m.rows.tolist(),
                      "b_indices": m.cols.tolist(), "all_cosines": m.cosines.tolist()})
    block = eq.encoder_block(saes, pairs, threshold=0.9)
    assert block["shared_fraction"]["0.9"]["estimate"] == pytest.approx(20 / 32)
    for p in pairs:  # per pair: the encoder cosine of exactly the decoder-matched rows
        ua = saes[p["index_a"]].encoder / saes[p["index_a"]].encoder.norm(dim=1, keepdim=True)
        ub = saes[p["index_b"]].encoder / saes[p["index_b"]].encoder.norm(dim=1, keepdim=True)
        direct = (ua[p["a_indices"]] * ub[p["b_indices"]]).sum(1).numpy()
        np.testing.assert_allclose(p["encoder"]["cosines"], direct, atol=1e-6)
        assert p["encoder"]["shared_count"] == 20
        own = match_decoders(saes[p["index_a"]].encoder, saes[p["index_b"]].encoder)
        assert p["encoder"]["matching"]["median"] == pytest.approx(np.median(own.cosines))
    assert eq.encoder_block([_SAE(saes[0].encoder, saes[0].decoder, 4), type(
        "NoEnc", (), {"encoder": None})()], pairs[:1], threshold=0.9) is None


@pytest.fixture(scope="module")
def swept(tmp_path_factory, corpus):
    """OUT of a sweep of three seeds of a 16-feature SAE on the tiny model, with its store
    (the group test_report_nulls.GROUP)."""
    from saefast.cli.main import main

    root = tmp_path_factory.mktemp("equivalence")
    rc = main(["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus",
               str(corpus), "--tokens", "800", "--features", "16", "--k", "2", "--epochs", "3",
               "--seeds", "3", "--out", str(root / "out"), "--cache-dir", str(root / "cache")])
    assert rc == 0
    return root / "out"


def _runs(out):
    return sorted(p for p in (out / "runs").iterdir() if not p.name.startswith("."))


def test_a_report_has_every_view_with_the_store_and_says_why_without(swept, tmp_path, capsys):
    from test_report_nulls import GROUP

    from saefast.cli.main import main

    rep = json.loads((swept / "reports" / GROUP / "stability.json").read_text())
    e = rep["summary"]["equivalence"]
    assert e["skipped"] == [] and e["activation"]["held_out_tokens"] == 80
    for p in rep["pairs"]:
        act = p["activation"]
        assert len(act["r"]) == p["n_matched_pairs"] and all(-1 <= r <= 1 for r in act["r"])
        assert 0 <= act["correlation_matching"]["agreement_with_decoder"] <= 1
    iv = e["activation"]["same_partner"]
    assert iv["ci"][0] <= iv["estimate"] <= iv["ci"][1]
    nf = e["activation"]["never_fire"]  # what r leaves out, counted and carried to summary.json
    assert nf["decoder_pairs_left_out"] == sum(p["activation"]["n_never_fire"] for p in rep["pairs"])
    (row,) = json.loads((swept / "summary.json").read_text())["groups"]
    assert row["equivalence"]["r_left_out"] == nf["decoder_pairs_left_out"]
    # each view beside its floor (stats.view_nulls), in summary.json, the terminal and the page
    floor, enc = e["activation"]["floor"], e["encoder"]["null"]
    assert row["equivalence"]["r_floor"] == floor["floor"]
    assert row["equivalence"]["encoder_excess"] == enc["cosine"]["excess_median"]
    assert floor["block_length"] == 4  # 80 held-out tokens: at least 20 blocks
    for p in rep["pairs"]:
        assert p["activation"]["floor"]["draws"] >= 1 and "floor_median" in p["encoder"]
    capsys.readouterr()
    assert main(["report", str(swept)]) == 0
    out = capsys.readouterr().out
    assert "the same feature from every side" in out and "each view against chance" in out
    html = (swept / "report.html").read_text()
    assert "Each view against chance" in html and "token-permutation floor" in html
    assert max(len(line) for line in out.splitlines()) <= 80
    assert main(["analyze", *map(str, _runs(swept)), "--out", str(tmp_path / "a")]) == 0
    e = json.loads((tmp_path / "a" / "stability.json").read_text())["summary"]["equivalence"]
    assert e["encoder"] is not None and e["activation"] is None
    assert any("--acts" in s for s in e["skipped"])


def test_a_report_for_another_threshold_solves_no_correlation_matching_again(swept, tmp_path,
                                                                             monkeypatch):
    """The exact matching on activation correlation goes through the matching cache like the
    decoder and encoder matchings (saefast.report.matchings): a report recomputed for another
    threshold solves none again, and what it reads back is what was solved."""
    from test_report_nulls import GROUP

    from saefast.match import cache as match_cache
    from saefast.match.cache import FOLDER, MatchingCache
    from saefast.report import files as reports
    from saefast.report import nulls as report_nulls

    runs = _runs(swept)
    store = report_nulls.store_of_runs(runs)
    solved = []
    real = corr.correlation_matching
    monkeypatch.setattr(corr, "correlation_matching", lambda a, b: solved.append(1) or real(a, b))
    cache = MatchingCache(tmp_path / "matchings")
    first = reports.group_report(runs, tmp_path / "t9", plots=False, acts=store, matchings=cache)
    assert len(solved) == 3  # one per pair, then kept
    kinds = len(list(cache.folder.glob("*.npz")))
    assert kinds == 3 * 3  # decoder, encoder and correlation matchings of 3 pairs

    def refuse(*args, **kwargs):
        raise AssertionError("matched again")

    monkeypatch.setattr(match_cache, "match_decoders", refuse)
    again = reports.group_report(runs, tmp_path / "t5", threshold=0.5, plots=False, acts=store,
                                 matchings=cache)
    assert len(solved) == 3 and len(list(cache.folder.glob("*.npz"))) == kinds
    assert again["summary"]["threshold"] == 0.5 and again["summary"]["equivalence"]["activation"]
    for p, q in zip(first["pairs"], again["pairs"]):
        assert p["activation"]["correlation_matching"] == q["activation"]["correlation_matching"]
    # the sweep's own report kept them in its cache too: the same numbers
    swept_pairs = json.loads((swept / "reports" / GROUP / "stability.json").read_text())["pairs"]
    assert len(list((swept / "reports" / FOLDER).glob("*.npz"))) == kinds
    for p, q in zip(swept_pairs, first["pairs"]):
        assert p["activation"]["correlation_matching"] == q["activation"]["correlation_matching"]


def planted_codes(T, F, dead, seed, k=6):
    """Three runs' codes of the same T held-out tokens: each feature f fires where a shared
    latent pattern does, with values varying per run, so matched features correlate; the
    features in dead[s] never fire in run s. Returns ([Codes], [dense [T, F]])."""
    g = np.random.default_rng(seed)
    on = g.random((T, F)) < 0.15  # [T, F] where each feature fires (shared)
    base = g.exponential(1.0, (T, F))
    codes, denses = [], []
    for s, off in enumerate(dead):
        dense = np.where(on, base * (1 + 0.3 * g.random((T, F))), 0.0)
        dense[:, list(off)] = 0.0
        top = np.argsort(-dense, axis=1, kind="stable")[:, :k]  # [T, k]
        vals = np.take_along_axis(dense, top, 1)
        dense = np.zeros_like(dense)
        np.put_along_axis(dense, top, vals, 1)  # what a k-sparse code keeps
        codes.append(corr.Codes(torch.from_numpy(vals).float(), torch.from_numpy(top), F))
        denses.append(dense.astype(np.float32).astype(np.float64))
    return codes, denses


def test_activation_r_leaves_out_never_firing_features_and_counts_them():
    """Issue 22: a feature that never fires on the held-out tokens has no r (zero variance);
    it used to enter as r = 0. Here most matched pairs have such a feature, so counting them
    as 0 would drag the median r from ~0.9 to 0: r's median, its interval over runs and its
    fraction above 0.5 are those of the pairs where both features fire, and the pairs left
    out are counted per pair, per run and pooled."""
    from scipy.stats import spearmanr

    from saefast.stats.agreement import agreement

    T, F = 800, 24
    dead = [set(range(9)), set(range(8, 17)), set(range(16, 24)) | {0}]
    codes, dense = planted_codes(T, F, dead, seed=5)
    g = np.random.default_rng(6)
    pairs = [{"index_a": i, "index_b": j, "a_indices": list(range(F)),
              "b_indices": list(range(F)), "all_cosines": g.random(F).tolist()}
             for i, j in ((0, 1), (0, 2), (1, 2))]  # matched feature f to feature f
    block = eq.activation_block(codes, pairs, source="planted")
    kept, everything = {}, {}
    for p in pairs:
        i, j = p["index_a"], p["index_b"]
        r = np.diag(pearson(dense[i], dense[j]))  # [F], 0 where a feature never fires
        fires = np.array([f not in dead[i] | dead[j] for f in range(F)])
        kept[i, j], everything[i, j] = r[fires], r
        act = p["activation"]
        np.testing.assert_allclose(act["r"], r, atol=1e-10)  # the list keeps its alignment
        assert act["median_r"] == pytest.approx(np.median(r[fires]))  # ~0.9, not 0
        assert act["n_never_fire"] == np.count_nonzero(~fires) > F / 2
        assert act["never_fire_positions"] == np.flatnonzero(~fires).tolist()
        rho = spearmanr(np.asarray(p["all_cosines"])[fires], r[fires])[0]
        p["rho"] = rho
    pooled = np.concatenate(list(kept.values()))
    med = block["decoder_pairs_r"]["median"]
    assert med["estimate"] == pytest.approx(np.median(pooled))
    assert np.median(pooled) > 0.8 and np.median(np.concatenate(list(everything.values()))) == 0
    # the interval: the delete-one-run jackknife of the kept r (S = 3: one pair left each time)
    reps = np.array([np.median(kept[1, 2]), np.median(kept[0, 2]), np.median(kept[0, 1])])
    assert med["se"] == pytest.approx(np.sqrt(2 / 3 * np.sum((reps - reps.mean()) ** 2)))
    assert block["decoder_pairs_r"]["fraction_above_0.5"]["estimate"] == \
        pytest.approx(np.mean(pooled >= 0.5))
    nf = block["never_fire"]
    assert nf["per_run"] == [len(d) for d in dead]
    assert nf["decoder_pairs"] == 3 * F
    assert nf["decoder_pairs_left_out"] == sum(p["activation"]["n_never_fire"] for p in pairs)
    assert "never fires" in block["method"]
    # the correlation matching's r: also only pairs where both features fire
    for p in pairs:
        cm = p["activation"]["correlation_matching"]
        ia, ib, r, _ = corr.correlation_matching(codes[p["index_a"]], codes[p["index_b"]])
        both = (codes[p["index_a"]].std[ia] > 0) & (codes[p["index_b"]].std[ib] > 0)
        assert cm["median_r"] == pytest.approx(np.median(r[both]))
        assert cm["n_never_fire"] == np.count_nonzero(~both)
    # the views' agreement ranks only the pairs that have an r
    agree = agreement(pairs, 3)["decoder~activation"]
    assert agree["estimate"] == pytest.approx(np.mean([p["rho"] for p in pairs]))


def test_above_twenty_pairs_the_views_use_each_run_with_the_next(tmp_path, monkeypatch):
    """At 20 seeds (190 pairs) the views would cost more than training at 16K features: past
    EQUIVALENCE_MAX_PAIRS they take the stated ring subset, and say so."""
    from planted_runs import make_run

    from saefast.report import files as reports

    runs = [make_run(tmp_path / "runs", f"s{i}", seed=i)[0] for i in range(1, 6)]  # 10 pairs
    monkeypatch.setattr(eq, "EQUIVALENCE_MAX_PAIRS", 6)
    rep = reports.analyze_runs(runs, tmp_path / "r", plots=False)
    e = rep["summary"]["equivalence"]
    assert e["pairs_used"] == {"n": 5, "of": 10, "rule": eq.SUBSET_RULE}
    with_view = sorted((p["index_a"], p["index_b"]) for p in rep["pairs"] if "encoder" in p)
    assert with_view == [(0, 1), (0, 4), (1, 2), (2, 3), (3, 4)]
    assert e["encoder"]["decoder_pairs"]["median"]["ci"] is not None  # every run still left out
    assert "agreement" in e
    monkeypatch.setattr(eq, "EQUIVALENCE_MAX_PAIRS", 10)
    rep = reports.analyze_runs(runs, tmp_path / "all", plots=False)
    assert rep["summary"]["equivalence"]["pairs_used"] == {"n": 10, "of": 10, "rule": None}
    assert all("encoder" in p for p in rep["pairs"])
