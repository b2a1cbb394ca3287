"""cosine_topk: against naive dense cosines and the reference kernels, ties, and (native) the
exact top-k of the kernel's own blockwise GEMM; opcheck, input errors."""

from __future__ import annotations

import pytest
import torch

from saefast import ops
from saefast.ops import reference

from op_samples import (
    HALF_ULP,
    TOL,
    Threads,
    acc_dtype,
    assert_equal,
    assert_same_topk,
    assert_topk,
    blockwise_mm,
    dense_cosines,
    devices,
    dtypes,
    exact_values,
    low_precision,
    needs_native,
    randn,
    sample_inputs,
    stable_topk,
)


@devices
@dtypes
@pytest.mark.parametrize("case", range(len(sample_inputs("cosine_topk"))))
def test_sample_inputs_match_dense(device, dtype, case):
    A, B, k = sample_inputs("cosine_topk", device, dtype)[case].args
    result = ops.cosine_topk(A, B, k)
    assert isinstance(result, ops.CosineTopK)
    assert result.row_vals.dtype == result.col_vals.dtype == dtype
    sims = dense_cosines(A, B)  # [n, m], from the (rounded) inputs
    atol, rtol = 1e-6, HALF_ULP.get(dtype, 0.0)
    if dtype in HALF_ULP:  # near-ties may swap: values of the chosen indices only
        torch.testing.assert_close(result.row_vals.double(), sims.gather(1, result.row_idx), atol=atol, rtol=rtol)
        torch.testing.assert_close(result.col_vals.double(), sims.T.gather(1, result.col_idx), atol=atol, rtol=rtol)
    else:
        assert_topk(result.row_vals, result.row_idx, sims, k, atol=max(atol, TOL[dtype][0]))
        assert_topk(result.col_vals, result.col_idx, sims.T, k, atol=max(atol, TOL[dtype][0]))


@devices
@pytest.mark.parametrize("n,m,d,k,block", [(9, 13, 5, 3, 1 << 24), (9, 13, 5, 3, 26), (4, 6, 3, 4, 6), (1, 1, 2, 1, 1)])
def test_matches_dense_across_reference_blocks(monkeypatch, device, n, m, d, k, block):
    monkeypatch.setattr(reference, "COSINE_BLOCK_ELEMS", block)  # 26 -> blocks of 2 rows
    A, B = randn(n, d, seed=1, device=device), randn(m, d, seed=2, device=device)
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(A, B, k)
    sims = dense_cosines(A, B)  # [n, m]
    assert_topk(row_vals, row_idx, sims, k, atol=1e-6)
    assert_topk(col_vals, col_idx, sims.T, k, atol=1e-6)


@devices
@pytest.mark.parametrize("n,m,d,k", [(300, 1500, 6, 5), (1, 1030, 4, 1), (700, 2, 3, 2)])
def test_matches_reference_across_native_tiles(device, n, m, d, k):
    A, B = randn(n, d, seed=1, device=device), randn(m, d, seed=2, device=device)
    rv, ri, cv, ci = ops.cosine_topk(A, B, k)
    want_rv, _, want_cv, _ = reference.cosine_topk(A, B, k)
    sims = dense_cosines(A, B)  # [n, m]
    assert_same_topk(rv, ri, want_rv, sims, atol=1e-5)
    assert_same_topk(cv, ci, want_cv, sims.T, atol=1e-5)


@devices
def test_zero_row_and_non_contiguous(device):
    A = randn(6, 4, seed=1, device=device).T  # [4, 6]
    A[2] = 0.0
    B = randn(5, 6, seed=2, device=device)
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(A, B, 3)
    assert torch.isfinite(row_vals).all() and torch.isfinite(col_vals).all()
    assert (row_vals[2] == 0).all()
    assert_topk(col_vals, col_idx, dense_cosines(A, B).T, 3, atol=1e-6)


@devices
@low_precision
def test_16bit(device, dtype):
    A, B = randn(7, 16, seed=1, dtype=dtype, device=device), randn(9, 16, seed=2, dtype=dtype, device=device)
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(A, B, 2)
    assert row_vals.dtype == col_vals.dtype == dtype
    sims = dense_cosines(A, B)
    torch.testing.assert_close(row_vals.double(), sims.gather(1, row_idx), atol=0.01, rtol=0)


@devices
def test_16bit_and_float64_across_tiles(device):
    A, B = randn(40, 16, seed=1, device=device), randn(1100, 16, seed=2, device=device)
    sims = dense_cosines(A, B)
    rv, ri, cv, ci = ops.cosine_topk(A.double(), B.double(), 4)
    assert_same_topk(rv, ri, sims.topk(4, dim=1).values, sims, atol=1e-12)
    assert_same_topk(cv, ci, sims.T.topk(4, dim=1).values, sims.T, atol=1e-12)
    for dtype, rtol in HALF_ULP.items():
        Ab, Bb = A.to(dtype), B.to(dtype)
        sims_b = dense_cosines(Ab, Bb)
        rv, ri, cv, ci = ops.cosine_topk(Ab, Bb, 4)
        assert rv.dtype == cv.dtype == dtype
        # float32 accumulation of the rounded inputs, then one rounding of the result
        torch.testing.assert_close(rv.double(), sims_b.gather(1, ri), atol=1e-6, rtol=rtol)
        torch.testing.assert_close(rv.double(), sims_b.topk(4, dim=1).values, atol=1e-6, rtol=rtol)
        torch.testing.assert_close(cv.double(), sims_b.T.gather(1, ci), atol=1e-6, rtol=rtol)


@devices
def test_float16_norms_past_its_range_accumulate_in_float32(device):
    # |A[0]|^2 = 2 * 300^2 = 180,000 is past float16's largest finite value (65,504): a float16
    # norm would be inf (cosines 0); normalised in float32 the cosines are exact to rounding
    h = dict(dtype=torch.float16, device=device)
    A = torch.tensor([[300.0, 300.0], [1.0, 0.0]], **h)
    B = torch.tensor([[1.0, 1.0], [0.0, -1.0]], **h)
    rv, ri, cv, ci = ops.cosine_topk(A, B, 1)
    assert rv.dtype == cv.dtype == torch.float16
    assert ri.tolist() == [[0], [0]] and ci.tolist() == [[0], [1]]
    assert rv.tolist() == [[1.0], [0.70703125]] and cv.tolist() == [[1.0], [0.0]]  # 1/sqrt(2) in float16


@devices
def test_ties_go_to_the_smaller_index(device):
    A = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], device=device)  # rows 0, 1: same direction
    B = torch.tensor([[0.0, 3.0], [1.0, 0.0], [5.0, 0.0]], device=device)  # rows 1, 2: same direction
    rv, ri, cv, ci = ops.cosine_topk(A, B, 2)
    assert ri[0].tolist() == [1, 2] and ri[1].tolist() == [1, 2]
    assert ci[1].tolist() == [0, 1] and ci[2].tolist() == [0, 1]


def test_result_is_a_named_four_tuple():
    result = ops.cosine_topk(randn(3, 4, seed=1), randn(5, 4, seed=2), 2)
    assert result._fields == ("row_vals", "row_idx", "col_vals", "col_idx")
    row_vals, row_idx, col_vals, col_idx = result
    assert row_vals is result.row_vals and col_idx.shape == (5, 2)


# ---------------------------------------------------------------------------- opcheck


@devices
@dtypes
@pytest.mark.parametrize("case", range(len(sample_inputs("cosine_topk"))))
def test_opcheck(device, dtype, case):
    args = sample_inputs("cosine_topk", device, dtype)[case].args
    torch.library.opcheck(torch.ops.saefast.cosine_topk.default, args)


# ---------------------------------------------------------------------------- exact selection


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@dtypes
@pytest.mark.parametrize("n,m,k", [(300, 1500, 20), (1, 1030, 1), (700, 2, 2), (257, 64, 64), (40, 33, 33)])
@pytest.mark.parametrize("kind", ["ints", "randn"])
def test_is_the_exact_top_k_of_the_blockwise_gemm(n, m, k, dtype, kind, threads):
    A, B = exact_values((n, 3), 4, kind, dtype), exact_values((m, 3), 5, kind, dtype)
    acc = acc_dtype(dtype)
    unit = [t.to(acc) / t.to(acc).norm(2, 1, keepdim=True).clamp_min(1e-12) for t in (A, B)]
    sims = blockwise_mm(*unit)  # [n, m]
    rv, ri = stable_topk(sims, k)
    cv, ci = stable_topk(sims.T.contiguous(), k)
    with Threads(threads):
        assert_equal(ops.cosine_topk(A, B, k), (rv.to(dtype), ri, cv.to(dtype), ci))


# ---------------------------------------------------------------------------- bad inputs


def _ok():
    return randn(2, 4), randn(6, 4)


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda f, x, W: f(x, W, 3), ValueError, r"1 <= k <= min\(n, m\) = 2"),
        (lambda f, x, W: f(x, W[:, :2], 1), ValueError, r"same d"),
        (lambda f, x, W: f(x.to("meta"), W, 1), ValueError, r"one device"),
        (lambda f, x, W: f(x, W.double(), 1), TypeError, r"A, B must share one dtype"),
        (lambda f, x, W: f(x.half(), W, 1), TypeError,
         r"A, B must share one dtype: float32, float64, bfloat16 or float16; got A float16, B float32$"),
    ],
)
def test_bad_inputs_raise_clearly(entry, call, error, message):
    """The same message whichever kernel (native, reference, fake) meets the input."""
    f = ops.cosine_topk if entry == "wrapper" else torch.ops.saefast.cosine_topk
    with pytest.raises(error, match=message):
        call(f, *_ok())
