"""PW-MCC (the mean matched decoder cosine over all features of a pair, the metric published
consistency work reports) beside the median: per pair, in the summary with its delete-one-run
jackknife interval over runs, and against each null (summary.json's rows and the tables:
tests/test_cli.py, tests/test_html_report.py). Checked against a
direct numpy/scipy computation on planted run dirs: the decoders read from the safetensors
file, matched by scipy's assignment, the jackknife done by hand."""

import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy import stats as sps
from scipy.optimize import linear_sum_assignment

from saefast.data.moments import ActivationMoments
from saefast.report.assemble import compute_stability_report
from saefast.stats import null_summary
from saefast.stats import nulls as stats_nulls

from planted_runs import D, F, make_run

S = 4  # runs: leaving one out leaves 3 of the 6 pairs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pw_mcc")
    return [make_run(root, f"s{i}", seed=i)[0] for i in range(1, S + 1)]


@pytest.fixture(scope="module")
def report(runs):
    return compute_stability_report(runs)


def matched_cosines(run_a, run_b) -> np.ndarray:
    """The optimal one-to-one matching's cosines, from the weights file and scipy alone."""
    rows = []
    for run in (run_a, run_b):
        w = load_file(str(run / "sae_weights.safetensors"))["decoder.weight"].T  # [F, d]
        w = w.astype(np.float64)
        rows.append(w / np.linalg.norm(w, axis=1, keepdims=True))
    cos = rows[0] @ rows[1].T
    r, c = linear_sum_assignment(cos, maximize=True)
    return cos[r, c]


def by_hand_jackknife(per_pair: dict, level=0.90):
    """Delete-one-run jackknife of the pooled mean with its pair term counted once
    (stats.pair_variance): (estimate, se, ci), from the U-statistic formulas for equal pairs."""
    def pooled(keep):
        return np.mean(np.concatenate([v for k, v in per_pair.items() if keep(k)]))
    est = pooled(lambda k: True)
    reps = np.array([pooled(lambda k, r=r: r not in k) for r in range(S)])
    v_jack = (S - 1) / S * np.sum((reps - reps.mean()) ** 2)
    keys = sorted(per_pair)
    X = np.array([[1.0] + [float(r in k) for r in range(S)] for k in keys])  # mu + g_i + g_j
    y = np.array([np.mean(per_pair[k]) for k in keys])
    resid = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
    s2 = resid @ resid / (len(keys) - S)  # P - S degrees of freedom
    k_r, t_r = 4 / (S * (S - 2)), 1 / len(keys)
    se = np.sqrt(min(v_jack, max(v_jack - k_r * s2, 0.0) + t_r * s2))
    q = sps.t.ppf(0.5 + level / 2, df=S - 1)
    return est, se, [est - q * se, est + q * se]


def test_each_pairs_pw_mcc_is_the_mean_of_its_optimal_matching(runs, report):
    assert len(report["pairs"]) == S * (S - 1) // 2
    for p in report["pairs"]:
        direct = matched_cosines(runs[p["index_a"]], runs[p["index_b"]])
        assert direct.size == min(F, F)  # every feature of the smaller dictionary
        assert p["pw_mcc"] == pytest.approx(direct.mean(), abs=1e-6)
        # the isotropic null's PW-MCC of this pair's shape: the mean of its matched cosines
        null = null_summary.isotropic(F, F, D)
        assert p["baseline_pw_mcc"] == pytest.approx(np.mean(null["cosines"]), abs=1e-12)


def test_the_summary_states_pw_mcc_with_the_run_jackknife_interval(runs, report):
    s = report["summary"]
    per_pair = {(p["index_a"], p["index_b"]): matched_cosines(runs[p["index_a"]],
                                                              runs[p["index_b"]])
                for p in report["pairs"]}
    est, se, ci = by_hand_jackknife(per_pair)
    iv = s["seed_intervals"]["pw_mcc"]
    assert s["pw_mcc"] == pytest.approx(est, abs=1e-6) == iv["estimate"]
    # one pair shape: the pooled mean is the mean of the pairs' PW-MCC
    assert s["pw_mcc"] == pytest.approx(np.mean([p["pw_mcc"] for p in report["pairs"]]))
    assert iv["se"] == pytest.approx(se, abs=1e-6)
    assert iv["ci"] == pytest.approx(ci, abs=1e-6) and iv["level"] == 0.9
    assert "PW-MCC" in iv["method"] and "jackknife" in iv["method"]
    # its excess over the isotropic null: the same interval, shifted by the null's mean
    null_mean = np.mean(s["baseline"]["cosines"])
    assert s["baseline"]["pw_mcc"] == pytest.approx(null_mean, abs=1e-12)
    ex = s["seed_intervals"]["excess_pw_mcc"]
    assert ex["estimate"] == pytest.approx(est - null_mean, abs=1e-6)
    assert ex["ci"] == pytest.approx([c - null_mean for c in ci], abs=1e-6)
    assert ex["se"] == pytest.approx(se, abs=1e-6)
    # the median's interval is what it was: the pooled median, the same jackknife
    med = s["seed_intervals"]["global_median"]
    assert med["estimate"] == s["global_median"] and "PW-MCC" not in med["method"]


def test_each_null_states_its_pw_mcc_and_the_excess_over_it(runs, report):
    """summary.nulls: each null's PW-MCC is the mean of its own matched cosines, drawn at the
    report's shape, and the observed PW-MCC over it has the jackknife interval."""
    g = np.random.default_rng(7)
    acts = g.standard_normal((4000, D)) * np.linspace(3.0, 0.2, D)  # an anisotropic Σ
    moments = ActivationMoments(D).update(acts)
    data = null_summary.NullData(moments, None, {"covariance": None,
                                                 "activations": "skipped: no token ids"},
                                 None, "pw-mcc-test", {})
    rep = {"pairs": report["pairs"], "summary": dict(report["summary"])}
    nulls = null_summary.add_nulls(rep, data)
    per_pair = {(p["index_a"], p["index_b"]): np.asarray(p["all_cosines"])
                for p in report["pairs"]}
    est, _, ci = by_hand_jackknife(per_pair)
    for kind in ("isotropic", "covariance"):
        n = nulls["kinds"][kind]
        drawn = stats_nulls.nulls(F, F, D, moments=moments, key="pw-mcc-test",
                                  n_draws=n["n_draws"])[kind]["cosines"]  # the memoised draws
        assert len(drawn) == n["n_draws"] * n["n_per_draw"] and n["n_per_draw"] == F
        assert n["pw_mcc"] == pytest.approx(np.mean(drawn), abs=1e-12)
        ex = n["excess_pw_mcc"]
        assert ex["estimate"] == pytest.approx(est - np.mean(drawn), abs=1e-9)
        assert ex["ci"] == pytest.approx([c - np.mean(drawn) for c in ci], abs=1e-9)
        assert "PW-MCC" in ex["method"]
    assert nulls["kinds"]["covariance"]["pw_mcc"] > nulls["kinds"]["isotropic"]["pw_mcc"]
    assert "pw_mcc" not in nulls["kinds"]["activations"]  # skipped, with its reason
    assert nulls["kinds"]["isotropic"]["excess_pw_mcc"] == \
        rep["summary"]["seed_intervals"]["excess_pw_mcc"]
