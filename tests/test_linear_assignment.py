"""linear_assignment against SciPy: the same indices (ties included), errors and edge cases.
SciPy's own test suite runs on it in tests/test_scipy_suite.py."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from saefast.match import _lap, assignment, lapjv_available, linear_assignment

needs_native = pytest.mark.skipif(not _lap.available(), reason="native solver not built")


def assert_same_as_scipy(cost, maximize=False):
    r, c = linear_assignment(cost, maximize=maximize)
    r0, c0 = linear_sum_assignment(cost, maximize=maximize)
    assert r.dtype == np.int64 and c.dtype == np.int64
    assert r.tolist() == r0.tolist() and c.tolist() == c0.tolist()


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
        assert_same_as_scipy(cost, maximize)  # and the very same pairs, ties or not


@pytest.mark.parametrize("shape", [(8, 8), (3, 7), (7, 3), (1, 4), (4, 1)])
@pytest.mark.parametrize("value", [1.0, 0.0, -2.5])
def test_all_equal_matrix_gives_scipys_answer(shape, value):
    """Every assignment is optimal; SciPy returns the identity (its issue #11602)."""
    cost = np.full(shape, value)
    r, c = linear_assignment(cost)
    k = min(shape)
    assert r.tolist() == list(range(k)) and c.tolist() == list(range(k))
    assert_same_as_scipy(cost, maximize=True)


@pytest.mark.parametrize("kind", ["repeated-rows", "repeated-cols", "two-values", "rounded"])
@pytest.mark.parametrize("shape", [(6, 6), (5, 9), (9, 5), (60, 60), (40, 70)])
def test_ties_give_scipys_answer(kind, shape):
    g = np.random.default_rng(len(kind) * 100 + shape[0])
    cost = {"repeated-rows": lambda: np.tile(g.standard_normal(shape[1]), (shape[0], 1)),
            "repeated-cols": lambda: np.tile(g.standard_normal((shape[0], 1)), (1, shape[1])),
            "two-values": lambda: g.integers(0, 2, shape).astype(float),
            "rounded": lambda: np.round(g.random(shape), 1)}[kind]()
    for maximize in (False, True):
        assert_same_as_scipy(cost, maximize)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1),
       st.sampled_from(["normal", "ints", "bool", "rounded"]), st.booleans())
def test_property_same_indices_as_scipy(n, m, seed, kind, maximize):
    g = np.random.default_rng(seed)
    cost = {"normal": lambda: g.standard_normal((n, m)),
            "ints": lambda: g.integers(-2, 3, (n, m)),
            "bool": lambda: g.random((n, m)) < 0.5,
            "rounded": lambda: np.round(g.random((n, m)), 1)}[kind]()
    assert_same_as_scipy(cost, maximize)


@needs_native
def test_unique_optima_are_solved_natively_and_ties_by_scipy():
    """The native solver answers when its duals prove the optimum unique; not on ties."""
    g = np.random.default_rng(0)
    for shape in [(50, 50), (30, 80), (80, 30), (1, 1), (1, 5)]:
        cost = g.standard_normal(shape)
        got = assignment._native_unique(cost)
        assert got is not None
        assert [x.tolist() for x in got] == [x.tolist() for x in linear_sum_assignment(cost)]
    for cost in (np.ones((4, 4)), np.zeros((3, 5)), np.array([[1.0, 1.0]]),  # a free column ties
                 np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),  # rows 0 and 2 are equal
                 np.array([[1.0, 2.0], [2.0, 3.0]])):  # both assignments cost 4
        assert assignment._native_unique(cost) is None


@needs_native
def test_unique_optimum_rejects_a_dual_proof_with_slack():
    cost = np.array([[0.0, 5.0], [5.0, 0.0]])
    x, u, v = _lap.solve_dense(cost)
    assert assignment.unique_optimum(cost, x, u, v)
    assert not assignment.unique_optimum(cost, x, u + 1.0, v)  # infeasible duals prove nothing
    assert not assignment.unique_optimum(cost, x[::-1].copy(), u, v)  # not tight on x


def test_linear_assignment_without_the_native_build_is_scipy(monkeypatch):
    monkeypatch.setattr(_lap, "available", lambda: False)
    assert linear_assignment([[2, 1], [1, 2]])[1].tolist() == [1, 0]
    assert_same_as_scipy(np.ones((3, 5)))


def test_linear_assignment_default_is_minimise_and_lists_work():
    cost = [[4, 1, 3], [2, 0, 5], [3, 2, 2]]
    r, c = linear_assignment(cost)
    assert r.tolist() == [0, 1, 2] and c.tolist() == [1, 0, 2]


def test_linear_assignment_edge_cases_and_errors_are_scipys():
    assert [x.size for x in linear_assignment(np.zeros((0, 3)))] == [0, 0]
    inf = np.array([[np.inf, 1.0], [1.0, np.inf]])  # inf = forbidden pair, as in SciPy
    assert [x.tolist() for x in linear_assignment(inf)] == [[0, 1], [1, 0]]
    cases = [np.zeros(3), np.array([[np.nan, 1.0], [1.0, 1.0]]),
             np.array([[np.inf, 1.0], [np.inf, 1.0]]), np.array([[-np.inf, 1.0], [1.0, 1.0]]),
             np.eye(3).astype(str), np.eye(2, dtype=complex)]
    for cost in cases:
        for maximize in (False, True):
            try:
                want = [x.tolist() for x in linear_sum_assignment(cost, maximize=maximize)]
            except Exception as e:  # noqa: BLE001  (the same type and message as SciPy's)
                with pytest.raises(type(e)) as ours:
                    linear_assignment(cost, maximize=maximize)
                assert type(ours.value) is type(e) and str(ours.value) == str(e)
            else:  # e.g. -inf while maximising: a forbidden pair
                assert [x.tolist() for x in linear_assignment(cost, maximize=maximize)] == want


def test_tiny_differences_are_not_lost():
    # Differences far below float32 resolution: a float32 solve would miss the optimum.
    g = np.random.default_rng(0)
    cost = 1.0 + 1e-9 * g.random((60, 60))
    r, c = linear_assignment(cost)
    r0, c0 = linear_sum_assignment(cost)
    assert abs(cost[r, c].sum() - cost[r0, c0].sum()) < 1e-12  # float32 misses by ~1e-7
    assert r.tolist() == r0.tolist() and c.tolist() == c0.tolist()


@pytest.mark.skipif(not lapjv_available(), reason="lapjv not installed")
def test_lapjv_needs_doubles():
    """match_decoders' "lapjv" solver passes force_doubles (float32 misses by ~1e-7 here)."""
    from saefast.match.decoders import _lapjv_min

    g = np.random.default_rng(0)
    cost = 1.0 + 1e-9 * g.random((60, 60))
    r, c = _lapjv_min(cost)
    r0, c0 = linear_sum_assignment(cost)
    assert abs(cost[r, c].sum() - cost[r0, c0].sum()) < 1e-12
