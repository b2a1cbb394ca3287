"""Do the reports' 90 % intervals over runs cover? Planted groups of S runs at the level of the
per-pair values, the truth from a population of runs 1000x larger, the library's interval
(`inference.jackknife`, what `run_interval` states) on each group.

The generative model: feature f has a base value z_f on Fisher's z scale (a few high "shared"
features, cosine 0.5-0.95, and a bulk near 0.2); pair (i, j) of runs matches feature f at

    cos_ijf = tanh(z_f + u_i + u_j + e_ij + a_if + a_jf + n_ijf)

with run effects u_i (a run's overall quality), run-feature effects a_if (which features a
run learnt well), pair effects e_ij and feature noise n_ijf, all normal. tanh keeps values in
(-1, 1) and shrinks the noise of high cosines, so the pooled values are skewed like real
ones. Three mixes of the variance (`REGIMES`): one like the default study's L3 f128 30K group
(its per-pair medians and means: run part ~0.003-0.01, pair part ~0.009-0.016), one where runs
differ more, and one where only pairs differ. Measured numbers: docs/findings.md."""

import numpy as np
import pytest
from scipy import stats as sps

from saefast.stats import inference as inf
from saefast.stats import pair_variance as pv

F = 64
N_SHARED = 16
_g0 = np.random.default_rng(0)
Z_BASE = np.arctanh(np.r_[np.sort(_g0.uniform(0.5, 0.95, N_SHARED)),
                          np.clip(0.2 + 0.05 * _g0.standard_normal(F - N_SHARED), 0.05, 0.4)])
NULL_MEDIAN = 0.15  # a fixed null median for the excess (taken as known, as reports do)
STATS = (inf.median(), inf.pw_mcc(), inf.excess_median(NULL_MEDIAN),
         inf.fraction_at_least(0.5), inf.fraction_at_least(0.3))
# (sd of u_i, e_ij, a_if, n_ijf)
REGIMES = {"like the default study": (0.003, 0.007, 0.02, 0.06),
           "runs differ": (0.02, 0.02, 0.03, 0.1),
           "pairs only": (0.0, 0.04, 0.0, 0.1)}
GROUPS = {5: 500, 10: 1000, 20: 500}  # planted groups per S (S = 10: the bound is tightest)
N_POP, POP_PAIRS = 20_000, 100_000  # the population: runs, and the random pairs of them used


def pair_values(i, j, u, a, sd, g):
    """[len(i), F] matched cosines of pairs (i[k], j[k]) of runs with effects u [N], a [N, F]."""
    e = g.normal(0, sd[1], len(i))[:, None]
    return np.tanh(Z_BASE + u[i, None] + u[j, None] + e + a[i] + a[j]
                   + g.normal(0, sd[3], (len(i), F)))


def population_truth(sd, seed):
    """Each statistic pooled over POP_PAIRS random pairs of a population of N_POP runs."""
    g = np.random.default_rng(seed)
    u, a = g.normal(0, sd[0], N_POP), g.normal(0, sd[2], (N_POP, F))
    i = g.integers(0, N_POP, POP_PAIRS)
    j = (i + g.integers(1, N_POP, POP_PAIRS)) % N_POP  # j != i
    v = np.sort(pair_values(i, j, u, a, sd, g).ravel())
    return {s.name: float(s.fn(v, np.ones(v.size))) for s in STATS}


def coverage(sd, S, truth, seed, groups=None):
    """{stat: (coverage of the reported interval, of the plain jackknife's, mean half-width)}
    over `groups` planted groups of S runs (all pairs), the values drawn for all at once."""
    g = np.random.default_rng([seed, S])
    i, j = np.triu_indices(S, 1)
    pairs = tuple(zip(i.tolist(), j.tolist()))
    q = sps.t.ppf(0.95, S - 1)
    hits = {s.name: [] for s in STATS}
    for _ in range(groups or GROUPS[S]):
        u, a = g.normal(0, sd[0], S), g.normal(0, sd[2], (S, F))
        data = inf.PairedRuns(S, pairs, tuple(pair_values(i, j, u, a, sd, g)))
        for s in STATS:
            jk = inf.jackknife(data, s)
            t, est = truth[s.name], jk["estimate"]
            hits[s.name].append((jk["ci"][0] <= t <= jk["ci"][1],
                                 abs(est - t) <= q * jk["se_jackknife"],
                                 jk["ci"][1] - est))
    return {k: tuple(float(x) for x in np.mean(v, axis=0)) for k, v in hits.items()}


_TRUTH: dict = {}


def truth_of(regime):
    if regime not in _TRUTH:
        _TRUTH[regime] = population_truth(REGIMES[regime], seed=1)
    return _TRUTH[regime]


def test_the_jackknife_coefficients_are_the_u_statistic_formulas():
    """Equal pairs: the jackknife counts sigma_r^2 4 / (S (S-2)) times, the truth 1 / P."""
    for S in (4, 5, 10, 20):
        i, j = np.triu_indices(S, 1)
        k_r, t_r = pv.coefficients(tuple(zip(i.tolist(), j.tolist())), (64,) * len(i), S)
        assert k_r == pytest.approx(4 / (S * (S - 2)))
        assert t_r == pytest.approx(2 / (S * (S - 1)))


def test_the_correction_removes_the_pair_term_of_a_mean_and_nothing_else():
    """A pooled mean of purely additive run effects (no pair term): the pairs' residuals are
    0, so the interval is the plain jackknife's; pure pair noise: the variance drops toward
    the true sigma^2 / P (2.25x below the jackknife's at S = 10, on average)."""
    S, g = 10, np.random.default_rng(5)
    i, j = np.triu_indices(S, 1)
    pairs = tuple(zip(i.tolist(), j.tolist()))
    u = g.normal(0, 0.1, S)
    runs_only = inf.PairedRuns(S, pairs, tuple(np.full(8, u[a] + u[b]) for a, b in pairs))
    jk = inf.jackknife(runs_only, inf.mean())
    assert jk["pair_variance"] == pytest.approx(0, abs=1e-20)
    assert jk["se"] == pytest.approx(jk["se_jackknife"])
    ratios = []
    for _ in range(300):
        e = g.normal(0, 1, len(pairs))
        jk = inf.jackknife(inf.PairedRuns(S, pairs, tuple(np.full(4, x) for x in e)), inf.mean())
        ratios.append((jk["se"] ** 2, jk["se_jackknife"] ** 2))
    v, v_j = np.mean(ratios, axis=0)
    true = 1 / len(pairs)
    assert v_j == pytest.approx(true * 2 * (S - 1) / (S - 2), rel=0.15)
    assert true <= v <= 1.5 * true  # the positive part of the run term is all that is left


def test_the_population_truth_is_far_more_precise_than_any_interval():
    """Two independent populations agree to a tenth of the S = 20 interval's half-width."""
    regime = "runs differ"
    other = population_truth(REGIMES[regime], seed=2)
    width = coverage(REGIMES[regime], 20, truth_of(regime), seed=9, groups=20)
    for name, t in truth_of(regime).items():
        assert abs(t - other[name]) < 0.1 * width[name][2], name


@pytest.mark.slow  # ~30 s a regime on one core
@pytest.mark.parametrize("regime", list(REGIMES))
def test_intervals_cover_at_ten_and_twenty_runs(regime):
    """500-1000 planted groups at S = 5, 10 and 20: at S >= 10 the reported 90 % interval
    covers 0.85-0.95 where runs differ; where only pairs differ, it is closer to 0.90 than
    the plain jackknife's (which covers 0.98-0.99 there) and below it. S = 5 is computed and
    printed (its numbers: docs/findings.md), not asserted."""
    truth, sd = truth_of(regime), REGIMES[regime]
    got = {S: coverage(sd, S, truth, seed=S) for S in (5, 10, 20)}
    for S, cov in got.items():
        print(f"{regime} S={S}: " + ", ".join(f"{k} {c:.3f} (plain {p:.3f})"
                                              for k, (c, p, _) in cov.items()))
    assert set(got[5]) == {s.name for s in STATS} and all(0 < c <= 1 for c, _, _ in
                                                            got[5].values())
    for S in (10, 20):
        for name, (c, plain, _) in got[S].items():
            if regime == "pairs only":
                assert 0.85 <= c < plain and abs(c - 0.9) < abs(plain - 0.9), (S, name, c)
            else:
                assert 0.85 <= c <= 0.95, (S, name, c)
