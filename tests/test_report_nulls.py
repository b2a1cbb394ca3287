"""The data-shaped nulls in every report (their data read by saefast.report.nulls, the summary's
block computed by saefast.stats.null_summary): the store keeps token ids and
caches the training moments, a sweep's reports carry all three nulls with their quantiles and
the excess over each with its interval over runs, analyze needs --acts for the data-shaped
ones, an old store without token ids skips only the activation null, and a changed null
setting is recomputed rather than reused. On the tiny random model (no files, no network)."""

import json
import os
import shutil

import numpy as np
import pytest
from scipy import stats as sps

from saefast.cli.main import main
from saefast.data import store as St
from saefast.report import cells
from saefast.report import files as reports
from saefast.report import nulls as report_nulls
from saefast.stats import nulls

GROUP = "L1-f16-k2-t800"
KINDS = ["isotropic", "covariance", "activations", "dictionary"]  # dictionary: no data needed


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, corpus):
    """Three seeds of a 16-feature SAE on 800 tokens of the tiny model (720 train tokens)."""
    root = tmp_path_factory.mktemp("sweep")
    rc = main(["sweep", "--model", "tiny", "--hook", "blocks.1.hook_resid_pre", "--corpus",
               str(corpus), "--tokens", "800", "--features", "16", "--k", "2", "--epochs", "3",
               "--seeds", "3", "--out", str(root / "out"), "--cache-dir", str(root / "cache")])
    assert rc == 0
    runs = sorted((root / "out" / "runs").iterdir())
    (store,) = list((root / "cache" / "activations").iterdir())
    return root, runs, store


def _report(path):
    return json.loads((path / "stability.json").read_text())


def test_identity_covariance_null_has_the_isotropic_distribution():
    """Σ = Q I Q^T for a random rotation Q: the covariance null's draws differ from the
    isotropic null's (another basis), its distribution must not."""
    d, n = 48, 32
    q, _ = np.linalg.qr(np.random.default_rng(7).standard_normal((d, d)))  # [d, d] orthogonal
    cov = q @ np.diag(np.full(d, 2.5)) @ q.T
    iso = nulls.isotropic_null(n, n, d)
    rot = nulls.covariance_null(cov, n, n)
    assert iso["cosines"] != rot["cosines"]  # not the same draws...
    assert sps.ks_2samp(iso["cosines"], rot["cosines"]).pvalue > 0.01  # ...one distribution
    spread = 3 * iso["draw_median_spread"]["std"] / np.sqrt(iso["n_draws"])
    assert abs(rot["median_cosine"] - iso["median_cosine"]) < spread
    for q_ in ("0.95", "0.99"):
        assert rot["quantiles"][q_] == pytest.approx(iso["quantiles"][q_], abs=0.02)
    assert rot["effective_rank"] == pytest.approx(d)


def test_the_store_keeps_the_token_id_of_every_row(sweep):
    from saefast.data import harvest as H
    from saefast.data import models

    root, _, store = sweep
    meta = St.store_info(store)
    assert meta["layout"] == St.LAYOUT_VERSION
    assert all((store / s["token_ids"]).is_file() for s in meta["shards"])
    ids = St.load_token_ids(store, meta["n_tokens"])
    # the ids are the corpus's packed tokens without the model's special tokens, in order
    lm, info = models.load_model("tiny", "cpu")
    framing = models.model_framing(lm)
    chunks = H.iter_chunks(meta["corpus"], framing.encode, H.content_length(framing, info, 128))
    want = np.concatenate(H.chunk_token_ids(list(chunks), framing, True))[:meta["n_tokens"]]
    assert ids.dtype == np.int64 and np.array_equal(ids, want)
    assert len(np.unique(ids)) > 32  # enough distinct tokens for 16 + 16 features


def test_training_moments_are_the_covariance_of_the_training_rows_and_cached(sweep):
    _, _, store = sweep
    acts = St.load_activations(store, 720).numpy().astype(np.float64)  # [720, d]
    m = St.training_moments(store, 720)
    np.testing.assert_allclose(m.cov, np.cov(acts, rowvar=False), rtol=1e-9, atol=1e-9)
    (cached,) = store.glob("moments-n720-*.npz")  # the sweep's report computed it already
    mtime = cached.stat().st_mtime_ns
    again = St.training_moments(store, 720)
    assert cached.stat().st_mtime_ns == mtime and np.array_equal(again.cov, m.cov)
    # another number of rows (e.g. a longer harvest's budget) is another file, not this one
    St.training_moments(store, 800)
    assert len(list(store.glob("moments-n800-*.npz"))) == 1
    assert St.rows_key(store, 720) != St.rows_key(store, 800)


def test_a_sweep_report_carries_all_three_nulls_with_quantiles_and_excess(sweep):
    root, runs, store = sweep
    rep = _report(root / "out" / "reports" / GROUP)
    n = rep["summary"]["nulls"]
    assert n["shape"] == {"n_a": 16, "n_b": 16, "d": rep["summary"]["d_model"]}
    assert n["data"]["store"] == str(store.resolve()) and n["data"]["n_rows"] == 720
    # the trained null (tests/test_trained_null.py) follows, skipped: 720 rows are too few for Σ
    assert n["note"] is None and list(n["kinds"]) == [*KINDS, "trained"]
    assert n["kinds"]["trained"]["skipped"] and "20,000 tokens" in n["kinds"]["trained"]["reason"]
    observed = rep["summary"]["global_median"]
    for kind in KINDS:
        k = n["kinds"][kind]
        assert not k["skipped"] and k["n_draws"] >= 2 and "cosines" not in k
        q = k["quantiles"]
        assert k["median_cosine"] <= q["0.95"] <= q["0.99"] <= q["0.999"] <= k["max_cosine"]
        spread = k["draw_median_spread"]
        assert spread["min"] <= k["median_cosine"] <= spread["max"]
        assert sum(k["histogram"]["counts"]) == k["n_draws"] * k["n_per_draw"]
        ex = k["excess_median"]
        assert ex["estimate"] == pytest.approx(observed - k["median_cosine"])
        assert ex["ci"][0] <= ex["estimate"] <= ex["ci"][1] and ex["level"] == 0.9
        assert "jackknife" in ex["method"]
    # data-shaped nulls of this store: Σ of the training rows, distinct tokens of them
    assert n["kinds"]["covariance"]["effective_rank"] < rep["summary"]["d_model"]
    assert n["kinds"]["activations"]["distinct_tokens"] >= 32
    # the isotropic baseline's existing keys stay as they were
    assert set(rep["summary"]["baseline"]) >= {"median_cosine", "cosines", "n_draws"}
    row = json.loads((root / "out" / "summary.json").read_text())["groups"][0]
    assert row["null_medians"]["covariance"] == n["kinds"]["covariance"]["median_cosine"]
    assert row["excess"]["covariance"]["ci"] == n["kinds"]["covariance"]["excess_median"]["ci"]


def test_the_evidence_is_judged_under_every_null_of_the_store(sweep):
    """Per-feature significance, the share beyond chance and the seed-count curve exist under
    the covariance and activation nulls too, each against its own null statistics."""
    root, _, _ = sweep
    rep = _report(root / "out" / "reports" / GROUP)
    by = rep["summary"]["evidence"]["by_null"]
    assert list(by) == KINDS  # the spectrum-matched null is asked for (analyze --spectrum-null)
    for kind in KINDS:
        b = by[kind]
        assert not b["skipped"] and b["null"]["kind"] == kind
        assert b["significance"]["n_matched"] == 3 * 16
        share = b["share_beyond_chance"]
        assert -1 <= share["estimate"] <= 1 and share["ci"][0] <= share["estimate"] <= share["ci"][1]
        curves = b["seed_count_curve"]
        assert curves["beyond_chance"]["curve"]
        distinct = rep["summary"]["nulls"]["data"]["distinct_tokens"]
        if kind == "activations" and distinct < 3 * 16:  # three null runs need 48 tokens
            assert f"{distinct} distinct tokens" in curves["null_reason"]
        else:
            assert curves["null_beyond_chance"]["curve"]
        assert b["null"]["shapes"][0]["n_a"] == 16
        summary_null = rep["summary"]["nulls"]["kinds"][kind]  # one set of draws for both
        assert b["null"]["shapes"][0]["n_cosines"] == summary_null["n_draws"] * 16
        assert b["null"]["shapes"][0]["median"] == summary_null["median_cosine"]
    # data-shaped nulls sit closer to trained decoders than the isotropic one does
    assert by["covariance"]["nearest_null"]["nearest_median"] > \
        by["isotropic"]["nearest_null"]["nearest_median"]
    row = json.loads((root / "out" / "summary.json").read_text())["groups"][0]
    assert row["beyond_chance"]["covariance"]["share"] == by["covariance"][
        "share_beyond_chance"]["estimate"]


def _with_dead(runs, root, dead):
    """Copies of the runs with the features in `dead` marked dead in the first one, so the
    live-only report differs from the full one."""
    out = []
    for i, run in enumerate(runs):
        dst = root / run.name
        shutil.copytree(run, dst)
        if i == 0:
            path = dst / "feature_analysis.json"
            fa = json.loads(path.read_text())
            for f in fa["features"]:
                if f["feature_index"] in dead:
                    f["dead"], f["fire_count"] = True, 0
            path.write_text(json.dumps(fa))
        out.append(dst)
    return out


def test_the_live_only_report_has_its_own_nulls_at_the_live_shape(sweep, tmp_path):
    _, runs, store = sweep
    runs = _with_dead(runs, tmp_path / "runs", dead={0, 1})
    rep = reports.analyze_runs(runs, tmp_path / "a", plots=False, live_only=True, acts=store)
    live = rep["live_only"]
    n = live["summary"]["nulls"]
    sides = np.array([sorted((p["live_features_a"], p["live_features_b"])) for p in live["pairs"]])
    assert (n["shape"]["n_a"], n["shape"]["n_b"]) == tuple(
        int(round(float(np.median(sides[:, c])))) for c in (0, 1))
    assert "live-feature counts" in n["method"] and n["n_pairs_with_this_shape"] == 3
    for kind in KINDS:
        k = n["kinds"][kind]
        assert not k["skipped"] and k["n_a"] == n["shape"]["n_a"]
        assert k["excess_median"]["estimate"] == pytest.approx(
            live["summary"]["global_median"] - k["median_cosine"])
    assert list(live["summary"]["evidence"]["by_null"]) == KINDS
    assert {p["live_features_a"] for p in live["pairs"] if p["index_a"] == 0} == {14}  # no dead


def test_with_no_dead_feature_the_live_only_report_is_not_computed_twice(sweep, tmp_path):
    _, runs, store = sweep
    rep = reports.analyze_runs(runs, tmp_path / "a", plots=False, live_only=True, acts=store)
    assert rep["live_only"] is None and "no run has a dead feature" in \
        rep["summary"]["live_only_note"]
    assert rep["summary"]["evidence"]["headline"] is not None  # the full report is whole


def test_the_sweep_table_shows_the_excess_over_the_covariance_null(sweep, capsys):
    root, _, _ = sweep
    assert main(["report", str(root / "out")]) == 0
    out = capsys.readouterr().out
    ex = _report(root / "out" / "reports" / GROUP)["summary"]["nulls"]["kinds"]["covariance"]
    assert "against the nulls" in out and "over cov" in out
    assert "features recurring beyond chance" in out  # the share per null
    dic = _report(root / "out" / "reports" / GROUP)["summary"]["nulls"]["kinds"]["dictionary"]
    assert "against the dictionary null" in out and "over dict" in out
    assert cells.excess_cell(dic["excess_median"]) in out
    assert f"{ex['excess_median']['estimate']:+.2f}".replace("0.", ".") in out
    assert max(len(line) for line in out.splitlines()) <= 80  # the tables fit 80 columns


def test_analyze_without_a_store_has_the_isotropic_null_and_says_why(sweep, tmp_path, capsys):
    _, runs, _ = sweep
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    n = _report(tmp_path / "a")["summary"]["nulls"]
    assert not n["kinds"]["isotropic"]["skipped"]
    assert n["kinds"]["covariance"]["skipped"] and n["kinds"]["activations"]["skipped"]
    assert "--acts" in n["note"] and "--acts" in n["kinds"]["covariance"]["reason"]
    (line,) = [x for x in out.splitlines() if x.startswith("not computed:")]
    assert "--acts" in line


def test_analyze_with_acts_has_all_three_nulls(sweep, tmp_path, capsys):
    root, runs, store = sweep
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a"), "--acts",
                 str(store)]) == 0
    out = capsys.readouterr().out
    n = _report(tmp_path / "a")["summary"]["nulls"]
    assert [k for k in KINDS if not n["kinds"][k]["skipped"]] == KINDS
    assert "covariance null: median" in out and "activations null: median" in out
    # the same numbers as the sweep's own report of these runs
    swept = _report(root / "out" / "reports" / GROUP)["summary"]["nulls"]
    assert n["kinds"]["covariance"]["median_cosine"] == swept["kinds"]["covariance"]["median_cosine"]


def test_acts_of_another_hook_is_refused_in_one_line(sweep, tmp_path, capsys):
    _, runs, store = sweep
    other = tmp_path / "other"
    shutil.copytree(store, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["hook"] = "blocks.0.hook_resid_pre"
    (other / "meta.json").write_text(json.dumps(meta))
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "a"), "--acts",
                 str(other)]) == 2
    err = capsys.readouterr().err
    assert "hook" in err and "blocks.0.hook_resid_pre" in err
    assert not (tmp_path / "a").exists()


def _old_store(store, where):
    """A copy of `store` as written before token ids existed (store layout 1)."""
    shutil.copytree(store, where)
    meta = json.loads((where / "meta.json").read_text())
    for shard in meta["shards"]:
        (where / shard.pop("token_ids")).unlink()
    del meta["layout"]
    (where / "meta.json").write_text(json.dumps(meta))
    for f in where.glob("moments-*.npz"):
        f.unlink()
    return where


def test_an_old_store_without_token_ids_loads_and_skips_only_the_activation_null(sweep, tmp_path):
    _, runs, store = sweep
    old = _old_store(store, tmp_path / "old")
    assert St.load_activations(old).shape == St.load_activations(store).shape
    assert St.load_token_ids(old, 720) is None
    rep = reports.analyze_runs(runs, tmp_path / "a", plots=False, acts=old)
    k = rep["summary"]["nulls"]["kinds"]
    assert not k["isotropic"]["skipped"] and not k["covariance"]["skipped"]
    assert k["activations"]["skipped"] and "token ids" in k["activations"]["reason"]
    assert "activations null skipped" in rep["summary"]["nulls"]["note"]


def test_too_few_distinct_tokens_skips_the_activation_null_with_the_reason(sweep, tmp_path,
                                                                            monkeypatch):
    _, runs, store = sweep
    monkeypatch.setattr(report_nulls, "_POOLS", {})
    real = St.load_token_ids
    monkeypatch.setattr(St, "load_token_ids",  # the same rows, as 20 distinct ids
                        lambda s, n: np.unique(real(s, n), return_inverse=True)[1] % 20)
    rep = reports.analyze_runs(runs, tmp_path / "a", plots=False, acts=store)
    act = rep["summary"]["nulls"]["kinds"]["activations"]
    assert act["skipped"] and "only 20 distinct tokens for 32 features" in act["reason"]
    ev = rep["summary"]["evidence"]["by_null"]
    assert ev["activations"]["skipped"] and "20 distinct tokens" in ev["activations"]["reason"]
    assert not ev["covariance"]["skipped"]
    assert not rep["summary"]["nulls"]["kinds"]["covariance"]["skipped"]


def test_a_changed_null_setting_is_recomputed_not_reused(sweep, tmp_path, monkeypatch):
    _, runs, store = sweep
    out, started = tmp_path / "g", []
    kw = dict(plots=False, on_start=lambda: started.append(1))
    reports.group_report(runs, out, **kw)
    reports.group_report(runs, out, **kw)
    assert len(started) == 1  # unchanged: reused
    rep = reports.group_report(runs, out, acts=store, **kw)  # a store now: recomputed
    assert len(started) == 2 and not rep["summary"]["nulls"]["kinds"]["covariance"]["skipped"]
    reports.group_report(runs, out, acts=store, **kw)
    assert len(started) == 2
    monkeypatch.setattr(report_nulls, "NULLS_VERSION", report_nulls.NULLS_VERSION + 1)
    reports.group_report(runs, out, acts=store, **kw)  # the nulls' computation changed
    assert len(started) == 3
    shard = store / St.store_info(store)["shards"][0]["file"]  # the store harvested again
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    reports.group_report(runs, out, acts=store, **kw)
    assert len(started) == 4


def test_the_histogram_draws_every_null(sweep):
    from saefast.report import plots

    root, _, _ = sweep
    fig = plots.cosine_histogram(_report(root / "out" / "reports" / GROUP))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plots.close(fig)
    for name in ("isotropic null", "covariance null", "activation-sampled null"):
        assert any(lab.startswith(name + ": median") for lab in labels), labels


def test_runs_whose_store_is_gone_say_so(sweep, tmp_path):
    _, runs, _ = sweep
    copies = []
    for r in runs:
        shutil.copytree(r, tmp_path / r.name)
        info = json.loads((tmp_path / r.name / "run.json").read_text())
        info["activation_store"] = str(tmp_path / "deleted-store")
        (tmp_path / r.name / "run.json").write_text(json.dumps(info))
        copies.append(tmp_path / r.name)
    assert report_nulls.store_of_runs(copies) is None
    src = report_nulls.resolve(copies, None)
    assert src.store is None and "deleted-store" in src.reason and "not there" in src.reason
    assert report_nulls.store_of_runs(runs) is not None  # the sweep's own runs: their store


def test_the_seed_count_png_draws_the_curve_beyond_every_null(sweep):
    from saefast.report import plots

    root, _, _ = sweep
    fig = plots.seed_count_curve(_report(root / "out" / "reports" / GROUP))
    assert len(fig.axes) == 2
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    plots.close(fig)
    for kind in KINDS:
        assert f"beyond {kind}: in all of N-1 others" in labels, labels


def test_analyze_with_the_spectrum_null_judges_each_feature_against_it(sweep, tmp_path):
    root, runs, store = sweep
    assert main(["analyze", *map(str, runs), "--out", str(tmp_path / "s"), "--acts", str(store),
                 "--spectrum-null"]) == 0
    rep = _report(tmp_path / "s")
    assert rep["settings"]["spectrum_null"] is True
    spec = rep["summary"]["evidence"]["by_null"]["spectrum"]  # per feature, both sides of each
    assert not spec["skipped"] and spec["significance"]["n_matched"] == 3 * 2 * 16  # pair
    assert [len(p["pvalues_a"]) for p in spec["pairs"]] == [16] * 3
    for share in spec["share_by_width"].values():
        assert share["ci"][0] <= share["estimate"] <= share["ci"][1]
    assert not rep["summary"]["nulls"]["kinds"]["spectrum"]["skipped"]
    # the headline is taken over it too
    assert "spectrum" in [c["null"] for c in rep["summary"]["evidence"]["headline"]["candidates"]]
