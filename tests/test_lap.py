"""The native assignment solver (csrc/lap via saefast._lap) against SciPy, duals included."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from saefast.match import _lap

pytestmark = pytest.mark.skipif(not _lap.available(), reason="native solver not built")


def assert_optimal_with_duals(cost, x, u, v, mask=None):
    """x assigns every row; u, v prove it: feasible on allowed pairs, tight on the matching,
    and (rectangular) free columns sit at max(v). Totals equal SciPy's."""
    n, m = cost.shape
    allowed = np.ones_like(cost, bool) if mask is None else mask
    assert (x >= 0).all() and len(set(x.tolist())) == n and allowed[np.arange(n), x].all()
    rc = np.where(allowed, cost - u[:, None] - v[None, :], np.inf)
    assert rc.min() >= -1e-9
    np.testing.assert_allclose(rc[np.arange(n), x], 0.0, atol=1e-9)
    free = np.setdiff1d(np.arange(m), x)
    if len(free):
        np.testing.assert_allclose(v[free], v.max(), atol=1e-9)
    ref = np.where(allowed, cost, np.inf)
    r0, c0 = linear_sum_assignment(ref)
    assert cost[np.arange(n), x].sum() == pytest.approx(cost[r0, c0].sum(), rel=1e-12, abs=1e-9)


def to_csr(mask, cost):
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    rows, cols = np.nonzero(mask)
    return indptr, cols.astype(np.int32), cost[rows, cols]


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 5), (30, 30), (20, 70), (200, 200)])
@pytest.mark.parametrize("kind", ["normal", "ints", "equal", "duplicated-rows"])
def test_dense_is_optimal_with_duals(shape, kind):
    g = np.random.default_rng(shape[0] * 7 + shape[1])
    cost = {"normal": lambda: g.standard_normal(shape),
            "ints": lambda: g.integers(-3, 3, shape).astype(float),
            "equal": lambda: np.full(shape, 0.5),
            "duplicated-rows": lambda: np.tile(g.standard_normal(shape[1]), (shape[0], 1))}[kind]()
    x, u, v = _lap.solve_dense(cost)
    assert_optimal_with_duals(cost, x, u, v)


@pytest.mark.parametrize("shape", [(40, 40), (25, 60)])
def test_sparse_cold_and_warm_start(shape):
    g = np.random.default_rng(0)
    cost = g.standard_normal(shape)
    mask = g.random(shape) < 0.25
    mask[np.arange(shape[0]), g.permutation(shape[1])[:shape[0]]] = True  # feasible
    sol = _lap.solve_sparse(*to_csr(mask, cost), shape[1])
    assert len(sol.stuck) == 0
    assert_optimal_with_duals(cost, sol.row_to_col, sol.u, sol.v, mask)
    # add edges, warm-start from the previous matching and duals
    more = mask | (g.random(shape) < 0.25)
    warm = _lap.solve_sparse(*to_csr(more, cost), shape[1], sol.row_to_col, sol.v)
    assert (warm.v <= sol.v + 1e-15).all()  # v never increases
    if shape[0] == shape[1]:  # rectangular warm starts may need a cold solve (certified.py checks)
        assert_optimal_with_duals(cost, warm.row_to_col, warm.u, warm.v, more)
    cold = _lap.solve_sparse(*to_csr(more, cost), shape[1])
    assert_optimal_with_duals(cost, cold.row_to_col, cold.u, cold.v, more)


def test_sparse_reports_rows_without_an_augmenting_path():
    mask = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1]], bool)  # rows 0 and 1 want column 0
    sol = _lap.solve_sparse(*to_csr(mask, np.ones((3, 3))), 3)
    assert len(sol.stuck) == 1 and sol.stats["stuck"] == 1
    assert (sol.row_to_col >= 0).sum() == 2 and np.isnan(sol.u[sol.stuck[0]])


def test_candidate_graph_and_rescore():
    g = np.random.default_rng(1)
    row_idx = torch.from_numpy(g.integers(0, 9, (6, 3)))
    col_idx = torch.from_numpy(g.integers(0, 6, (9, 2)))
    indptr, indices = _lap.candidate_graph(row_idx, col_idx)
    want = [set(row_idx[i].tolist()) | {j for j in range(9) if i in col_idx[j].tolist()}
            for i in range(6)]
    for i in range(6):
        assert indices[indptr[i]:indptr[i + 1]].tolist() == sorted(want[i])
    a, b = torch.randn(6, 13), torch.randn(9, 13)
    rows, cols = np.repeat(np.arange(6), np.diff(indptr)), indices.astype(np.int64)
    got = _lap.rescore(a, b, rows, cols)
    np.testing.assert_allclose(got, (a.double()[rows] * b.double()[cols]).sum(1).numpy(),
                               rtol=0, atol=1e-12)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(1, 12), st.integers(0, 6), st.integers(0, 2**31 - 1), st.floats(0.1, 1.0),
       st.booleans())
def test_property_sparse_equals_scipy_with_forbidden_pairs(n, extra, seed, density, ints):
    m = n + extra
    g = np.random.default_rng(seed)
    cost = g.integers(-2, 3, (n, m)).astype(float) if ints else g.standard_normal((n, m))
    mask = g.random((n, m)) < density
    sol = _lap.solve_sparse(*to_csr(mask, cost), m)
    try:
        r0, c0 = linear_sum_assignment(np.where(mask, cost, np.inf))
    except ValueError:  # infeasible for SciPy: some row must be stuck for us
        assert len(sol.stuck) > 0
        return
    assert len(sol.stuck) == 0
    assert_optimal_with_duals(cost, sol.row_to_col, sol.u, sol.v, mask)
