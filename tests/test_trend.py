"""The slope of stability per decade of tokens, with seeds resampled jointly across budgets."""

import numpy as np
import pytest

from saefast.stats.inference import PairedRuns, median
from saefast.stats.trend import families, family_trends, slope, slope_per_decade

BUDGETS = [1_000, 10_000, 100_000, 1_000_000]


def synthetic(S, true_slope, rng, n=60):
    """Per budget, every pair of S seeds: matched cosines around 0.2 + slope * log10(budget)
    plus a seed effect shared by every budget (seeds are the same runs' inits across budgets)."""
    seed_effect = rng.normal(0, 0.03, S)
    data = []
    for b in BUDGETS:
        level = 0.2 + true_slope * np.log10(b)
        by_pair = {(i, j): level + (seed_effect[i] + seed_effect[j]) / 2 + rng.normal(0, 0.05, n)
                   for i in range(S) for j in range(i + 1, S)}
        data.append(PairedRuns.from_dict(S, by_pair))
    return data


def test_slope_of_a_line():
    assert slope([10, 100, 1000], [0.1, 0.3, 0.5]) == pytest.approx(0.2)


def test_recovers_a_planted_slope_and_covers_it_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    hits, reps = 0, 60
    for _ in range(reps):
        out = slope_per_decade(BUDGETS, synthetic(10, 0.05, rng), [median()] * 4)
        lo, hi = out["ci"]
        hits += lo <= 0.05 <= hi
    assert 0.75 <= hits / reps <= 1.0  # nominal 0.90
    one = slope_per_decade(BUDGETS, synthetic(10, 0.05, np.random.default_rng(1)), [median()] * 4)
    assert one["slope_per_decade"] == pytest.approx(0.05, abs=0.02)
    assert len(one["replicates"]) == 10 and "every budget at once" in one["method"]


def test_a_flat_trend_has_an_interval_around_zero():
    out = slope_per_decade(BUDGETS, synthetic(8, 0.0, np.random.default_rng(3)), [median()] * 4)
    assert out["ci"][0] <= 0.0 <= out["ci"][1]


def test_families_are_groups_that_differ_only_in_tokens():
    def cfg(tokens, k=8, seed=1):
        return {"data": {"tokens": tokens, "corpus": "c"}, "sae": {"k": k}, "train": {"seed": seed}}
    groups = {"a1": cfg(1000), "a2": cfg(10000, seed=2), "b1": cfg(1000, k=16), "a3": cfg(100)}
    assert families(groups) == [["a3", "a1", "a2"]]


def test_family_trends_from_reports():
    rng = np.random.default_rng(4)
    data = synthetic(4, 0.1, rng, n=20)
    reports, configs = {}, {}
    for b, d in zip(BUDGETS, data):
        name = f"t{b}"
        configs[name] = {"data": {"tokens": b}, "train": {"seed": 1}}
        reports[name] = {"summary": {"runs": [{"seed": s} for s in (7, 8, 9, 10)],
                                     "baseline": {"median_cosine": 0.1}},
                         "pairs": [{"index_a": i, "index_b": j, "all_cosines": v.tolist()}
                                   for (i, j), v in zip(d.pairs, d.values)]}
        reports[name]["summary"]["covariance_median"] = 0.2 + 0.02 * np.log10(b)  # rising null
        reports[name]["summary"]["evidence"] = {"by_null": {  # a share rising 0.1 a decade
            "covariance": {"skipped": False, "share_beyond_chance": {
                "estimate": 0.1 * np.log10(b), "se": 0.02}},
            "activations": {"skipped": True, "reason": "too few tokens"}}}
    (row,) = family_trends(reports, configs, null_medians=lambda r: {
        "isotropic": r["summary"]["baseline"]["median_cosine"],
        "covariance": r["summary"]["covariance_median"]})
    assert row["seeds"] == [7, 8, 9, 10] and row["groups"] == list(reports)
    assert row["global_median"]["slope_per_decade"] == pytest.approx(0.1, abs=0.03)
    # a constant null: the same slope; a null rising 0.02 a decade: 0.02 less
    iso, cov = row["excess_median"]["isotropic"], row["excess_median"]["covariance"]
    assert iso["slope_per_decade"] == pytest.approx(row["global_median"]["slope_per_decade"])
    assert cov["slope_per_decade"] == pytest.approx(iso["slope_per_decade"] - 0.02)
    (share,) = row["share_beyond_chance"].values()  # the skipped null has none
    assert list(row["share_beyond_chance"]) == ["covariance"]
    assert share["slope_per_decade"] == pytest.approx(0.1) and share["n_runs"] == [4] * 4
    assert share["ci"][0] < 0.1 < share["ci"][1]


def test_the_share_slope_from_independent_budgets_is_exact_on_two_budgets():
    from saefast.stats.trend import slope_of_estimates
    out = slope_of_estimates([1_000, 100_000], [0.2, 0.5], [0.03, 0.04], [5, 5])
    assert out["slope_per_decade"] == pytest.approx(0.15)  # 0.3 over two decades
    assert out["se"] == pytest.approx(0.05 / 2)  # sqrt(0.03^2 + 0.04^2) / 2 decades
    # Welch-Satterthwaite: (a + b)^2 / (a^2 / 4 + b^2 / 4), a, b the two variances
    a, b = 0.03 ** 2, 0.04 ** 2
    assert out["df"] == pytest.approx((a + b) ** 2 / (a * a / 4 + b * b / 4))
    assert "independent groups of runs" in out["method"]
    assert slope_of_estimates([1_000, 10_000], [0.1, 0.2], [0.01, None], [5, 5])["ci"] is None


def test_the_share_slope_interval_covers_a_planted_slope():
    """Budgets as independent groups of 8 runs: per-pair values whose pooled mean rises
    0.05 a decade (run and pair effects on top), each budget's estimate and SE from the
    library's jackknife; the slope's 90 % interval holds 0.05 in 0.82-0.97 of 200 studies."""
    from saefast.stats.inference import jackknife, mean
    from saefast.stats.trend import slope_of_estimates
    g, S = np.random.default_rng(8), 8
    i, j = np.triu_indices(S, 1)
    pairs = tuple(zip(i.tolist(), j.tolist()))
    hits = []
    for _ in range(200):
        est, se = [], []
        for b in BUDGETS:
            u = g.normal(0, 0.02, S)
            vals = (0.3 + 0.05 * np.log10(b) + u[i] + u[j] + g.normal(0, 0.02, len(i)))[:, None] \
                + g.normal(0, 0.1, (len(i), 16))
            jk = jackknife(PairedRuns(S, pairs, tuple(vals)), mean())
            est.append(jk["estimate"])
            se.append(jk["se"])
        lo, hi = slope_of_estimates(BUDGETS, est, se, [S] * 4)["ci"]
        hits.append(lo <= 0.05 <= hi)
    print("share-slope coverage", np.mean(hits))
    assert 0.82 <= np.mean(hits) <= 0.97, np.mean(hits)
