"""A report directory (saefast.report.files): analyze_runs, the recurrence CSV, group_report's
reuse (what a sweep calls per seed group) and redraw, on runs with planted shared features."""

import csv
import hashlib
import json
import os

import pytest
import torch

import saefast
from saefast import errors
from saefast.report import files as reports
from saefast.report.assemble import compute_stability_report
from saefast.stats import stability
from saefast.stats.stability import recurrence_rows

from planted_runs import F, make_run, plain_report

ALL_FILES = ["feature_recurrence.csv", "feature_recurrence_live_only.csv", "pair_heatmap.png",
             "cosine_histogram.png", "seed_count_curve.png", "live_only_pair_heatmap.png",
             "live_only_cosine_histogram.png", "live_only_seed_count_curve.png",
             "stability_arrays.safetensors", "stability.json"]  # the nulls' draws: report.arrays
KW = dict(threshold=0.9, top_k=20, live_only=False, solver="auto", plots=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # one dead feature in the first run, so the live-only report is not the full one
    return [make_run(root, f"s{i}", seed=i, dead=(0,) if i == 1 else ())[0] for i in range(1, 4)]


def test_analyze_runs_writes_everything(runs, tmp_path):
    out = tmp_path / "report"
    rep = reports.analyze_runs(runs, out, live_only=True)
    assert rep["files"] == ALL_FILES  # stability.json listed last: it is written last
    for name in ALL_FILES:
        assert (out / name).is_file(), name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "stability.json").read_text())
    assert on_disk["summary"]["n_pairs"] == 3
    assert on_disk["live_only"]["summary"]["mode"] == "live_only"
    nulls = on_disk["settings"].pop("nulls")  # the null settings: tests/test_report_nulls.py
    (trained,) = on_disk["settings"].pop("trained_null")  # tests/test_trained_null.py
    assert trained["runs"] == {} and "no training recipe" in trained["reason"]
    assert on_disk["settings"] == {"threshold": 0.9, "top_k": 20, "live_only": True,
                                   "solver": "auto", "plots": True, "baseline": True,
                                   "spectrum_null": False, "evidence": reports.EVIDENCE_VERSION}
    assert nulls["store"] is None and nulls["version"] == saefast.report.nulls.NULLS_VERSION
    assert not list(out.glob(".*"))  # no temp files left behind
    assert oct(os.stat(out / "stability.json").st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_analyze_runs_is_the_public_one():
    assert saefast.analyze_runs is reports.analyze_runs
    assert not hasattr(stability, "analyze_runs")  # stability.py writes no files


def test_analyze_runs_without_plots(runs, tmp_path):
    rep = reports.analyze_runs(runs[:2], tmp_path, plots=False, baseline=False)
    assert not list(tmp_path.glob("*.png")) and "live_only" not in rep
    assert rep["summary"]["baseline"] is None


def test_bad_input_writes_nothing(runs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(errors.RunDirError, match="need at least two runs to compare, got 1"):
        reports.analyze_runs([runs[0]], out)
    with pytest.raises(errors.RunDirError, match="the same run was given twice"):
        reports.analyze_runs([runs[0], runs[1], runs[0]], out)
    with pytest.raises(errors.ConfigError, match="threshold"):
        reports.analyze_runs(runs, out, threshold=1.5)
    with pytest.raises(errors.ConfigError, match="top_k"):
        reports.group_report(runs, out, threshold=0.9, top_k=-1, live_only=False, solver="auto")
    with pytest.raises(errors.ConfigError, match="extra may not set"):
        reports.group_report(runs, out, **KW, extra={"summary": 1})
    assert not out.exists()  # nothing half-written


def test_recurrence_csv_consistent_with_rows(runs, tmp_path):
    rep = compute_stability_report(runs, threshold=0.9, baseline=False)
    rows = recurrence_rows(rep)
    path = reports.write_recurrence_csv(rep, tmp_path / "sub" / "rec.csv")
    with open(path) as f:
        got = list(csv.DictReader(f))
    assert len(got) == len(rows) == 3 * F
    assert got[0].keys() == {"run", "feature_index", "n_recurs", "recurs_in", "best_cosine"}
    assert all(g["recurs_in"] == ";".join(r["recurs_in"]) and float(g["best_cosine"]) ==
               r["best_cosine"] for g, r in zip(got, rows))


def test_inputs_fingerprint_is_the_one_sweeps_stored(runs, tmp_path):
    # the algorithm sweeps used before it moved here: old reports stay reusable
    h = hashlib.sha256()
    for d in sorted(runs):
        st = (d / "sae_weights.safetensors").stat()
        h.update(f"{d.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    assert reports.inputs_fingerprint(reversed(runs)) == h.hexdigest()[:16]
    assert reports.inputs_fingerprint([str(d) for d in runs]) == h.hexdigest()[:16]
    with pytest.raises(errors.RunDirError, match="missing sae_weights"):
        reports.inputs_fingerprint([tmp_path])


def test_group_report_reuses_recomputes_and_stamps(runs, tmp_path):
    out = tmp_path / "reports" / "g"
    started = []
    rep = reports.group_report(runs, out, **KW, extra={"group": "g"},
                               on_start=lambda: started.append(1))
    assert started == [1]
    assert list(rep)[-2:] == ["group", "inputs_fingerprint"]  # stamped after `files`
    assert rep["group"] == "g" and rep["inputs_fingerprint"] == reports.inputs_fingerprint(runs)
    stored = reports.load_report(out)
    assert plain_report(stored) == plain_report(rep)
    mtime = (out / "stability.json").stat().st_mtime_ns

    # unchanged inputs and settings: the stored report, nothing recomputed or written
    again = reports.group_report(runs, out, **KW, extra={"group": "g"},
                                 on_start=lambda: started.append(2))
    assert started == [1] and plain_report(again) == plain_report(stored)
    assert (out / "stability.json").stat().st_mtime_ns == mtime

    # other settings: recomputed (match settings are not part of run names)
    other = reports.group_report(runs, out, **dict(KW, threshold=0.5), extra={"group": "g"},
                                 on_start=lambda: started.append(3))
    assert started == [1, 3] and other["summary"]["threshold"] == 0.5

    # a run retrained (new weights file): recomputed
    w = runs[0] / "sae_weights.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    reports.group_report(runs, out, **dict(KW, threshold=0.5), on_start=lambda: started.append(4))
    assert started == [1, 3, 4]

    # corrupt, or killed before stability.json landed: recomputed
    (out / "stability.json").write_text("{torn")
    reports.group_report(runs, out, **KW, on_start=lambda: started.append(5))
    (out / "stability.json").unlink()
    reports.group_report(runs, out, **KW, on_start=lambda: started.append(6))
    assert started == [1, 3, 4, 5, 6]
    reports.group_report(runs, out, **KW, on_start=lambda: started.append(7))
    assert started == [1, 3, 4, 5, 6]


def test_group_report_reuses_a_report_written_before_settings_existed(runs, tmp_path):
    out = tmp_path / "old"
    rep = reports.group_report(runs, out, **KW, extra={"group": "g"})
    del rep["settings"]  # as sweeps wrote it before this module existed
    (out / "stability.json").write_text(json.dumps(rep))
    calls = []
    assert reports.group_report(runs, out, **KW, on_start=lambda: calls.append(1)) == rep
    assert calls == []
    reports.group_report(runs, out, **dict(KW, live_only=True), on_start=lambda: calls.append(1))
    assert calls == [1]


def test_redraw(runs, tmp_path):
    out = tmp_path / "r"
    reports.analyze_runs(runs[:2], out, live_only=True, plots=False)
    assert not list(out.glob("*.png"))
    before = (out / "stability.json").read_bytes()
    paths = reports.redraw(out)
    assert sorted(p.name for p in paths) == sorted(n for n in ALL_FILES if n.endswith(".png"))
    assert all(p.parent == out and p.is_file() for p in paths)
    assert (out / "stability.json").read_bytes() == before  # the report itself is untouched
    with pytest.raises(errors.RunDirError, match="no stability.json"):
        reports.redraw(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "stability.json").write_text("[1, 2")
    with pytest.raises(errors.RunDirError, match="corrupt JSON"):
        reports.redraw(tmp_path / "bad")


def test_the_summary_carries_seed_level_intervals(runs, tmp_path):
    """Every report states its pooled median, fraction at the threshold and excess over the
    null with a 90 % interval over runs (delete-one-run jackknife), computed from the stored
    matchings: the jackknife replicate without run r is the pooled statistic of the pairs
    that do not involve r."""
    import numpy as np

    rep = compute_stability_report(runs)
    si = rep["summary"]["seed_intervals"]
    assert set(si) == {"global_median", "fraction_above_0.9", "excess_median", "pw_mcc",
                       "excess_pw_mcc"}  # PW-MCC's: tests/test_pw_mcc.py
    med = si["global_median"]
    assert med["estimate"] == rep["summary"]["global_median"]
    assert med["ci"][0] <= med["estimate"] <= med["ci"][1] and med["level"] == 0.9
    assert "jackknife" in med["method"]
    null = rep["summary"]["baseline"]["median_cosine"]
    assert si["excess_median"]["estimate"] == pytest.approx(med["estimate"] - null)
    # by hand: S = 3, leaving a run out leaves one pair; SE from the three pair medians
    drop = [np.median(p["all_cosines"]) for p in reversed(rep["pairs"])]  # pair (1,2), (0,2), (0,1)
    reps = np.array(drop)
    se = np.sqrt(2 / 3 * ((reps - reps.mean()) ** 2).sum())
    assert med["se"] == pytest.approx(se)
    assert compute_stability_report(runs[:2])["summary"]["seed_intervals"] is None


def _run_json(root, name, group, seed, n_features, d_model=384):
    run = root / name
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({
        "name": name, "group": group, "model": {"d_model": d_model},
        "config": {"train": {"seed": seed}, "sae": {"n_features": n_features}}}))
    return run


def test_runs_of_one_seed_warn_whatever_their_sizes(tmp_path):
    """saefast's init draws the decoder row by row from the seed: a seed-1 128-feature run
    and a seed-1 512-feature run start from the same 128 rows (median 0.885 where seed 2
    gives 0.163), so analyze warns for them, and not for seeds of one group."""
    from saefast.report.inputs import shared_init_warning
    from saefast.train.sae import TopKSAE

    small = _run_json(tmp_path, "f128-s1", "f128", 1, 128)
    large = _run_json(tmp_path, "f512-s1", "f512", 1, 512)
    warning = shared_init_warning([small, large])
    assert "share seed 1" in warning and "first 128 initial rows" in warning
    assert shared_init_warning([small, _run_json(tmp_path, "f512-s2", "f512", 2, 512)]) is None
    assert shared_init_warning([_run_json(tmp_path, "g-s1", "g", 1, 128),
                                _run_json(tmp_path, "g-s2", "g", 2, 128)]) is None
    assert shared_init_warning([small, _run_json(tmp_path, "d64-s1", "f512", 1, 512, 64)]) is None
    # what the warning rests on: the init's first rows are the same at both sizes
    a, b = TopKSAE(384, 128, 8, seed=1), TopKSAE(384, 512, 8, seed=1)
    assert torch.equal(a.W_dec.detach(), b.W_dec.detach()[:128])
