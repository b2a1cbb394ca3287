"""saefast.stats.inference and saefast.stats.recurrence on synthetic dictionaries with a known planted share.

A population: n = q * F shared unit directions in d = 32; planted feature k is its direction
plus Gaussian noise whose level gives an expected pair cosine from 0.50 to 0.98 (so many lie
inside the random null's upper tail: its 90 / 99 / 99.9 % quantiles are ~0.49 / 0.59 / 0.66
for 64 x 64 in d = 32), times a per-run factor (the seed-level effect). The other features
are random. Runs are matched with saefast.match.match_decoders, as real dictionaries are.
"""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from saefast.errors import ConfigError
from saefast.match import match_decoders
from saefast.report.assemble import compute_stability_report
from saefast.stats import inference as inf
from saefast.stats import recurrence as rec
from saefast.stats.matched import random_baseline

F, D = 64, 32


def population(q, seed=7):
    g = np.random.default_rng(seed)
    n = round(q * F)
    U = g.standard_normal((n, D))
    U /= np.linalg.norm(U, axis=1, keepdims=True)  # [n, D] shared directions
    sigma = np.sqrt(1 / np.linspace(0.50, 0.98, n) - 1)  # cos(u + e1, u + e2) ~ 1 / (1 + s^2)
    return U, sigma


def make_run(pop, g):
    """(decoder [F, D] float32, planted id per feature [F], -1 = random)."""
    U, sigma = pop
    n = len(U)
    scale = g.uniform(0.7, 1.3)  # this run's noise factor: what makes runs the unit
    rows = np.vstack([U + scale * sigma[:, None] * g.standard_normal((n, D)) / np.sqrt(D),
                      g.standard_normal((F - n, D))])
    ids = np.r_[np.arange(n), -np.ones(F - n, dtype=int)]
    perm = g.permutation(F)
    return rows[perm].astype(np.float32), ids[perm]


def match_runs(runs):
    """{(i, j): (matched cosines [F], truly shared [F] bool)} for every pair i < j."""
    out = {}
    for i, j in itertools.combinations(range(len(runs)), 2):
        m = match_decoders(runs[i][0], runs[j][0])
        ia, ib = runs[i][1][m.rows], runs[j][1][m.cols]
        out[(i, j)] = (m.cosines, (ia == ib) & (ia >= 0))
    return out


def paired(runs):
    return inf.PairedRuns.from_dict(len(runs), {k: v[0] for k, v in match_runs(runs).items()})


@pytest.fixture(scope="module")
def null():
    return np.asarray(random_baseline(F, F, D, n_draws=200)["cosines"])  # [12800]


@pytest.fixture(scope="module")
def nn_null():
    return rec.random_nearest_baseline(F, F, D, n_draws=200)  # [12800]


# ---------------------------------------------------------------------------- resampling


def test_weighted_statistics_equal_the_expanded_multiset():
    g = np.random.default_rng(0)
    for _ in range(50):
        vals = [g.normal(size=g.integers(1, 6)) for _ in range(6)]
        data = inf.PairedRuns.from_dict(4, dict(zip(itertools.combinations(range(4), 2), vals)))
        w = g.integers(0, 4, size=6).astype(float)
        w[g.integers(6)] = 1  # at least one pair used
        expanded = np.concatenate([np.repeat(v, int(k)) for v, k in zip(vals, w)])
        assert data.evaluate(inf.median(), w) == np.median(expanded)
        frac = data.evaluate(inf.fraction_at_least(0.1), w)
        assert frac == pytest.approx(np.mean(expanded >= 0.1))
        assert data.evaluate(inf.mean(), w) == pytest.approx(np.mean(expanded))


def test_jackknife_deletes_whole_runs_and_uses_t():
    g = np.random.default_rng(1)
    runs = [make_run(population(0.5), g) for _ in range(5)]
    data = paired(runs)
    out = inf.jackknife(data, inf.median(), level=0.9)
    for r in range(5):  # theta_(r) = the pooled median of the 6 pairs without run r
        kept = np.concatenate([v for (i, j), v in zip(data.pairs, data.values) if r not in (i, j)])
        assert out["replicates"][r] == np.median(kept)
    half = out["ci"][1] - out["estimate"]
    assert half == pytest.approx(sps.t.ppf(0.95, 4) * out["se"])
    assert out["method"].startswith("delete-one-run jackknife") and "t(S-1)" in out["method"]
    with pytest.raises(ConfigError):
        inf.jackknife(inf.PairedRuns.from_dict(2, {(0, 1): [0.5]}), inf.median())


def test_bootstrap_never_pairs_a_run_with_its_copy_and_is_seeded():
    pairs = np.array(list(itertools.combinations(range(4), 2)))
    rng = np.random.default_rng(0)
    for _ in range(200):
        state = rng.bit_generator.state
        w = inf._bootstrap_weights(rng, pairs, 4)
        rng2 = np.random.default_rng()
        rng2.bit_generator.state = state
        draw = rng2.integers(0, 4, size=4)
        expected = [sum(1 for a, b in itertools.combinations(draw, 2) if {a, b} == {i, j})
                    for i, j in pairs]  # positions a < b holding runs i != j
        assert w.tolist() == expected
    data = inf.PairedRuns.from_dict(3, {(0, 1): [0.1, 0.2], (0, 2): [0.5], (1, 2): [0.9, 0.7]})
    a = inf.cluster_bootstrap(data, inf.median(), n_boot=300, seed=4)
    assert a == inf.cluster_bootstrap(data, inf.median(), n_boot=300, seed=4)
    assert a["redrawn"] > 0  # 3 of 27 draws hold one distinct run: redrawn, not NaN
    assert "cluster bootstrap over runs" in a["method"] and "self-pairs dropped" in a["method"]


def test_paired_runs_from_report(tmp_path):
    from planted_runs import make_run as make_run_dir
    dirs = [make_run_dir(tmp_path, f"r{s}", s)[0] for s in range(3)]
    report = compute_stability_report(dirs, threshold=0.9, baseline=False)
    data = inf.PairedRuns.from_report(report)
    assert data.n_runs == 3 and data.pairs == ((0, 1), (0, 2), (1, 2))
    assert data.evaluate(inf.median()) == report["summary"]["global_median"]
    assert data.evaluate(inf.fraction_at_least(0.9)) == report["summary"]["fraction_above"]["0.9"]


def _coverage(S, reps, seed, expand=True):
    """Share of `reps` draws of S runs whose 90 % intervals hold the truth, per method."""
    pop = population(0.5)
    g = np.random.default_rng(seed)
    pooled = np.concatenate([match_decoders(make_run(pop, g)[0], make_run(pop, g)[0]).cosines
                             for _ in range(2000)])  # a random pair's matched cosines
    truth = {"global_median": np.median(pooled), "fraction_above_0.5": np.mean(pooled >= 0.5)}
    hits = {}
    for r in range(reps):
        data = paired([make_run(pop, g) for _ in range(S)])
        for stat in (inf.median(), inf.fraction_at_least(0.5)):
            for name, res in (("jackknife", inf.jackknife(data, stat)),
                              ("bootstrap", inf.cluster_bootstrap(data, stat, n_boot=400,
                                                                  seed=r, expand=expand))):
                lo, hi = res["ci"]
                hits.setdefault((stat.name, name), []).append(lo <= truth[stat.name] <= hi)
    return {k: float(np.mean(v)) for k, v in hits.items()}


@pytest.mark.slow
def test_intervals_cover_the_truth_at_ten_runs():
    # 150 draws (by hand): jackknife 0.91 / 0.92, bootstrap 0.92 / 0.91 (median / fraction)
    cov = _coverage(S=10, reps=40, seed=11)
    print("coverage at S=10 (nominal 0.90):", cov)
    assert all(0.8 <= c <= 1.0 for c in cov.values()), cov


@pytest.mark.slow
def test_intervals_at_five_runs():
    """S = 5, what is true (150 draws by hand): the jackknife's t(4) interval covered 0.91 /
    0.86 (median / fraction >= 0.5), the expanded bootstrap 0.93 / 0.91, the plain percentile
    bootstrap only 0.82 / 0.78 (it is narrow with few clusters)."""
    cov = _coverage(S=5, reps=40, seed=5)
    plain = _coverage(S=5, reps=40, seed=5, expand=False)
    print("coverage at S=5 (nominal 0.90):", cov, "plain percentile:", plain)
    assert all(c >= 0.75 for c in cov.values()), cov
    for stat in ("global_median", "fraction_above_0.5"):  # same draws, wider intervals
        assert plain[(stat, "bootstrap")] <= cov[(stat, "bootstrap")]


# ---------------------------------------------------------------------------- significance


def test_pvalues_of_pure_null_dictionaries_are_uniform(null, nn_null):
    g = np.random.default_rng(2)
    matched, nearest = [], []
    for _ in range(400):  # one random feature per independent pair: independent p-values
        a = g.standard_normal((F, D)).astype(np.float32)
        b = g.standard_normal((F, D)).astype(np.float32)
        f = g.integers(F)
        matched.append(inf.feature_pvalues(match_decoders(a, b).cosines[f], null))
        nearest.append(inf.feature_pvalues(rec.nearest_cosines(a, b)[0][f], nn_null))
    for p in (matched, nearest):
        assert sps.kstest(p, "uniform").pvalue > 0.01
    p = inf.feature_pvalues([2.0, -2.0, np.median(null)], null)
    assert p[0] == 1 / (null.size + 1) and p[1] == 1.0 and 0.45 < p[2] < 0.55


def test_fdr_of_the_significant_lists(null, nn_null):
    """Mean false-discovery proportion over 100 pairs (q = 0.25, planted cosines 0.5 to 0.98).
    By hand: BY 0.004, BH 0.030 (matched). Slack: 5 % + 0.02 (about two standard errors of a
    mean of 100 proportions near 0.05)."""
    pop = population(0.25)
    g = np.random.default_rng(3)
    fdp = {"by": [], "bh": [], "nn_by": [], "nn_bh": []}
    for _ in range(100):
        (a, ia), (b, ib) = make_run(pop, g), make_run(pop, g)
        m = match_decoders(a, b)
        true = (ia[m.rows] == ib[m.cols]) & (ia[m.rows] >= 0)
        s = inf.significance(m.cosines, null)
        assert s["null_large_enough"] and "Benjamini-Yekutieli" in s["method"]
        t = inf.significance(rec.nearest_cosines(a, b)[0], nn_null)
        nn_true = ia >= 0  # a feature of A is truly shared iff it is planted (b has them all)
        for key, res, truth in (("by", s, true), ("bh", s, true),
                                ("nn_by", t, nn_true), ("nn_bh", t, nn_true)):
            R = res[key[-2:]]
            fdp[key].append(np.sum(R & ~truth) / max(1, R.sum()))
        assert s["n_by"] <= s["n_bh"]  # BY is the stricter list
    mean_fdp = {k: float(np.mean(v)) for k, v in fdp.items()}
    print("mean FDP:", mean_fdp)
    assert all(v <= 0.07 for v in mean_fdp.values()), mean_fdp


@pytest.mark.parametrize("q", [0.25, 0.5])
def test_storey_share_recovers_the_planted_share(q, null, nn_null):
    """Ten runs, all 45 pairs pooled. Nearest-neighbour p-values are exact for unplanted
    features, so 1 - pi0 recovers q up to the planted features too weak to tell from chance
    (a planted cosine of 0.5 in a noisy run falls below the null's median): here 0.212 for
    0.25 and 0.454 for 0.5 (over 100 independent pairs: 0.243, 0.485). Matched p-values are
    conservative (0.115, 0.295): an unplanted feature of a pair that shares features is
    matched among fewer free partners than the null's, so its cosine falls below the null."""
    g = np.random.default_rng(4)
    runs = [make_run(population(q), g) for _ in range(10)]
    matched = paired(runs)
    nearest = inf.PairedRuns.from_dict(10, {
        (i, j): np.concatenate(rec.nearest_cosines(runs[i][0], runs[j][0]))
        for i, j in itertools.combinations(range(10), 2)})
    share_nn = inf.share_intervals(nearest, nn_null, n_boot=400)
    share_m = inf.share_intervals(matched, null, n_boot=400)
    print(f"q={q}: nearest {share_nn['estimate']:.3f} {share_nn['jackknife']['ci']}, "
          f"matched {share_m['estimate']:.3f}")
    assert abs(share_nn["estimate"] - q) <= 0.06
    assert share_m["estimate"] <= share_nn["estimate"] and share_m["estimate"] <= q + 0.02
    assert share_nn["storey_lambda"] == inf.STOREY_LAMBDA == 0.5
    assert "lambda_0.5" in share_nn["jackknife"]["statistic"]


def test_min_null_size():
    m = 64
    n = inf.min_null_size(m, 0.05, "by")
    harmonic = sum(1 / k for k in range(1, m + 1))
    assert 1 / (n + 1) <= 0.05 / (m * harmonic) < 1 / n
    assert inf.min_null_size(m, 0.05, "bh") == 1279


# ---------------------------------------------------------------------------- recurs at t


def _brute_force_max_pairs(C, t):
    n, m = C.shape
    return max(sum(C[i, p[i]] >= t for i in range(n)) for p in itertools.permutations(range(m), n))


def test_max_cardinality_at_t():
    g = np.random.default_rng(5)
    for trial in range(20):  # tiny: brute force over all injections
        a, b = g.standard_normal((5, 3)), g.standard_normal((6, 3))
        ua = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32).astype(float)
        ub = (b / np.linalg.norm(b, axis=1, keepdims=True)).astype(np.float32).astype(float)
        counts = rec.recurrence_counts(a, b, [0.2, 0.5, 0.8])
        for t, c in counts.items():
            assert c["max_cardinality"] == _brute_force_max_pairs(ua @ ub.T, t)
            assert c["one_to_one"] <= c["max_cardinality"] <= min(c["nearest_a"], c["nearest_b"])
    pop = population(0.5)
    (a, _), (b, _) = make_run(pop, g), make_run(pop, g)
    counts = rec.recurrence_counts(a, b, [0.3, 0.5, 0.9])
    assert counts[0.3]["one_to_one"] < counts[0.3]["max_cardinality"]  # the sum trades count
    for c in counts.values():
        assert c["one_to_one"] <= c["max_cardinality"] <= min(c["nearest_a"], c["nearest_b"])


def test_threshold_edges_blockwise_is_exact(monkeypatch):
    g = np.random.default_rng(6)
    a, b = g.standard_normal((50, 8)), g.standard_normal((40, 8))
    whole = rec.threshold_edges(a, b, 0.3)
    monkeypatch.setattr(rec, "EDGE_BLOCK_BYTES", 8 * 40 * 7)  # blocks of 7 rows
    blocks = rec.threshold_edges(a, b, 0.3)
    np.testing.assert_array_equal(whole[0], blocks[0])  # same edges (none within 1e-15 of t)
    np.testing.assert_array_equal(whole[1], blocks[1])
    np.testing.assert_allclose(whole[2], blocks[2], rtol=0, atol=1e-15)  # GEMM blocking: 1 ulp
    best_a, best_b = rec.nearest_cosines(a, b)
    ua, ub = rec._unit64(a).numpy(), rec._unit64(b).numpy()
    np.testing.assert_allclose(best_a, (ua @ ub.T).max(1), atol=1e-12)
    np.testing.assert_allclose(best_b, (ua @ ub.T).max(0), atol=1e-12)


def test_threshold_edges_restricted_by_nearest_are_the_same_edges():
    """Only rows and columns whose nearest cosine can reach t are computed (a 16K null pair
    at t 0.9 has a handful): the edges, and the maximum pair counts, are the full ones."""
    g = np.random.default_rng(8)
    a = g.standard_normal((300, 16))
    b = np.r_[a[:40] + 0.05 * g.standard_normal((40, 16)), g.standard_normal((260, 16))]
    b = b[g.permutation(300)]
    near = rec.nearest_cosines(a, b)
    for t in (0.5, 0.9, 0.995):
        full, cut = rec.threshold_edges(a, b, t), rec.threshold_edges(a, b, t, near)
        order = lambda e: np.lexsort((e[1], e[0]))  # noqa: E731
        for x, y in zip(full, cut):
            np.testing.assert_allclose(x[order(full)], y[order(cut)], rtol=0, atol=1e-15)
        assert len(cut[0]) > 0
        assert rec.max_pairs_at(a, b, [t], near) == rec.max_pairs_at(a, b, [t])
    # a row whose float32 nearest sits just under t still has its float64 edges looked at
    x = np.eye(4)[:2]
    y = np.array([[1.0, 1e-6, 0, 0], [0, 0, 1.0, 0]])
    near = (np.array([0.5 - rec.NEAREST_SLACK / 2, 0.0]), np.array([0.5, 0.0]))
    assert rec.max_pairs_at(x, y, [0.5], near)[0.5] == 1


# ---------------------------------------------------------------------------- seed-count curve


def test_seed_count_curve_known_answers():
    S, Fr, g = 6, 400, np.random.default_rng(7)
    shared = [np.zeros((Fr, S), dtype=bool) for _ in range(S)]
    for r in range(S):  # features < 100 recur everywhere, the rest nowhere
        shared[r][:100] = True
        shared[r][:, r] = False
    took = [np.ones(Fr, dtype=bool) for _ in range(S)]
    for point in rec.seed_count_curve(shared, took)["curve"]:
        assert point["all"]["mean"] == point["half"]["mean"] == 0.25
    p = 0.7  # independent hits: all = p^(N-1), half = P(Bin(N-1, p) >= ceil((N-1)/2))
    hits = [g.random((20000, S)) < p for _ in range(S)]
    took = [np.ones(20000, dtype=bool) for _ in range(S)]
    out = rec.seed_count_curve(hits, took, max_subsets=10, seed=1)
    assert [c["n_runs"] for c in out["curve"]] == list(range(2, S + 1))
    for c in out["curve"]:
        k = c["n_runs"] - 1
        assert c["all"]["mean"] == pytest.approx(p ** k, abs=0.01)
        half = sps.binom.sf(math.ceil(k / 2) - 1, k, p)  # P(Bin(k, p) >= ceil(k / 2))
        assert c["half"]["mean"] == pytest.approx(half, abs=0.01)
        assert c["n_choices"] == min(10, math.comb(S, c["n_runs"]))
    assert out["curve"][-1]["all"]["jackknife"] is None  # N = S: every choice uses every run
    assert out["curve"][0]["all"]["jackknife"]["se"] > 0


def test_seed_count_curve_by_bit_masks_equals_the_direct_count(monkeypatch):
    """The curve counts through each run's distinct hit masks (`_run_masks`, fast at 16K
    features and 20 runs); the same floats as counting the [F, S] hit rows directly, dead
    features (not in took) included."""
    g = np.random.default_rng(3)
    S = 9
    hits = [g.random((300, S)) < 0.3 for _ in range(S)]
    took = [g.random(300) < 0.9 for _ in range(S)]
    took[4][3:] = False  # a run with 3 live features
    fast = rec.seed_count_curve(hits, took, max_subsets=25)
    monkeypatch.setattr(rec, "_run_masks", lambda h, t: None)
    assert rec.seed_count_curve(hits, took, max_subsets=25) == fast
    x = np.array([0, 1, 2**40 + 7, 2**63], dtype=np.uint64)
    assert rec._popcount(x).tolist() == [0, 1, 4, 1]


def test_seed_count_curve_from_a_report(tmp_path):
    from planted_runs import make_run as make_run_dir
    dirs = [make_run_dir(tmp_path, f"r{s}", s)[0] for s in range(4)]
    report = compute_stability_report(dirs, threshold=0.9, baseline=False)
    h1, t1 = rec.hits_from_report(report)
    h2, t2 = rec.hits_from_feature_recurrence(report)
    for a, b in zip(h1 + t1, h2 + t2):
        np.testing.assert_array_equal(a, b)
    curve = rec.seed_count_curve(h1, t1, level=0.9)["curve"]
    alls = [c["all"]["mean"] for c in curve]
    assert alls == sorted(alls, reverse=True)  # found in all of more runs: never more often
    assert 0.7 < alls[-1] <= 40 / 48 + 1e-12  # 40 of 48 features are planted (5 % noise)
    for c in curve[:-1]:
        lo, hi = c["all"]["jackknife"]["ci"]
        assert lo <= c["all"]["mean"] <= hi


def test_a_fractions_interval_stays_within_zero_and_one():
    """The jackknife's t interval of a fraction near 0 or 1 can leave [0, 1]; reports clip it
    (equivalence.shared_fraction, the BY fractions), the estimate untouched."""
    near_zero = {"estimate": 0.0004, "ci": [-0.0007, 0.0015]}
    assert inf.fraction_interval(near_zero) == {"estimate": 0.0004, "ci": [0.0, 0.0015]}
    assert inf.fraction_interval({"estimate": 0.999, "ci": [0.998, 1.002]})["ci"] == [0.998, 1.0]
    assert inf.fraction_interval({"estimate": 0.5, "ci": None})["ci"] is None
