"""The evidence block of a report (saefast.stats.evidence): per-feature significance, the share
beyond chance, nearest-neighbour and maximum-cardinality statistics, diagnostics and the
seed-count curve, on dictionaries with a known planted share.

The bare statistics are tested in test_inference.py; here they are checked as a report states
them: through `add_evidence` on matchings shaped like a report's pairs (many repetitions) and
through analyze_runs on run directories (every key, the PNG). The planted population of
test_inference.py puts planted cosines from 0.50 to 0.98, many inside the isotropic null's
upper tail (its 99 % quantile is ~0.59 for 64 x 64 in d = 32).
"""

import itertools

import numpy as np
import pytest
from scipy import stats as sps
from test_inference import D, F, make_run, population

from saefast.data.moments import TokenPool
from saefast.match import match_decoders
from saefast.report import files as reports
from saefast.stats import evidence, evidence_nulls
from saefast.stats import inference as inf
from saefast.stats import recurrence as rec
from saefast.stats import share as sh
from saefast.stats.matched import random_baseline
from saefast.stats.null_model import (
    MAX_NULL_DRAWS,
    NULL_WORK,
    activation_null_model,
    covariance_null_model,
    isotropic_null_model,
    null_draws,
)

from planted_runs import N_SHARED
from planted_runs import F as PLANTED_F
from planted_runs import make_run as make_run_dir

T = 0.5  # a threshold inside the planted range, so every count has something to count


def report_pairs(runs):
    """A report's pair dicts (the keys add_evidence reads) and each matched pair's truth."""
    pairs, truth = [], []
    for i, j in itertools.combinations(range(len(runs)), 2):
        m = match_decoders(runs[i][0], runs[j][0])
        ia, ib = runs[i][1][m.rows], runs[j][1][m.cols]
        pairs.append({"index_a": i, "index_b": j, "a_indices": m.rows.tolist(),
                      "b_indices": m.cols.tolist(), "all_cosines": m.cosines.tolist(),
                      "threshold": T, "n_matched_pairs": int(m.cosines.size)})
        truth.append((ia == ib) & (ia >= 0))
    return pairs, truth


def run_evidence(runs, null=True):
    pairs, truth = report_pairs(runs)
    ev = evidence.add_evidence(pairs, [r[0] for r in runs], n_features=[F] * len(runs),
                               labels=[f"r{k}" for k in range(len(runs))], threshold=T,
                               null=isotropic_null_model(D) if null else None)
    return ev, pairs, truth


def test_the_null_interface_is_random_baseline_of_the_same_shape():
    null = isotropic_null_model(D)
    n_min = inf.min_null_size(F)
    c = null.matched(F, F, n_min)
    assert c.size >= n_min and not c.flags.writeable
    np.testing.assert_array_equal(
        c, random_baseline(F, F, D, n_draws=null_draws(F, F, n_min))["cosines"])
    assert null_draws(10, 20, 10**9) == MAX_NULL_DRAWS and null_draws(10, 20, 1) == 2
    assert null_draws(4096, 4096, inf.min_null_size(4096)) == NULL_WORK // 4096**2  # capped
    assert null_draws(1024, 1024, inf.min_null_size(1024)) * 1024 >= inf.min_null_size(1024)
    # from 10,000 features one draw pools the summary's quantiles: 1 draw, not 2 (seconds each)
    assert null_draws(16384, 16384, inf.min_null_size(16384)) == 1
    assert null_draws(9000, 9000, 10**9) == NULL_WORK // 9000**2 >= 2  # below: at least 2
    a, b = null.sample([3, 5], np.random.default_rng(0))
    assert a.shape == (3, D) and b.shape == (5, D) and a.dtype == np.float32


def test_redundancy_is_the_max_cosine_to_another_feature():
    g = np.random.default_rng(0)
    x = g.standard_normal((30, 8))
    x[7] = 3 * x[2] + 1e-3 * g.standard_normal(8)  # a near-duplicate pair
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u @ u.T
    np.fill_diagonal(c, -np.inf)
    np.testing.assert_allclose(evidence.redundancy(x), c.max(1), atol=1e-6)
    assert evidence.redundancy(x)[[2, 7]].min() > 0.999
    # a null draw's pool takes its first rows only, each still against every row
    np.testing.assert_allclose(evidence.redundancy(x, queries=9), c.max(1)[:9], atol=1e-6)
    assert evidence.redundancy(x, queries=100).shape == (30,)


def test_redundancy_in_blocks_of_rows_meets_every_pair_once_from_either_side(monkeypatch):
    """All rows: each block of rows is multiplied only with the rows from its own on, its
    cosines updating both sides' maxima; with blocks of 4 rows (and a last block of 3), the
    near-duplicates that lie in different blocks are still each other's nearest."""
    g = np.random.default_rng(1)
    x = g.standard_normal((31, 8))
    x[29] = -2 * x[1] + 1e-3 * g.standard_normal(8)  # anti-parallel: not a duplicate
    x[30] = 2 * x[0] + 1e-3 * g.standard_normal(8)  # first block and last block
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u @ u.T
    np.fill_diagonal(c, -np.inf)
    monkeypatch.setattr(evidence_nulls, "_BLOCK_BYTES", 4 * 4 * 31)
    got = evidence.redundancy(x)
    np.testing.assert_allclose(got, c.max(1), atol=1e-6)
    assert got[[0, 30]].min() > 0.999 and got[[1, 29]].max() < 0.999
    np.testing.assert_allclose(evidence.redundancy(x, queries=9), c.max(1)[:9], atol=1e-6)


def test_pvalues_of_pure_null_dictionaries_are_uniform():
    """Independent groups of two random runs: one random feature's matched and nearest
    p-values per group are uniform (KS), and BY finds (almost) nothing."""
    g = np.random.default_rng(21)
    matched, nearest, n_sig = [], [], 0
    for _ in range(150):
        runs = [make_run(population(0.0), g) for _ in range(2)]
        ev, pairs, _ = run_evidence(runs)
        f = g.integers(F)
        matched.append(pairs[0]["pvalues"][f])
        nearest.append(pairs[0]["nearest_pvalues"][f])
        n_sig += pairs[0]["n_significant_by"]
        assert ev["significance"]["null_large_enough"]
    for p in (matched, nearest):
        assert sps.kstest(p, "uniform").pvalue > 0.01
    assert n_sig <= 0.05 * 150  # BY: P(any false discovery) <= 5 % per pair here


def test_fdr_of_the_report_significant_lists():
    """q = 0.25 planted with cosines from 0.5 to 0.98 (many in the null's tail): the mean
    false-discovery proportion of each pair's BY list over 30 groups of 3 runs stays <= 5 %
    (+ 0.02 for the mean of 90 proportions); the list finds most planted pairs above 0.8."""
    g = np.random.default_rng(22)
    fdp, strong = [], []
    for _ in range(30):
        ev, pairs, truth = run_evidence([make_run(population(0.25), g) for _ in range(3)])
        for p, true in zip(pairs, truth):
            sig = np.asarray(p["significant_by"])
            fdp.append(np.sum(sig & ~true) / max(1, sig.sum()))
            c = np.asarray(p["all_cosines"])
            strong.append(np.mean(sig[true & (c > 0.8)]))
        assert ev["significance"]["procedure"] == "benjamini-yekutieli"
        assert ev["significance"]["n_significant_by"] == sum(p["n_significant_by"] for p in pairs)
    print("mean FDP", np.mean(fdp), "power above 0.8", np.nanmean(strong))
    assert np.mean(fdp) <= 0.07
    assert np.nanmean(strong) > 0.9


def _population_values(q, g, n_pairs=100):
    """The population values of the report's pooled statistics: pooled over many
    independent pairs (each of two fresh runs)."""
    runs = [make_run(population(q), g) for _ in range(2 * n_pairs)]
    pairs = {(2 * k, 2 * k + 1): (runs[2 * k][0], runs[2 * k + 1][0]) for k in range(n_pairs)}
    null = evidence_nulls.EvidenceNulls(isotropic_null_model(D), T, "auto").pair(F, F)
    near, pv, most = [], [], []
    for a, b in pairs.values():
        best_a, best_b = rec.nearest_cosines(a, b)
        near.append(np.r_[best_a, best_b])
        pv.append(np.r_[inf.feature_pvalues(best_a, null["near_a"]),
                        inf.feature_pvalues(best_b, null["near_b"])])
        most.append(rec.max_pairs_at(a, b, [T])[T] / F)
    z = np.concatenate([np.r_[sh.zscores(p[:F], null["near_a"].size),
                              sh.zscores(p[F:], null["near_b"].size)] for p in pv])
    return {"share": sh.share_at(np.sort(z), np.ones(z.size)), "nearest_median": np.median(np.concatenate(near)),
            "max_cardinality": np.mean(most)}


@pytest.mark.slow
@pytest.mark.parametrize("q", [0.25, 0.5])
def test_share_recovers_the_planted_share_and_intervals_cover(q):
    """Ten runs per group: the share beyond chance (nearest p-values, bulk-matched) is near q
    (planted features too weak to tell from chance pull it down: their cosines reach down
    into the bulk, 0.5 in D = 32), the matched one is lower (conservative), and the 90 % intervals over
    runs hold the population values in most of 10 groups (nominal 0.9; >= 0.7 is about two
    standard errors below it). S = 5 coverage (measured by hand): docs/benchmarks.md."""
    g = np.random.default_rng(int(q * 100))
    truth = _population_values(q, g)
    hits = {k: [] for k in truth}
    for r in range(10):
        ev, _, _ = run_evidence([make_run(population(q), g) for _ in range(10)])
        got = {"share": ev["share_beyond_chance"],
               "nearest_median": ev["nearest"]["median"],
               "max_cardinality": ev["max_cardinality"]["fraction"]}
        for k, res in got.items():
            hits[k].append(res["ci"][0] <= truth[k] <= res["ci"][1])
        if r == 0:
            assert abs(ev["share_beyond_chance"]["estimate"] - truth["share"]) <= 0.07
            assert q - 0.12 <= truth["share"] <= q
            assert ev["share_beyond_chance_matched"]["estimate"] <= \
                ev["share_beyond_chance"]["estimate"]
    cov = {k: float(np.mean(v)) for k, v in hits.items()}
    print(f"q={q} truth {truth} coverage {cov}")
    assert all(c >= 0.7 for c in cov.values()), cov


def test_counts_nulls_and_curves_on_planted_runs():
    g = np.random.default_rng(23)
    runs = [make_run(population(0.5), g) for _ in range(4)]
    ev, pairs, truth = run_evidence(runs)
    for p in pairs:  # one-to-one <= max-cardinality <= nearest, in counts
        mc = p["max_cardinality"]
        assert mc["one_to_one_count"] <= mc["count"]
        assert mc["null_fraction"] < mc["fraction"] and mc["null_one_to_one_fraction"] < 0.2
        assert p["nearest"]["null_median"] < p["nearest"]["median"]
    assert ev["redundancy"]["null"]["median"] == pytest.approx(
        np.median([r["median"] for r in ev["redundancy"]["runs"]]), abs=0.1)  # random-ish runs
    curves = ev["seed_count_curve"]
    assert set(curves) == {"at_threshold", "beyond_chance", "null_at_threshold",
                           "null_beyond_chance", "null_runs", "null_by"}
    assert curves["null_runs"] == 4  # every run: 4 x 64 features is far below the cap
    real = [c["all"]["mean"] for c in curves["beyond_chance"]["curve"]]
    null = [c["all"]["mean"] for c in curves["null_beyond_chance"]["curve"]]
    assert real == sorted(real, reverse=True) and real[-1] > 0.2  # planted features recur
    assert max(null) < 0.02  # nothing recurs beyond chance among null dictionaries
    null_by = curves["null_by"]  # BY on the null's own dictionaries: (almost) nothing passes
    assert null_by["n_matched"] == 6 * 64
    assert null_by["n_significant_by"] <= 0.02 * null_by["n_matched"]
    assert ev["null"]["shapes"][0]["n_cosines"] >= inf.min_null_size(F)
    bare, _, _ = run_evidence(runs, null=False)  # without a null: only what needs none
    assert bare["significance"] is None and bare["share_beyond_chance"] is None
    assert bare["nearest"]["median"] == ev["nearest"]["median"]


def _null_free(block):
    return {k: v for k, v in block.items() if k != "null"}


def test_an_identity_covariance_null_judges_exactly_like_the_isotropic_one():
    """Σ = I draws the isotropic null's normals (common random numbers): every per-feature
    statistic under it equals the isotropic one, so the plumbing of a second null is exact."""
    g = np.random.default_rng(31)
    runs = [make_run(population(0.5), g) for _ in range(4)]
    pairs, _ = report_pairs(runs)
    ev = evidence.add_evidence(pairs, [r[0] for r in runs], n_features=[F] * 4,
                               labels=list("abcd"), threshold=T, null=isotropic_null_model(D),
                               other_nulls=[covariance_null_model(np.eye(D), "eye")])
    assert list(ev["by_null"]) == ["isotropic", "covariance"]
    iso, cov = ev["by_null"]["isotropic"], ev["by_null"]["covariance"]
    assert cov["null"]["kind"] == "covariance" and not cov["skipped"]
    assert _null_free(cov) == _null_free(iso)
    assert ev["significance"] == iso["significance"]  # the top level is the primary null
    assert ev["share_beyond_chance"] == iso["share_beyond_chance"]


def test_dictionaries_of_the_data_subspace_beat_the_isotropic_null_but_not_the_covariance_one():
    """Runs that share nothing but live in a 6-dimensional subspace (what a covariance of low
    effective rank does to trained decoders): judged against the isotropic null most features
    look like they recur; against the covariance null (Σ of that subspace) almost none do,
    and the activation null (data points of that subspace) agrees."""
    g = np.random.default_rng(5)
    basis = np.linalg.qr(g.standard_normal((D, 6)))[0]  # [D, 6]
    cov = basis @ np.diag(np.linspace(2.0, 1.0, 6)) @ basis.T + 1e-3 * np.eye(D)
    runs = [((g.standard_normal((F, 6)) * np.linspace(2.0, 1.0, 6) ** 0.5) @ basis.T
             + 0.03 * g.standard_normal((F, D))).astype(np.float32) for _ in range(4)]
    pool = TokenPool(g.multivariate_normal(np.zeros(D), cov, size=4000), np.arange(4000))
    pairs, _ = report_pairs([(r, -np.ones(F, dtype=int)) for r in runs])
    ev = evidence.add_evidence(
        pairs, runs, n_features=[F] * 4, labels=list("abcd"), threshold=T,
        null=isotropic_null_model(D), other_nulls=[covariance_null_model(cov, "subspace"),
                                             activation_null_model(pool, "subspace")])
    by = ev["by_null"]
    assert by["isotropic"]["significance"]["fraction_significant_by"] > 0.5
    assert by["isotropic"]["share_beyond_chance"]["estimate"] > 0.5
    for kind in ("covariance", "activations"):
        assert by[kind]["significance"]["fraction_significant_by"] < 0.05
        assert by[kind]["share_beyond_chance"]["estimate"] < 0.15
        assert by[kind]["nearest_null"]["nearest_median"] > \
            by["isotropic"]["nearest_null"]["nearest_median"] + 0.2
        curve = by[kind]["seed_count_curve"]["beyond_chance"]["curve"]
        assert curve[-1]["all"]["mean"] < 0.05


def test_an_activation_null_with_too_few_distinct_tokens_is_skipped_with_the_reason():
    g = np.random.default_rng(9)
    runs = [make_run(population(0.5), g) for _ in range(3)]
    pairs, _ = report_pairs(runs)
    small = TokenPool(g.standard_normal((500, D)), np.arange(500) % 100)  # 100 distinct ids
    ev = evidence.add_evidence(pairs, [r[0] for r in runs], n_features=[F] * 3,
                               labels=list("abc"), threshold=T, null=isotropic_null_model(D),
                               other_nulls=[activation_null_model(small, "small")])
    act = ev["by_null"]["activations"]
    assert act["skipped"] and "100 distinct tokens, 128 features (64 + 64)" in act["reason"]
    # nothing is drawn ahead for it either: only the isotropic null's matched, nearest and
    # redundancy pools (one shape, one size)
    first, rest = evidence.report_prefetch(
        D, [(F, F)] * 3, [F] * 3, threshold=T, solver="auto", baseline=True,
        other_nulls=[activation_null_model(small, "small")])
    assert (len(first), len(rest)) == (1, 2)
    mid = TokenPool(g.standard_normal((500, D)), np.arange(500) % 150)  # pairs fit, 3 runs don't
    ev = evidence.add_evidence(pairs, [r[0] for r in runs], n_features=[F] * 3,
                               labels=list("abc"), threshold=T, null=isotropic_null_model(D),
                               other_nulls=[activation_null_model(mid, "mid")])
    act = ev["by_null"]["activations"]
    assert not act["skipped"] and act["significance"]["n_matched"] == 3 * F
    curves = act["seed_count_curve"]
    assert curves["null_at_threshold"] is None and "192 features" in curves["null_reason"]


def test_a_report_holds_every_key_and_the_seed_count_png(tmp_path):
    """analyze_runs on planted run dirs (40 of 48 features shared at cosine ~0.998): the BY
    list is exactly the planted pairs, the share and both counts are 40/48, and the seed-count
    curve is drawn for the full and the live-only report."""
    dead = (0, 1)
    made = [make_run_dir(tmp_path / "runs", f"s{i}", seed=i, dead=dead) for i in range(1, 5)]
    rep = reports.analyze_runs([d for d, _ in made], tmp_path / "out", threshold=0.9,
                               live_only=True)
    for name in ("seed_count_curve.png", "live_only_seed_count_curve.png"):
        assert name in rep["files"]
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    ev = rep["summary"]["evidence"]
    assert {"null", "significance", "share_beyond_chance", "share_beyond_chance_matched",
            "fraction_significant_by", "nearest", "max_cardinality", "redundancy",
            "by_fire_rate", "cosine_to_init", "seed_count_curve", "method"} <= set(ev)
    assert "Benjamini-Yekutieli" in ev["method"]["significance"]
    share = ev["share_beyond_chance"]
    assert share["estimate"] == pytest.approx(N_SHARED / PLANTED_F, abs=0.02)
    assert share["ci"][0] <= share["estimate"] <= share["ci"][1]
    for p in rep["pairs"]:
        i, j = p["index_a"], p["index_b"]
        perm_a, perm_b = made[i][1], made[j][1]
        planted = {(int(perm_a[s]), int(perm_b[s])) for s in range(N_SHARED)}
        sig = {(a, b) for a, b, s in zip(p["a_indices"], p["b_indices"], p["significant_by"])
               if s}
        assert sig == planted
        assert p["max_cardinality"]["count"] == N_SHARED == p["n_significant_by"]
        assert len(p["pvalues"]) == p["n_matched_pairs"]
    live = rep["live_only"]["summary"]["evidence"]
    assert live["null"]["shapes"][0]["n_a"] == PLANTED_F - len(dead)
    assert live["by_fire_rate"]["n"] == 2 * sum(p["n_matched_pairs"] for p in rep["live_only"]["pairs"])
    stored = reports.load_report(tmp_path / "out")
    assert stored["summary"]["evidence"]["significance"] == ev["significance"]


def test_the_null_seed_count_curve_is_capped_for_large_studies(monkeypatch):
    """20 seeds x 16,384 features would be 190 null matchings per null: the null curve uses
    the first runs whose pairwise work fits, at least 3, and says how many."""
    assert evidence.null_curve_runs([16384] * 20) == 3
    assert evidence.null_curve_runs([128] * 20) == 20
    assert evidence.null_curve_runs([4096] * 20) == 11  # 55 pairs x 2^24 <= 2^30 < 66 x 2^24
    g = np.random.default_rng(2)
    runs = [make_run(population(0.5), g) for _ in range(5)]
    monkeypatch.setattr(evidence, "NULL_CURVE_WORK", 3 * F * F)  # 3 runs' pairs fit, 4 do not
    monkeypatch.setattr(evidence_nulls, "_MEMO", {})
    ev, _, _ = run_evidence(runs)
    curves = ev["seed_count_curve"]
    assert curves["null_runs"] == 3
    assert [c["n_runs"] for c in curves["null_at_threshold"]["curve"]] == [2, 3]
    assert [c["n_runs"] for c in curves["at_threshold"]["curve"]] == [2, 3, 4, 5]
