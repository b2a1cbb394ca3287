"""match_decoders against SciPy (the oracle for exactness); linear_assignment has its own file."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from saefast import match
from saefast.errors import MatchError
from saefast.match import (
    Matching,
    certified,
    decoders,
    lapjv_available,
    match_decoders,
    native_available,
    resolve_solver,
)

# lapjv is optional; native needs the C++ build
SOLVERS = (["native"] if native_available() else []) + (["lapjv"] if lapjv_available() else []) \
    + ["scipy"]
needs_native = pytest.mark.skipif(not native_available(), reason="native solver not built")


def scipy_oracle(a, b, values="float32"):
    """SciPy maximising the cosines a solver works on: "float32" = the original study's recipe
    (rows normalised in float32, float32 GEMM, upcast), used by the dense solvers and by the
    native one on small problems; "float64" = float64 products of the same float32 unit rows,
    the native sparse path's values."""
    a = match.unit_rows(torch.as_tensor(np.asarray(a), dtype=torch.float32))
    b = match.unit_rows(torch.as_tensor(np.asarray(b), dtype=torch.float32))
    if values == "float64":
        cos = (a.double() @ b.double().T).numpy()  # [n_a, n_b]
    else:
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
    assert {"gemm_s", "solve_s"} <= set(m.timings)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (1, 7), (7, 1), (20, 20)])
def test_rectangular_totals_match_scipy(shape):
    g = np.random.default_rng(1)
    a = g.standard_normal((shape[0], 16))
    b = g.standard_normal((shape[1], 16))
    for solver in SOLVERS:
        _, _, want = scipy_oracle(a, b)
        m = match_decoders(torch.from_numpy(a), b, solver=solver)
        assert len(m) == min(shape) and m.certified
        assert np.all(np.diff(m.rows) > 0) and len(set(m.cols.tolist())) == len(m)
        assert m.rows.max() < shape[0] and m.cols.max() < shape[1]
        assert m.total == pytest.approx(want.sum(), abs=1e-9)


def test_zero_rows_and_auto_solver():
    a = np.zeros((3, 4), np.float32)
    a[0] = [1, 0, 0, 0]
    m = match_decoders(a, np.eye(4, dtype=np.float32), solver="auto")
    assert m.solver == resolve_solver("auto") == (
        "native" if native_available() else "lapjv" if lapjv_available() else "scipy")
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
    with pytest.raises(MatchError, match=msg):
        match_decoders(a, b)


def test_unknown_solver_and_bad_candidates():
    a = np.eye(3, dtype=np.float32)
    with pytest.raises(MatchError, match="unknown solver"):
        match_decoders(a, a, solver="hungarian")
    for bad in (0, -3, 2.5, True, "4", float("nan"), float("inf"), [3]):
        with pytest.raises(MatchError, match="candidates must be a positive integer"):
            match_decoders(a, a, candidates=bad)


def test_native_unavailable_is_a_clear_error_and_auto_falls_back(monkeypatch):
    from saefast.match import _lap

    monkeypatch.setattr(_lap, "available", lambda: False)
    a = np.eye(3, dtype=np.float32)
    with pytest.raises(MatchError, match="solver 'native' is unavailable"):
        match_decoders(a, a, solver="native")
    m = match_decoders(a, a)  # auto: the dense solvers, and it says which
    assert m.solver == ("lapjv" if lapjv_available() else "scipy") and m.certified


dims = st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 5))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dims, st.integers(0, 2**31 - 1), st.booleans())
def test_property_totals_equal_scipy(shape, seed, coarse):
    n_a, n_b, d = shape
    g = np.random.default_rng(seed)
    draw = (lambda s: g.integers(-2, 3, s).astype(np.float32)) if coarse else \
        (lambda s: g.standard_normal(s).astype(np.float32))  # coarse: many ties and zero rows
    a, b = draw((n_a, d)), draw((n_b, d))
    for solver in SOLVERS:
        _, _, want = scipy_oracle(a, b)
        m = match_decoders(a, b, solver=solver)
        assert len(m) == min(n_a, n_b)
        assert m.total == pytest.approx(want.sum(), abs=1e-9)


# ---------------------------------------------------------------- native: candidates + certificate


def _inputs(kind, n_a, n_b, d, seed):
    g = np.random.default_rng(seed)
    if kind == "random":
        return g.standard_normal((n_a, d)), g.standard_normal((n_b, d))
    if kind == "structured":  # a third shared (noised, permuted), the rest random
        a, b = g.standard_normal((n_a, d)), g.standard_normal((n_b, d))
        s = min(n_a, n_b) // 3
        b[g.permutation(n_b)[:s]] = a[:s] + 0.1 * g.standard_normal((s, d))
        return a, b
    if kind == "identical":  # the same rows (the smaller side is a prefix), B permuted
        a = g.standard_normal((max(n_a, n_b), d))
        return a[:n_a], a[:n_b][g.permutation(n_b)]
    if kind == "duplicated":  # many equal rows on both sides: ties everywhere
        a = g.standard_normal((8, d))
        return a[g.integers(0, 8, n_a)], a[g.integers(0, 8, n_b)]
    if kind == "all-equal":
        row = g.standard_normal(d)
        return np.tile(row, (n_a, 1)), np.tile(row, (n_b, 1))
    if kind == "zero-rows":
        a, b = g.standard_normal((n_a, d)), g.standard_normal((n_b, d))
        a[::3] = 0.0
        return a, b
    raise ValueError(kind)


def _sparse_native(monkeypatch):
    """Make the native solver take its sparse path (candidates + certificate) even when small."""
    monkeypatch.setattr(decoders, "DENSE_NATIVE_MAX", 0)


@needs_native
@pytest.mark.parametrize("kind", ["random", "structured", "identical", "duplicated", "all-equal",
                                  "zero-rows"])
@pytest.mark.parametrize("shape", [(300, 300), (120, 400), (400, 120)])
def test_native_sparse_equals_scipy(monkeypatch, kind, shape):
    _sparse_native(monkeypatch)
    a, b = _inputs(kind, *shape, d=24, seed=len(kind) + shape[0])
    _, _, want = scipy_oracle(a, b, "float64")
    for k in (3, 16):  # k = 3: the certificate must recompute rows and add edges
        m = match_decoders(a, b, solver="native", candidates=k)
        assert m.solver == "native" and m.certified and not m.info.get("dense")
        assert len(m) == min(shape) and len(set(m.cols.tolist())) == len(m)
        assert np.all(np.diff(m.rows) > 0)
        assert m.total == pytest.approx(want.sum(), rel=1e-9, abs=1e-9)
        # the reported cosines are the pairs' own
        ua = match.unit_rows(torch.as_tensor(a, dtype=torch.float32)).double()
        ub = match.unit_rows(torch.as_tensor(b, dtype=torch.float32)).double()
        np.testing.assert_allclose(m.cosines, (ua[m.rows] * ub[m.cols]).sum(1).numpy(),
                                   atol=1e-12)
        assert m.info["gap_bound"] < 1e-9 and m.info["rounds"] >= 1
        assert {"candidates_s", "solve_s", "certify_s", "total_s"} <= set(m.timings)


@needs_native
def test_native_small_k_recomputes_rows_and_still_certifies(monkeypatch):
    _sparse_native(monkeypatch)
    a, b = _inputs("random", 500, 500, 16, seed=3)
    m = match_decoders(a, b, solver="native", candidates=2)
    assert m.certified and m.info["rows_recomputed"] > 0 and m.info["rounds"] > 1
    assert m.total == pytest.approx(scipy_oracle(a, b, "float64")[2].sum(), rel=1e-9)


@needs_native
def test_native_past_the_edge_budget_says_uncertified(monkeypatch):
    _sparse_native(monkeypatch)
    monkeypatch.setattr(certified, "EDGE_BUDGET_BYTES", 40 * 3000)  # ~3,000 edges: too few
    a, b = _inputs("random", 400, 400, 16, seed=4)
    m = match_decoders(a, b, solver="native", candidates=2)
    assert not m.certified and m.info.get("budget_exceeded")
    assert len(m) == 400 and len(set(m.cols.tolist())) == 400  # still a full matching
    assert m.total <= scipy_oracle(a, b, "float64")[2].sum() + 1e-9


@needs_native
def test_native_dense_path_for_small_problems():
    a, b = _inputs("structured", 60, 90, 8, seed=5)
    m = match_decoders(a, b, solver="native")
    assert m.certified and m.info["dense"]
    r, c, want = scipy_oracle(a, b)  # the original study's values, exactly
    assert m.total == pytest.approx(want.sum(), rel=1e-12)
    np.testing.assert_allclose(m.cosines, want, atol=1e-12)


@needs_native
@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 6)),
       st.integers(0, 2**31 - 1), st.integers(1, 5), st.booleans())
def test_property_native_sparse_equals_scipy(shape, seed, k, coarse):
    n_a, n_b, d = shape
    g = np.random.default_rng(seed)
    draw = (lambda s: g.integers(-2, 3, s).astype(np.float32)) if coarse else \
        (lambda s: g.standard_normal(s).astype(np.float32))
    a, b = draw((n_a, d)), draw((n_b, d))
    old = decoders.DENSE_NATIVE_MAX
    decoders.DENSE_NATIVE_MAX = 0  # (hypothesis and function-scoped fixtures do not mix)
    try:
        m = match_decoders(a, b, solver="native", candidates=k)
    finally:
        decoders.DENSE_NATIVE_MAX = old
    assert m.certified and len(m) == min(n_a, n_b)
    values = "float32" if m.info.get("dense") else "float64"  # dense when k >= min(n_a, n_b)
    assert m.total == pytest.approx(scipy_oracle(a, b, values)[2].sum(), rel=1e-9, abs=1e-9)


@needs_native
def test_candidate_values_are_within_the_certificates_margin():
    """The certificate trusts cosine_topk's float32 values to within gemm_margin(d)."""
    from saefast import ops

    g = torch.Generator().manual_seed(0)
    for d in (7, 64, 384):
        a = match.unit_rows(torch.randn(700, d, generator=g))
        b = match.unit_rows(torch.randn(900, d, generator=g))
        b[:300] = a[:300]  # exact duplicates: cosines near 1
        rv, ri, cv, ci = ops.cosine_topk(a, b, 8)
        exact = a.double() @ b.double().T  # [700, 900]
        err_r = (rv.double() - exact.gather(1, ri)).abs().max().item()
        err_c = (cv.double() - exact.T.gather(1, ci)).abs().max().item()
        assert max(err_r, err_c) <= match.gemm_margin(d) / 2


def test_dense_solvers_refuse_matrices_past_the_budget(monkeypatch):
    monkeypatch.setattr(decoders, "DENSE_BUDGET_BYTES", 1000)
    a = np.eye(20, dtype=np.float32)
    with pytest.raises(MatchError, match="dense 20 x 20 cosine matrix"):
        match_decoders(a, a, solver="scipy")


def test_tf32_candidates_widen_the_certificate_margin():
    from saefast.match import gemm_margin
    from saefast.match.certified import candidate_device
    assert gemm_margin(768, tf32=True) > 2 * 2.0 ** -10 > gemm_margin(768) > 0
    assert candidate_device("cpu", 10**5, 10**5).type == "cpu"
    if not torch.cuda.is_available():  # no GPU: the default stays on the CPU at any size
        assert candidate_device(None, 10**5, 10**5).type == "cpu"


def test_match_decoders_on_an_explicit_cpu_device_is_the_default_matching():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3000, 16, generator=g), torch.randn(2800, 16, generator=g)
    default = match_decoders(a, b, solver="native")
    on_cpu = match_decoders(a, b, solver="native", device="cpu")
    assert on_cpu.certified and on_cpu.info["device"] == "cpu" and not on_cpu.info["tf32"]
    np.testing.assert_array_equal(on_cpu.cols, default.cols)


@pytest.mark.parametrize("solver", ["scipy", "native-dense", "native-sparse"])
@pytest.mark.parametrize("shape", [(90, 140), (140, 90)])
def test_nearest_partners_are_each_rows_argmax(monkeypatch, solver, shape):
    """Matching.nearest (what the report's nearest-cosine statistics reuse instead of a second
    GEMM) names each row's most similar row of the other dictionary, both ways and in both
    orientations of the solver."""
    if solver.startswith("native"):
        if not native_available():
            pytest.skip("native solver not built")
        if solver == "native-sparse":
            _sparse_native(monkeypatch)
    g = torch.Generator().manual_seed(shape[0])
    a, b = torch.randn(shape[0], 16, generator=g), torch.randn(shape[1], 16, generator=g)
    m = match_decoders(a, b, solver=solver.split("-")[0], candidates=4)
    cos = torch.nn.functional.normalize(a.double(), dim=1) @ \
        torch.nn.functional.normalize(b.double(), dim=1).T
    assert m.nearest is not None
    assert np.array_equal(m.nearest[0], cos.argmax(1).numpy())
    assert np.array_equal(m.nearest[1], cos.argmax(0).numpy())
