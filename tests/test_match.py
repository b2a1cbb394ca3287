"""match_decoders and linear_assignment against SciPy (the oracle for exactness)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from saefast.match import (Matching, lapjv_available, linear_assignment, match_decoders,
                           resolve_solver)

SOLVERS = ["lapjv", "scipy"] if lapjv_available() else ["scipy"]  # lapjv is optional


def scipy_oracle(a, b):
    """The original study's recipe: normalise rows, float32 cosine GEMM, SciPy maximise."""
    a = torch.nn.functional.normalize(torch.as_tensor(a, dtype=torch.float32), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(b, dtype=torch.float32), dim=1)
    cos = (a @ b.T).numpy().astype(np.float64)  # [n_a, n_b]
    r, c = linear_sum_assignment(cos, maximize=True)
    return r, c, cos[r, c]


def planted(n_shared=40, n_extra=8, d=32, noise=0.05, seed=0):
    """Two dictionaries sharing n_shared directions (permuted, rescaled, noised)."""
    g = np.random.default_rng(seed)
    shared = g.standard_normal((n_shared, d))
    a = np.vstack([shared + noise * g.standard_normal((n_shared, d)),
                   g.standard_normal((n_extra, d))])
    b = np.vstack([shared + noise * g.standard_normal((n_shared, d)),
                   g.standard_normal((n_extra, d))])
    perm = g.permutation(len(b))  # b row perm[i] holds what was row i
    b_perm = np.empty_like(b)
    b_perm[perm] = b
    scale = g.uniform(0.1, 10.0, size=(len(a), 1))
    return (a * scale).astype(np.float32), b_perm.astype(np.float32), perm


@pytest.mark.parametrize("solver", SOLVERS)
def test_planted_matching_recovers_the_permutation(solver):
    a, b, perm = planted()
    m = match_decoders(a, b, solver=solver)
    assert isinstance(m, Matching) and m.solver == solver and m.certified
    assert m.rows.dtype == np.int64 and np.array_equal(m.rows, np.arange(len(a)))
    assert np.array_equal(m.cols[:40], perm[:40])  # the shared directions find each other
    assert (m.cosines[:40] > 0.95).all()
    r, c, cos = scipy_oracle(a, b)
    assert m.total == pytest.approx(cos.sum(), abs=1e-9)
    np.testing.assert_allclose(m.cosines, cos, atol=1e-9)
    assert set(m.timings) == {"gemm_s", "solve_s"}


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (1, 7), (7, 1), (20, 20)])
def test_rectangular_totals_match_scipy(shape):
    g = np.random.default_rng(1)
    a = g.standard_normal((shape[0], 16))
    b = g.standard_normal((shape[1], 16))
    _, _, want = scipy_oracle(a, b)
    totals = []
    for solver in SOLVERS:
        m = match_decoders(torch.from_numpy(a), b, solver=solver)
        assert len(m) == min(shape)
        assert np.all(np.diff(m.rows) > 0) and len(set(m.cols.tolist())) == len(m)
        assert m.rows.max() < shape[0] and m.cols.max() < shape[1]
        totals.append(m.total)
    assert totals == pytest.approx([want.sum()] * len(SOLVERS), abs=1e-9)


def test_zero_rows_and_auto_solver():
    a = np.zeros((3, 4), np.float32)
    a[0] = [1, 0, 0, 0]
    m = match_decoders(a, np.eye(4, dtype=np.float32), solver="auto")
    assert m.solver == resolve_solver("auto") == ("lapjv" if lapjv_available() else "scipy")
    assert m.total == pytest.approx(1.0)
    assert np.isfinite(m.cosines).all()


@pytest.mark.parametrize("a, b, msg", [
    (np.zeros(4), np.zeros((2, 4)), "must be 2-D"),
    (np.zeros((2, 4)), np.zeros((2, 5)), "same d"),
    (np.zeros((0, 4)), np.zeros((2, 4)), "empty"),
    (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN or infinite"),
    ([[1.0, 2.0]], np.ones((1, 2)), "torch tensor or numpy array"),
])
def test_match_decoders_input_errors(a, b, msg):
    with pytest.raises(ValueError, match=msg):
        match_decoders(a, b)


def test_unknown_and_native_solvers():
    a = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="unknown solver"):
        match_decoders(a, a, solver="hungarian")
    with pytest.raises(ValueError, match="native"):
        match_decoders(a, a, solver="native")


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("shape", [(5, 5), (4, 9), (9, 4), (1, 1), (1, 6), (6, 1), (40, 25)])
def test_linear_assignment_matches_scipy(shape, maximize):
    g = np.random.default_rng(sum(shape) + maximize)
    for cost in (g.standard_normal(shape), g.integers(-5, 5, shape), g.random(shape) > 0.5):
        r, c = linear_assignment(cost, maximize=maximize)
        r0, c0 = linear_sum_assignment(cost, maximize=maximize)
        assert r.dtype == np.int64 and len(r) == len(r0) == min(shape)
        assert np.all(np.diff(r) > 0) and len(set(c.tolist())) == len(c)
        assert float(np.asarray(cost, float)[r, c].sum()) == pytest.approx(
            float(np.asarray(cost, float)[r0, c0].sum()), abs=1e-9)


def test_linear_assignment_default_is_minimise_and_lists_work():
    cost = [[4, 1, 3], [2, 0, 5], [3, 2, 2]]
    r, c = linear_assignment(cost)
    assert r.tolist() == [0, 1, 2] and c.tolist() == [1, 0, 2]


def test_linear_assignment_edge_cases_and_errors_are_scipys():
    assert [x.size for x in linear_assignment(np.zeros((0, 3)))] == [0, 0]
    inf = np.array([[np.inf, 1.0], [1.0, np.inf]])  # inf = forbidden pair, as in SciPy
    assert [x.tolist() for x in linear_assignment(inf)] == [[0, 1], [1, 0]]
    cases = [np.zeros(3), np.array([[np.nan, 1.0], [1.0, 1.0]]),
             np.array([[np.inf, 1.0], [np.inf, 1.0]]), np.array([[-np.inf, 1.0], [1.0, 1.0]])]
    for cost in cases:
        for maximize in (False, True):
            try:
                want = [x.tolist() for x in linear_sum_assignment(cost, maximize=maximize)]
            except ValueError as e:
                with pytest.raises(ValueError) as ours:
                    linear_assignment(cost, maximize=maximize)
                assert str(ours.value) == str(e)
            else:  # e.g. -inf while maximising: a forbidden pair
                assert [x.tolist() for x in linear_assignment(cost, maximize=maximize)] == want


@pytest.mark.skipif(not lapjv_available(), reason="lapjv not installed")
def test_lapjv_needs_doubles():
    # Differences far below float32 resolution: a float32 solve would miss the optimum.
    g = np.random.default_rng(0)
    cost = 1.0 + 1e-9 * g.random((60, 60))
    r, c = linear_assignment(cost)
    r0, c0 = linear_sum_assignment(cost)
    assert abs(cost[r, c].sum() - cost[r0, c0].sum()) < 1e-12  # float32 misses by ~1e-7


dims = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 5))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dims, st.integers(0, 2**31 - 1), st.booleans())
def test_property_totals_equal_scipy(shape, seed, coarse):
    n_a, n_b, d = shape
    g = np.random.default_rng(seed)
    draw = (lambda s: g.integers(-2, 3, s).astype(np.float32)) if coarse else \
        (lambda s: g.standard_normal(s).astype(np.float32))  # coarse: many ties and zero rows
    a, b = draw((n_a, d)), draw((n_b, d))
    _, _, want = scipy_oracle(a, b)
    for solver in SOLVERS:
        m = match_decoders(a, b, solver=solver)
        assert len(m) == min(n_a, n_b)
        assert m.total == pytest.approx(want.sum(), abs=1e-9)
