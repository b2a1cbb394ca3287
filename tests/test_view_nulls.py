"""saefast.stats.view_nulls: the encoder view's mismatched-pairs floor and the activation view's
token-permutation floor, on planted runs: shared features beat their floor, unrelated ones do
not; the excess's interval is the delete-one-run jackknife of observed minus floor."""

import numpy as np
import pytest
import torch
from test_equivalence import planted_codes, random_codes

from saefast.runs.artifacts import LoadedSAE
from saefast.stats import correlation as corr
from saefast.stats import equivalence as eq
from saefast.stats import view_nulls as vn

PAIRS3 = ((0, 1), (0, 2), (1, 2))


def encoder_runs(shared: bool, S=3, F=48, d=32, seed=0):
    """S runs whose decoders are the same F rows (matched f to f). Every encoder row has a
    common component mu (the activations' mean direction: unrelated rows have cosine ~0.5);
    shared: the runs' encoder rows are one base plus small noise, else independent."""
    g = np.random.default_rng(seed)
    dec = g.standard_normal((F, d))
    mu = 0.9 * np.sqrt(d) * np.eye(d)[0]
    base = g.standard_normal((F, d))
    saes = []
    for _ in range(S):
        own = base + 0.3 * g.standard_normal((F, d)) if shared else g.standard_normal((F, d))
        saes.append(LoadedSAE.in_memory(torch.tensor(own + mu, dtype=torch.float32),
                                        torch.tensor(dec, dtype=torch.float32), 4))
    pairs = [{"index_a": i, "index_b": j, "a_indices": list(range(F)),
              "b_indices": list(range(F)), "all_cosines": [1.0] * F} for i, j in PAIRS3]
    eq.encoder_block(saes, pairs, threshold=0.5)
    return saes, pairs


def test_planted_encoders_beat_the_mismatched_floor_and_random_ones_do_not():
    saes, pairs = encoder_runs(shared=True)
    got = vn.encoder_floor(saes, pairs, threshold=0.5)
    floor = got["cosine"]["floor"]
    assert 0.3 < floor["median"] < 0.7  # the common direction: unrelated rows are not at 0
    ex = got["cosine"]["excess_median"]
    assert ex["ci"][0] > 0.15 and ex["estimate"] > 0.2
    assert got["shared"]["observed"] > 0.9 and got["shared"]["excess"]["ci"][0] > 0.2
    assert got["draws_per_pair"] == [vn.MAX_DRAWS] * 3  # 48 features: the cap
    saes, pairs = encoder_runs(shared=False)
    got = vn.encoder_floor(saes, pairs, threshold=0.5)
    ex = got["cosine"]["excess_median"]
    assert ex["ci"][0] < 0 < ex["ci"][1] and abs(ex["estimate"]) < 0.1
    assert got["cosine"]["observed"]["median"] == pytest.approx(floor["median"], abs=0.1)
    assert got["shared"]["excess"]["ci"][0] < 0 < got["shared"]["excess"]["ci"][1]


def test_a_mismatched_partner_is_never_the_matched_one():
    part = vn.mismatched_partners(7, 500, np.random.default_rng(0))
    assert (part != np.arange(7)).all() and set(np.unique(part)) == set(range(7))


def test_the_excess_interval_is_the_jackknife_of_observed_minus_floor():
    """S = 3: deleting a run leaves one pair, so each replicate is that pair's observed
    median minus its floor's median; the floor moves with the runs (not held fixed)."""
    g = np.random.default_rng(1)
    obs = {k: g.normal(0.5 + 0.1 * n, 0.1, 40) for n, k in enumerate(PAIRS3)}
    flo = {k: g.normal(0.1 * n, 0.1, 200) for n, k in enumerate(PAIRS3)}
    got = vn.floor_interval(3, obs, flo, vn.excess(vn.inf.median()), "test")
    want = np.median(np.concatenate(list(obs.values()))) - \
        np.median(np.concatenate(list(flo.values())))
    assert got["estimate"] == pytest.approx(want)
    left = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
    reps = np.array([np.median(obs[left[r]]) - np.median(flo[left[r]]) for r in range(3)])
    assert got["se"] == pytest.approx(np.sqrt(2 / 3 * np.sum((reps - reps.mean()) ** 2)))
    q = vn.floor_interval(3, obs, flo, vn.above_floor_quantile(0.95), "test")
    pooled_floor = np.concatenate(list(flo.values()))
    at = np.sort(pooled_floor)[int(np.ceil(0.95 * pooled_floor.size)) - 1]
    assert q["estimate"] == pytest.approx(np.mean(np.concatenate(list(obs.values())) > at))


def test_blocks_are_contiguous_and_none_stays_in_place():
    assert vn.block_length(80, 128) == 4 and vn.block_length(10 ** 5, 128) == 128
    assert vn.block_length(10, None) == 1
    T, L = 103, 10
    for seed in range(20):
        order = vn.block_permutation(T, L, np.random.default_rng(seed))
        assert sorted(order) == list(range(T))
        at = 0
        while at < T:  # whole blocks, each moved whole and away from its own place
            start = order[at] // L * L
            size = min(L, T - start)
            assert list(order[at:at + size]) == list(range(start, start + size))
            assert start != at
            at += size


def test_permuted_codes_are_the_codes_of_permuted_tokens():
    a, dense = random_codes(90, 12, 3, 2)
    order = vn.block_permutation(90, 7, np.random.default_rng(3))
    p = vn.permuted_codes(a, order)
    b, _ = random_codes(90, 12, 3, 4)
    direct = corr.Codes(torch.from_numpy(a.values[order]).float(),
                      torch.from_numpy(a.indices[order]), 12)
    ia = np.arange(12)
    np.testing.assert_allclose(corr.pair_correlations(b, p, ia, ia),
                               corr.pair_correlations(b, direct, ia, ia), atol=1e-12)
    np.testing.assert_allclose(corr.pair_correlations(p, b, ia, ia),  # as the A side too
                               corr.pair_correlations(direct, b, ia, ia), atol=1e-12)


def _activation_pairs(codes, F):
    pairs = [{"index_a": i, "index_b": j, "a_indices": list(range(F)),
              "b_indices": list(range(F)), "all_cosines": [0.9] * F} for i, j in PAIRS3]
    eq.activation_block(codes, pairs, source="planted")
    return pairs


def test_unrelated_features_sit_on_the_floor_and_planted_ones_beat_it():
    T, F = 2000, 24
    codes, _ = planted_codes(T, F, [set(), set(), set()], seed=7)
    pairs = _activation_pairs(codes, F)
    got = vn.token_floor(codes, pairs, context_length=64)
    assert got["block_length"] == 64
    assert abs(got["floor"]["mean"]) < 0.03 and got["floor"]["q95"] < 0.15
    assert got["observed"]["median"] > 0.8
    assert got["excess_median"]["ci"][0] > 0.6
    assert got["above_floor_q95"]["estimate"] == 1.0
    for p in pairs:
        assert p["activation"]["floor"]["draws"] == vn.MAX_DRAWS
    # unrelated: each run's codes drawn on their own
    codes = [random_codes(T, F, 4, seed)[0] for seed in (11, 12, 13)]
    pairs = _activation_pairs(codes, F)
    got = vn.token_floor(codes, pairs, context_length=64)
    assert abs(got["floor"]["mean"]) < 0.03 and abs(got["observed"]["median"]) < 0.05
    ex = got["excess_median"]
    assert ex["ci"][0] < 0 < ex["ci"][1]
    assert got["above_floor_q95"]["estimate"] < 0.2  # 0.05 by chance
