"""Pair alignment, stability reports, live-only mode, recurrence and the null on run
directories with planted shared features (so the right matching is known): saefast.stats.stability
and saefast.report.inputs through the original study's four functions (saefast.report.assemble).
Writing a report directory is tested in test_reports.py."""

import json
import shutil

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saefast import errors
from saefast.fsio import write_json_atomic
from saefast.match import lapjv_available
from saefast.report.assemble import (
    compute_analysis,
    compute_live_only_alignment,
    compute_live_only_stability_report,
    compute_sae_pair_alignment,
    compute_stability_report,
)
from saefast.runs.artifacts import RunDirError, load_sae
from saefast.stats.matched import matched_statistics, random_baseline
from saefast.stats.stability import recurrence_rows

from planted_runs import N_SHARED, D, F, make_run

ORIGINAL_PAIR_KEYS = {"run_a", "run_b", "run_a_name", "run_b_name", "threshold",
                      "n_matched_pairs", "matched_count_above_threshold", "median_cosine",
                      "mean_cosine", "top_matches", "all_cosines"}
ORIGINAL_SUMMARY_KEYS = {"n_runs", "n_pairs", "threshold", "median_of_medians", "mean_of_means",
                         "stability_fraction_per_pair", "mean_stability_fraction"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # one dead feature in the first run, so the live-only report is not the full one
    return [make_run(root, f"s{i}", seed=i, dead=(0,) if i == 1 else ()) for i in range(1, 4)]


def original_study_pair(dir_a, dir_b, threshold=0.9):
    """Direct re-implementation of the original study's pair computation."""
    from safetensors.torch import load_file

    def unit(d):
        w = load_file(str(d / "sae_weights.safetensors"))["decoder.weight"].T  # [F, d]
        return torch.nn.functional.normalize(w.contiguous(), dim=1)

    cos = (unit(dir_a) @ unit(dir_b).T).numpy().astype(np.float64)
    r, c = linear_sum_assignment(cos, maximize=True)
    m = cos[r, c]
    return r, c, m, {"median": np.median(m), "mean": m.mean(),
                     "count": int((m >= threshold).sum()), "n": len(m)}


def test_pair_alignment_equals_direct_scipy(runs):
    (a, perm_a), (b, perm_b) = runs[0], runs[1]
    p = compute_sae_pair_alignment(a, b, threshold=0.9, top_k=5)
    assert ORIGINAL_PAIR_KEYS <= set(p)
    r, c, m, want = original_study_pair(a, b)
    assert p["n_matched_pairs"] == want["n"] == F
    assert p["matched_count_above_threshold"] == want["count"]
    assert p["median_cosine"] == pytest.approx(want["median"], abs=1e-9)
    assert p["mean_cosine"] == pytest.approx(want["mean"], abs=1e-9)
    np.testing.assert_allclose(p["all_cosines"], m, atol=1e-9)
    assert p["a_indices"] == r.tolist() and p["b_indices"] == c.tolist()
    # planted: feature perm_a[s] of A is feature perm_b[s] of B for every shared s
    assert {(int(perm_a[s]), int(perm_b[s])) for s in range(N_SHARED)} <= set(zip(r.tolist(), c.tolist()))
    assert p["matched_count_above_threshold"] == N_SHARED
    assert p["stability_fraction"] == N_SHARED / F
    top = p["top_matches"]
    assert len(top) == 5 and [t["cosine"] for t in top] == sorted(m, reverse=True)[:5]
    assert all(t["cosine"] == pytest.approx(m[t["a_idx"]], abs=1e-12) for t in top)
    assert p["run_a_name"] == "s1" and p["mode"] == "full" and p["certified"]
    assert p["fraction_above"]["0.9"] == pytest.approx(N_SHARED / F)
    assert 0.15 < p["baseline_median_cosine"] < 0.5  # 48 random features in 32-d


@pytest.mark.skipif(not lapjv_available(), reason="lapjv not installed")
def test_solvers_agree(runs):
    a, b = runs[0][0], runs[2][0]
    pl = compute_sae_pair_alignment(a, b, solver="lapjv", baseline=False)
    ps = compute_sae_pair_alignment(a, b, solver="scipy", baseline=False)
    assert pl["solver"] == "lapjv" and ps["solver"] == "scipy"
    assert sum(pl["all_cosines"]) == pytest.approx(sum(ps["all_cosines"]), abs=1e-9)
    assert pl["baseline_median_cosine"] is None


def test_stability_report(runs):
    dirs = [r[0] for r in runs]
    rep = compute_stability_report(dirs, threshold=0.9, top_k=3)
    s = rep["summary"]
    assert ORIGINAL_SUMMARY_KEYS <= set(s)
    assert s["n_runs"] == 3 and s["n_pairs"] == len(rep["pairs"]) == 3
    meds = [p["median_cosine"] for p in rep["pairs"]]
    assert s["median_of_medians"] == pytest.approx(np.median(meds))
    assert s["mean_of_means"] == pytest.approx(np.mean([p["mean_cosine"] for p in rep["pairs"]]))
    assert s["stability_fraction_per_pair"] == [N_SHARED / F] * 3
    assert s["mean_stability_fraction"] == pytest.approx(N_SHARED / F)
    pooled = np.concatenate([p["all_cosines"] for p in rep["pairs"]])
    assert s["global_median"] == pytest.approx(np.median(pooled))
    assert s["fraction_above"]["0.9"] == pytest.approx(N_SHARED / F)
    assert s["best_pair"]["median_cosine"] == max(meds)
    bf = s["best_feature_pair"]  # the best matched feature pair, checked on the weights
    assert bf["cosine"] == max(pooled)
    by_name = {load_sae(d).name: load_sae(d).decoder for d in dirs}
    ra, rb = by_name[bf["run_a_name"]][bf["feature_a"]], by_name[bf["run_b_name"]][bf["feature_b"]]
    assert float(ra @ rb / (ra.norm() * rb.norm())) == pytest.approx(bf["cosine"], abs=1e-6)
    assert s["fraction_at_threshold"] == pytest.approx(N_SHARED / F)  # the configured 0.9
    mat = np.array(s["pairwise_medians"], dtype=float)  # None -> nan on the diagonal
    assert np.isnan(np.diag(mat)).all() and np.allclose(mat, mat.T, equal_nan=True)
    assert sorted(mat[np.triu_indices(3, 1)]) == sorted(meds)
    assert s["baseline"]["n_a"] == F and s["baseline"]["d"] == D
    assert s["baseline"]["n_per_draw"] == F
    assert len(s["baseline"]["cosines"]) == s["baseline"]["n_draws"] * F  # every draw
    assert [r["name"] for r in s["runs"]] == ["s1", "s2", "s3"]
    assert s["runs"][0]["n_live"] == F - 1 and s["runs"][1]["n_live"] == F  # s1: one dead
    assert s["certified"] and s["mode"] == "full"
    # the pair dicts equal the standalone function's
    solo = compute_sae_pair_alignment(dirs[0], dirs[2], threshold=0.9, top_k=3)
    assert rep["pairs"][1]["all_cosines"] == solo["all_cosines"]
    json.dumps(rep, allow_nan=False)  # JSON-ready as is


def test_live_only_uses_live_features_with_original_indices(tmp_path):
    dead_a, dead_b = {0, 5, 6, 7}, {1, 2}
    a, _ = make_run(tmp_path, "a", 1, dead=dead_a)
    b, _ = make_run(tmp_path, "b", 2, dead=dead_b)
    p = compute_live_only_alignment(a, b, top_k=100)
    assert p["mode"] == "live_only"
    assert p["live_features_a"] == F - 4 and p["live_features_b"] == F - 2
    assert p["n_matched_pairs"] == F - 4  # rectangular: min of the live counts
    assert not set(p["a_indices"]) & dead_a and not set(p["b_indices"]) & dead_b
    assert sorted(p["a_indices"]) == sorted(set(range(F)) - dead_a)
    assert all(t["a_idx"] not in dead_a and t["b_idx"] not in dead_b for t in p["top_matches"])
    # oracle: SciPy on the live rows only, mapped back to original indices
    la, lb = load_sae(a), load_sae(b)
    live_a, live_b = la.live_indices.numpy(), lb.live_indices.numpy()
    ua = torch.nn.functional.normalize(la.decoder[live_a], dim=1)
    ub = torch.nn.functional.normalize(lb.decoder[live_b], dim=1)
    cos = (ua @ ub.T).numpy().astype(np.float64)
    r, c = linear_sum_assignment(cos, maximize=True)
    assert p["median_cosine"] == pytest.approx(np.median(cos[r, c]), abs=1e-9)
    assert p["a_indices"] == live_a[r].tolist() and p["b_indices"] == live_b[c].tolist()

    rep = compute_live_only_stability_report([a, b])
    assert rep["summary"]["mode"] == "live_only" and rep["pairs"][0]["mode"] == "live_only"
    assert rep["summary"]["baseline"]["n_a"] == F - 4
    assert [r["n_live"] for r in rep["summary"]["runs"]] == [F - 4, F - 2]
    rows = recurrence_rows(rep)
    assert not {r["feature_index"] for r in rows if r["run"] == "a"} & dead_a


def test_formats_original_and_saelens_give_the_same_numbers(tmp_path):
    ours, _ = make_run(tmp_path / "x", "r1", 1)
    orig, _ = make_run(tmp_path / "y", "r1", 1, fmt="original")
    lens, _ = make_run(tmp_path / "z", "r2", 2, fmt="saelens")
    assert load_sae(orig).format == "original" and load_sae(lens).format == "saelens"
    p1 = compute_sae_pair_alignment(ours, lens, baseline=False)
    p2 = compute_sae_pair_alignment(orig, lens, baseline=False)
    assert p1["all_cosines"] == p2["all_cosines"]
    assert p1["matched_count_above_threshold"] == N_SHARED
    other, _ = make_run(tmp_path / "w", "r1", 3)  # another SAE, also named r1
    rep = compute_stability_report([ours, other, lens], baseline=False)
    labels = [r["label"] for r in rep["summary"]["runs"]]
    assert len(set(labels)) == 3  # both runs named r1: labels fall back to the path
    assert labels[0] == str(ours) and labels[1] == str(other) and labels[2] == "r2"
    # ours and orig hold the same SAE: refused, not reported as median 1.0
    with pytest.raises(errors.RunDirError, match="identical decoder weights"):
        compute_stability_report([ours, orig, lens], baseline=False)
    with pytest.raises(RunDirError, match="feature_analysis.json"):
        compute_live_only_alignment(ours, lens)


def test_rectangular_report(tmp_path):
    a, perm_a = make_run(tmp_path, "small", 1, n_extra=0)  # 40 features
    b, perm_b = make_run(tmp_path, "big", 2, n_extra=24)  # 64 features
    rep = compute_stability_report([a, b], top_k=0)
    p = rep["pairs"][0]
    assert p["n_matched_pairs"] == 40 and p["matched_count_above_threshold"] == 40
    assert p["top_matches"] == []
    assert set(zip(p["a_indices"], p["b_indices"])) == {
        (int(perm_a[s]), int(perm_b[s])) for s in range(N_SHARED)}
    assert (rep["summary"]["baseline"]["n_a"], rep["summary"]["baseline"]["n_b"]) == (40, 64)
    rows = recurrence_rows(rep)
    assert len([r for r in rows if r["run"] == "big"]) == 40  # only matched features get rows


def test_recurrence_rows_consistent_with_pairs(runs):
    dirs = [r[0] for r in runs]
    rep = compute_stability_report(dirs, threshold=0.9, baseline=False)
    rows = recurrence_rows(rep)
    assert len(rows) == 3 * F
    by = {(r["run"], r["feature_index"]): r for r in rows}
    # recompute from the pairs
    want = {k: ([], -2.0) for k in by}
    for p in rep["pairs"]:
        for ia, ib, c in zip(p["a_indices"], p["b_indices"], p["all_cosines"]):
            for me, f, other in ((p["run_a_name"], ia, p["run_b_name"]),
                                 (p["run_b_name"], ib, p["run_a_name"])):
                lst, best = want[(me, f)]
                if c >= 0.9:
                    lst.append(other)
                want[(me, f)] = (lst, max(best, c))
    for k, (lst, best) in want.items():
        assert sorted(by[k]["recurs_in"]) == sorted(lst) and by[k]["n_recurs"] == len(lst)
        assert by[k]["best_cosine"] == best
    # planted: each run's shared features recur in both other runs, the others in none
    for (run, f), r in by.items():
        perm = runs[int(run[1]) - 1][1]
        assert r["n_recurs"] == (2 if f in set(perm[:N_SHARED].tolist()) else 0)


def test_errors(runs, tmp_path):
    one = runs[0][0]
    with pytest.raises(ValueError, match="need at least two runs to compare, got 1"):
        compute_stability_report([one])
    with pytest.raises(errors.RunDirError, match="need at least two runs to compare, got 1"):
        compute_analysis([one])
    # missing weights
    broken = tmp_path / "broken"
    shutil.copytree(one, broken)
    (broken / "sae_weights.safetensors").unlink()
    with pytest.raises(RunDirError, match="missing sae_weights.safetensors"):
        compute_sae_pair_alignment(one, broken)
    # corrupt json
    corrupt = tmp_path / "corrupt"
    shutil.copytree(one, corrupt)
    (corrupt / "feature_analysis.json").write_text("{not json")
    with pytest.raises(RunDirError, match="corrupt JSON"):
        compute_stability_report([one, corrupt])
    # shapes that disagree with the metadata
    bad_meta = tmp_path / "bad_meta"
    shutil.copytree(one, bad_meta)
    meta = json.loads((bad_meta / "sae_weights.safetensors.json").read_text())
    meta["n_features"] = F + 1
    write_json_atomic(bad_meta / "sae_weights.safetensors.json", meta)
    with pytest.raises(RunDirError, match="n_features"):
        compute_sae_pair_alignment(one, bad_meta)
    # different d_model
    other_d, _ = make_run(tmp_path, "d64", 9, d=64)
    with pytest.raises(ValueError, match="different d_model"):
        compute_sae_pair_alignment(one, other_d)
    with pytest.raises(errors.RunDirError, match="different d_model"):
        compute_stability_report([one, runs[1][0], other_d])
    # bad arguments
    with pytest.raises(ValueError, match="threshold"):
        compute_stability_report([one, runs[1][0]], threshold=2.0)
    for bad in (2.0, -1.5, float("nan"), "x"):
        with pytest.raises(errors.ConfigError, match="threshold must be a cosine"):
            compute_stability_report([one, runs[1][0]], threshold=bad)
    for bad in (-1, 2.5, None):
        with pytest.raises(errors.ConfigError, match="top_k must be a non-negative integer"):
            compute_live_only_stability_report([one, runs[1][0]], top_k=bad)
    with pytest.raises(ValueError, match="unknown solver"):
        compute_stability_report([one, runs[1][0]], solver="nope")


def test_random_baseline_matches_known_nulls():
    r768 = random_baseline(128, 128, 768)
    r384 = random_baseline(128, 128, 384)
    assert 0.075 < r768["median_cosine"] < 0.10  # measured on this machine: 0.087
    assert 0.105 < r384["median_cosine"] < 0.14  # measured on this machine: 0.122
    # every draw is stored (what the histogram plots), and the statistics are of that list
    assert r768["n_draws"] == 3 and r768["n_per_draw"] == 128
    assert len(r768["cosines"]) == 3 * 128
    assert r768["median_cosine"] == float(np.median(r768["cosines"]))
    assert r768["mean_cosine"] == float(np.mean(r768["cosines"]))
    assert r768["max_cosine"] == max(r768["cosines"])
    assert random_baseline(128, 128, 768) is r768  # memoised: one null per shape
    again = random_baseline(10, 20, 8, seed=5)
    assert again["n_a"] == 10 and again["n_per_draw"] == 10 and len(again["cosines"]) == 30
    assert len(random_baseline(10, 20, 8, seed=5, n_draws=1)["cosines"]) == 10
    with pytest.raises(ValueError, match="positive"):
        random_baseline(0, 5, 8)
    with pytest.raises(errors.ConfigError, match="n_draws"):
        random_baseline(5, 5, 8, n_draws=0)


def test_random_baseline_is_deterministic_and_independent_of_order():
    from saefast.stats import matched as stats

    a = random_baseline(12, 9, 6, seed=3)
    stats._BASELINE_CACHE.clear()  # recompute from scratch after another shape was drawn
    random_baseline(7, 7, 6)
    b = random_baseline(12, 9, 6, seed=3)
    assert a is not b and a == b


def test_matched_statistics():
    s = matched_statistics([0.1, 0.6, 0.8, 0.95])
    assert s["n"] == 4 and s["median"] == pytest.approx(0.7) and s["mean"] == pytest.approx(0.6125)
    assert s["fraction_above"] == {"0.5": 0.75, "0.7": 0.5, "0.9": 0.25}
    assert matched_statistics([0.9], thresholds=(0.9,))["fraction_above"] == {"0.9": 1.0}
    assert matched_statistics([])["median"] is None


# ---------------------------------------------------------------------------- the same run twice


def test_the_same_run_twice_is_refused(runs, tmp_path):
    one, two = runs[0][0], runs[1][0]
    spelled_otherwise = one.parent / "." / one.name
    for given in ([one, two, one], [one, spelled_otherwise]):
        with pytest.raises(errors.RunDirError, match="the same run was given twice"):
            compute_stability_report(given)
        with pytest.raises(errors.RunDirError, match="the same run was given twice"):
            compute_analysis(given, live_only=True)
    with pytest.raises(errors.RunDirError, match="the same run was given twice"):
        compute_sae_pair_alignment(one, one)
    with pytest.raises(errors.RunDirError, match="the same run was given twice"):
        compute_live_only_alignment(one, spelled_otherwise)
    # another directory holding the same weights (a copy) is the same SAE
    copy = tmp_path / "copy"
    shutil.copytree(one, copy)
    with pytest.raises(errors.RunDirError, match="identical decoder weights"):
        compute_stability_report([copy, two, one])
    with pytest.raises(errors.RunDirError, match="identical decoder weights"):
        compute_sae_pair_alignment(one, copy, baseline=False)
    # a different SAE whose first and last rows agree is not refused
    near = tmp_path / "near"
    shutil.copytree(one, near)
    from safetensors.torch import load_file, save_file
    t = load_file(str(near / "sae_weights.safetensors"))
    t["decoder.weight"][:, F // 2] += 1.0  # [d, F]: one middle feature changed
    save_file(t, str(near / "sae_weights.safetensors"))
    p = compute_sae_pair_alignment(one, near, baseline=False)
    assert p["n_matched_pairs"] == F and p["median_cosine"] == pytest.approx(1.0)


def test_a_folder_of_runs_is_explained(runs):
    folder = runs[0][0].parent
    with pytest.raises(errors.RunDirError, match=r"got 1: .* is a folder of 3 run directories"):
        compute_stability_report([folder])
    with pytest.raises(errors.RunDirError, match=r"got 1$"):
        compute_stability_report([runs[0][0]])  # a run itself: no hint


def test_compute_analysis_holds_both_reports(runs):
    dirs = [r[0] for r in runs]
    def untimed(report):
        return [{k: v for k, v in p.items() if k != "timings"} for p in report["pairs"]]

    rep = compute_analysis(dirs, live_only=True, baseline=False)
    assert untimed(rep) == untimed(compute_stability_report(dirs, baseline=False))
    live = compute_live_only_stability_report(dirs, baseline=False)
    assert untimed(rep["live_only"]) == untimed(live)
    assert rep["live_only"]["summary"] == live["summary"]
    assert "live_only" not in compute_analysis(dirs[:2], baseline=False)
    no_dead = compute_analysis(dirs[1:], live_only=True, baseline=False)  # s2, s3: all live
    assert no_dead["live_only"] is None and no_dead["summary"]["live_only_note"]
    seen = []
    compute_analysis(dirs, live_only=True, baseline=False,
                     progress=lambda i, n, p: seen.append((i, n, p["mode"])))
    assert seen == [(1, 3, "full"), (2, 3, "full"), (3, 3, "full"),
                    (1, 3, "live_only"), (2, 3, "live_only"), (3, 3, "live_only")]


def test_the_null_is_memoised_per_solver_too():
    """The solver is recorded in the null, so a scipy request must not get the native one."""
    from saefast.stats.matched import random_baseline

    a = random_baseline(8, 8, 4, solver="scipy")
    assert a["solver"] == "scipy"
    b = random_baseline(8, 8, 4, solver="auto")
    assert random_baseline(8, 8, 4, solver="scipy") is a and b["median_cosine"] == pytest.approx(a["median_cosine"])
