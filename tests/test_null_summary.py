"""One isotropic null per report (saefast.stats.null_summary): summary.baseline,
summary.nulls.kinds.isotropic, each pair's baseline_median_cosine and the isotropic null of the
evidence's p-values are one set of draws, at one shape, in full and live-only reports; and the
seed interval of the excess over it is the nulls' own. On runs with planted shared features
whose live counts differ, so the live-only pairs have shapes of their own."""

import numpy as np
import pytest

from saefast.report import files as reports
from saefast.stats import null_summary
from saefast.stats.matched import random_baseline
from saefast.stats.null_model import report_null_draws

from planted_runs import D, F, make_run

SHARED_KEYS = ("n_a", "n_b", "d", "seed", "n_draws", "n_per_draw", "solver", "median_cosine",
               "mean_cosine", "max_cosine", "fraction_above")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dead = [(0, 5), (1, 2, 3, 4), (7,)]  # live counts 46, 44, 47
    runs = [make_run(root, f"s{i}", seed=i, dead=dead[i - 1])[0] for i in range(1, 4)]
    return reports.analyze_runs(runs, root / "report", live_only=True, plots=False)


@pytest.mark.parametrize("mode", ["full", "live_only"])
def test_the_baseline_is_the_isotropic_null_of_summary_nulls(report, mode):
    rep = report if mode == "full" else report["live_only"]
    s = rep["summary"]
    base, nulls = s["baseline"], s["nulls"]
    iso = nulls["kinds"]["isotropic"]
    assert {k: base[k] for k in SHARED_KEYS} == {k: iso[k] for k in SHARED_KEYS}
    assert (base["n_a"], base["n_b"]) == (nulls["shape"]["n_a"], nulls["shape"]["n_b"])
    assert base["n_pairs_with_this_shape"] == nulls["n_pairs_with_this_shape"]
    # every pooled cosine is kept, and they are the ones the nulls' histogram counts
    assert len(base["cosines"]) == base["n_draws"] * base["n_per_draw"]
    counts, _ = np.histogram(np.clip(base["cosines"], -1.0, 1.0), bins=iso["histogram"]["edges"])
    assert counts.tolist() == iso["histogram"]["counts"]
    # the draws the per-feature p-values use, and one interval of the excess over them
    assert base["n_draws"] == report_null_draws(base["n_a"], base["n_b"])
    assert s["seed_intervals"]["excess_median"] == iso["excess_median"]
    # PW-MCC likewise: one isotropic null, the mean of its cosines, one interval of the excess
    assert base["pw_mcc"] == iso["pw_mcc"] == pytest.approx(np.mean(base["cosines"]))
    assert s["seed_intervals"]["excess_pw_mcc"] == iso["excess_pw_mcc"]


def test_the_nulls_shape_is_the_median_live_counts_for_live_only(report):
    live = report["live_only"]
    shapes = {tuple(sorted((p["live_features_a"], p["live_features_b"]))) for p in live["pairs"]}
    assert len(shapes) == 3  # each pair its own shape
    base = live["summary"]["baseline"]
    assert (base["n_a"], base["n_b"]) == (44, 47)  # medians of 44, 46, 44 and of 46, 47, 47
    assert base["n_pairs_with_this_shape"] == 3
    assert report["summary"]["baseline"]["n_a"] == F  # full: every feature


def test_each_pairs_baseline_median_is_the_isotropic_null_of_its_shape(report):
    for rep in (report, report["live_only"]):
        shapes = {(q["n_a"], q["n_b"]): q for q in
                  rep["summary"]["evidence"]["by_null"]["isotropic"]["null"]["shapes"]}
        for p in rep["pairs"]:
            n_a, n_b = null_summary.matched_shape(p)
            null = null_summary.isotropic(n_a, n_b, D)
            assert null is random_baseline(n_a, n_b, D, n_draws=report_null_draws(n_a, n_b))
            assert p["baseline_median_cosine"] == null["median_cosine"]
            # the evidence's p-values were computed against these same draws
            assert shapes[n_a, n_b]["n_cosines"] == len(null["cosines"])
