"""topk_encode: against naive dense PyTorch, the reference kernels, and (native) the exact
top-k of the kernels' own blockwise GEMM; gradients, opcheck, input errors."""

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
    dense_pre,
    devices,
    dtypes,
    encoder,
    exact_values,
    low_precision,
    needs_native,
    randn,
    sample_inputs,
    stable_topk,
)


@devices
@dtypes
@pytest.mark.parametrize("case", range(len(sample_inputs("topk_encode"))))
def test_sample_inputs_match_dense(device, dtype, case):
    x, W, b, k = sample_inputs("topk_encode", device, dtype)[case].args
    result = ops.topk_encode(x, W, b, k)
    assert isinstance(result, ops.TopK) and result.values.dtype == dtype
    atol, rtol = TOL[dtype]
    assert_topk(result.values, result.indices, dense_pre(x, W, b), k, atol=atol, rtol=rtol)


@devices
@pytest.mark.parametrize(
    "B,d,F,k,tile",
    [
        (6, 8, 40, 5, 4096),  # one tile
        (6, 8, 40, 5, 7),  # F not a multiple of the tile, k < tile
        (5, 8, 23, 9, 4),  # k larger than a tile
        (1, 3, 10, 10, 4),  # B = 1, k = F
    ],
)
def test_matches_dense_across_reference_tiles(monkeypatch, device, B, d, F, k, tile):
    monkeypatch.setattr(reference, "TILE_F", tile)
    x, W, b = randn(B, d, seed=1, device=device), randn(F, d, seed=2, device=device), \
        randn(F, seed=3, device=device) + 2.0
    values, indices = ops.topk_encode(x, W, b, k)
    assert values.dtype == x.dtype
    assert_topk(values, indices, dense_pre(x, W, b), k, atol=1e-5)


@devices
@pytest.mark.parametrize(
    "B,d,F,k",
    [
        (1, 8, 2500, 7),  # B = 1, F not a multiple of the tile
        (600, 12, 1030, 16),  # several row blocks, a 6-feature edge tile
        (3, 5, 40, 40),  # k = F
        (9, 4, 1500, 1100),  # k larger than a tile
    ],
)
def test_matches_reference_across_native_tiles(device, B, d, F, k):
    x, W, b = encoder(B, d, F, device=device)
    values, indices = ops.topk_encode(x, W, b, k)
    ref_values, _ = reference.topk_encode(x, W, b, k)
    assert_same_topk(values, indices, ref_values, dense_pre(x, W, b), atol=1e-4)


@devices
def test_non_contiguous(device):
    x = randn(8, 5, seed=1, device=device).T  # [5, 8]
    W = randn(8, 30, seed=2, device=device).T  # [30, 8]
    b = (randn(60, seed=3, device=device) + 2.0)[::2]  # [30]
    assert not (x.is_contiguous() or W.is_contiguous() or b.is_contiguous())
    values, indices = ops.topk_encode(x, W, b, 4)
    assert_topk(values, indices, dense_pre(x, W, b), 4, atol=1e-5)


@devices
def test_non_contiguous_across_tiles_float64_and_float32(device):
    x, W, b = encoder(40, 9, 1200, dtype=torch.float64, device=device)
    xs, Ws, bs = x.T.contiguous().T, W[:, :].T.contiguous().T, torch.stack([b, b], 1)[:, 0]
    assert not (xs.is_contiguous() or Ws.is_contiguous() or bs.is_contiguous())
    dense = torch.relu(x @ W.T + b)  # [B, F]
    for dtype, atol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        values, indices = ops.topk_encode(xs.to(dtype), Ws.to(dtype), bs.to(dtype), 8)
        assert values.dtype == dtype
        assert_same_topk(values, indices, dense.topk(8, dim=1).values, dense, atol=atol)


@devices
@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.bfloat16, 0.06), (torch.float16, 1e-3)])
def test_dtypes(device, dtype, atol):
    x, W, b = (randn(4, 16, seed=1, dtype=dtype, device=device), randn(50, 16, seed=2, dtype=dtype, device=device),
               randn(50, seed=3, dtype=dtype, device=device))
    values, indices = ops.topk_encode(x, W, b, 6)
    assert values.dtype == dtype and indices.dtype == torch.int64
    dense = dense_pre(x, W, b)  # from the same (rounded) inputs, in float64
    torch.testing.assert_close(values.double(), dense.gather(1, indices), atol=atol, rtol=0.01)
    torch.testing.assert_close(values.double(), dense.topk(6, dim=1).values, atol=atol, rtol=0.01)


@devices
@low_precision
def test_16bit_accumulates_in_float32(device, dtype):
    x, W, b = encoder(16, 32, 1100, dtype=dtype, device=device)
    values, indices = ops.topk_encode(x, W, b, 6)
    assert values.dtype == dtype
    dense = dense_pre(x, W, b)  # from the rounded inputs
    # float32 accumulation: only the final rounding to the 16-bit dtype remains
    rtol = HALF_ULP[dtype]
    torch.testing.assert_close(values.double(), dense.gather(1, indices), atol=1e-6, rtol=rtol)
    torch.testing.assert_close(values.double(), dense.topk(6, dim=1).values, atol=1e-6, rtol=rtol)


@devices
def test_float16_products_past_its_range_accumulate_in_float32(device):
    # 256 * 256 = 65,536 is past float16's largest finite value (65,504): float16 products
    # would give inf; in float32, 256 * 256 - 256 * 255.5 = 128 is exact and fits float16
    h = dict(dtype=torch.float16, device=device)
    x = torch.tensor([[256.0, 256.0]], **h)
    W = torch.tensor([[256.0, -255.5], [1.0, 1.0], [0.0, 0.0]], **h)
    values, indices = ops.topk_encode(x, W, torch.zeros(3, **h), 2)
    assert values.dtype == torch.float16
    assert values.tolist() == [[512.0, 128.0]] and indices.tolist() == [[1, 0]]


@devices
def test_all_negative_rows_give_zeros_with_distinct_indices(device):
    x, W, _ = encoder(4, 6, 1100, device=device)
    b = torch.full((1100,), -100.0, device=device)
    values, indices = ops.topk_encode(x, W, b, 5)
    assert (values == 0).all()
    assert all(len(set(row.tolist())) == 5 for row in indices)


# ---------------------------------------------------------------------------- gradients


@devices
def test_gradients_match_dense(monkeypatch, device):
    monkeypatch.setattr(reference, "TILE_F", 8)
    x, W, b = randn(5, 6, seed=1, device=device), randn(20, 6, seed=2, device=device), randn(20, seed=3, device=device)
    grad = randn(5, 4, seed=4, device=device)
    leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    values, indices = ops.topk_encode(*leaves, 4)
    (values * grad).sum().backward()
    dense_leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    pre = torch.relu(dense_leaves[0] @ dense_leaves[1].T + dense_leaves[2])  # [B, F]
    (pre.gather(1, indices) * grad).sum().backward()
    for ours, want in zip(leaves, dense_leaves):
        torch.testing.assert_close(ours.grad, want.grad, atol=1e-5, rtol=1e-5)


@devices
@pytest.mark.parametrize("case", range(len(sample_inputs("topk_encode"))))
def test_gradcheck(device, case):
    x, W, b, k = sample_inputs("topk_encode", device, torch.float64, requires_grad=True)[case].args
    if W.shape[0] > 100:  # gradcheck would perturb all F*d of W_enc: x and b_enc only
        W = W.detach()
        assert torch.autograd.gradcheck(lambda xx, bb: ops.topk_encode(xx, W, bb, k)[0], (x, b),
                                        fast_mode=True)
    else:
        assert torch.autograd.gradcheck(lambda *a: ops.topk_encode(*a, k)[0], (x, W, b),
                                        fast_mode=True)


@devices
def test_gradcheck_small(device):
    x, W, b = randn(3, 4, seed=1, device=device), randn(9, 4, seed=2, device=device), randn(9, seed=3, device=device)
    inputs = [t.double().requires_grad_() for t in (x, W, b)]
    assert torch.autograd.gradcheck(lambda *a: ops.topk_encode(*a, 3)[0], inputs)


@devices
def test_gradcheck_across_tiles(device):
    # float64, a few rows and features spanning two 1,024-feature tiles (W_enc is not an input:
    # gradcheck would perturb all F*d of it); x and b_enc get the numerical check
    x, W, b = encoder(3, 2, 1030, dtype=torch.float64, device=device)
    x.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(lambda xx, bb: ops.topk_encode(xx, W, bb, 4)[0], (x, b),
                                    fast_mode=True)


@devices
def test_only_needed_grads(device):
    x = randn(3, 4, seed=1, device=device).requires_grad_()
    W, b = randn(9, 4, seed=2, device=device), randn(9, seed=3, device=device)
    ops.topk_encode(x, W, b, 2)[0].sum().backward()
    assert x.grad is not None and W.grad is None and b.grad is None


@devices
def test_backward_op_matches_reference(device):
    x, W, b = encoder(300, 10, 1030, device=device)
    values, indices = ops.topk_encode(x, W, b, 12)
    values[0, -3:] = 0.0  # relu'd entries get no gradient
    grad = randn(300, 12, seed=9, device=device)
    for mask in ([True, True, True], [True, False, False], [False, True, False], [False, False, True]):
        ours = torch.ops.saefast.topk_encode_backward(grad, x, W, values, indices, mask)
        want = reference.topk_encode_backward(grad, x, W, values, indices, mask)
        for o, w in zip(ours, want):
            assert o.shape == w.shape
            torch.testing.assert_close(o, w, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- opcheck


@devices
@dtypes
@pytest.mark.parametrize("case", range(len(sample_inputs("topk_encode"))))
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
def test_opcheck(device, dtype, case, requires_grad):
    args = sample_inputs("topk_encode", device, dtype, requires_grad=requires_grad)[case].args
    torch.library.opcheck(torch.ops.saefast.topk_encode.default, args)


@devices
@pytest.mark.parametrize("mask", [[True, True, True], [False, True, False]])
def test_opcheck_backward_op(device, mask):
    x, W, b = encoder(5, 3, 1030, device=device)
    values, indices = reference.topk_encode(x, W, b, 4)
    torch.library.opcheck(torch.ops.saefast.topk_encode_backward.default,
                          (randn(5, 4, seed=8, device=device), x, W, values, indices, mask))


# ---------------------------------------------------------------------------- exact selection


@needs_native
@pytest.mark.parametrize("threads", [1, 2])
@dtypes
@pytest.mark.parametrize(
    "B,F,k",
    [
        (1, 2500, 7),  # B = 1, feature groups, an edge tile
        (256, 1024, 32),  # one row block, one tile
        (257, 1025, 32),  # two row blocks, a 1-feature edge tile
        (40, 3000, 1100),  # k larger than a tile: groups keep fewer than k each
        (800, 5000, 16),  # several row blocks; 1 or 2 threads give other feature groups
        (5, 40, 40),  # k = F, F < one chunk of 16 times 4
    ],
)
@pytest.mark.parametrize("kind", ["ints", "zeros", "randn"])
def test_is_the_exact_top_k_of_the_blockwise_gemm(B, F, k, dtype, kind, threads):
    x, W = exact_values((B, 6), 1, kind, dtype), exact_values((F, 6), 2, kind, dtype)
    b = exact_values((F,), 3, kind, dtype) * (kind != "ints")  # ints: all-equal bias, more ties
    acc = acc_dtype(dtype)
    values, indices = stable_topk(blockwise_mm(x.to(acc), W.to(acc)) + b.to(acc), k)
    with Threads(threads):
        assert_equal(ops.topk_encode(x, W, b, k), (values.relu().to(dtype), indices))


# ---------------------------------------------------------------------------- bad inputs


def _ok():
    return randn(2, 4), randn(6, 4), randn(6)


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda f, x, W, b: f(x, W, b, 7), ValueError, r"1 <= k <= F = 6, got k = 7"),
        (lambda f, x, W, b: f(x, W, b, 0), ValueError, r"1 <= k <= F"),
        (lambda f, x, W, b: f(x[None], W, b, 2), ValueError, r"x must be 2-D \[B, d\]"),
        (lambda f, x, W, b: f(x, W[:, :3], b, 2), ValueError, r"W_enc must be \[F, d\] with d = 4"),
        (lambda f, x, W, b: f(x, W, b[:5], 2), ValueError, r"b_enc must be \[F\] with F = 6"),
        (lambda f, x, W, b: f(x.long(), W, b, 2), TypeError, r"float32, float64, bfloat16 or float16; got x int64"),
        (lambda f, x, W, b: f(x, W.double(), b, 2), TypeError, r"share one dtype"),
        (lambda f, x, W, b: f(x.half(), W, b, 2), TypeError,
         r"x, W_enc, b_enc must share one dtype: float32, float64, bfloat16 or float16; "
         r"got x float16, W_enc float32, b_enc float32$"),
        (lambda f, x, W, b: f(x.to("meta"), W, b, 2), ValueError, r"one device"),
    ],
)
def test_bad_inputs_raise_clearly(entry, call, error, message):
    """The same message whichever kernel (native, reference, fake) meets the input."""
    f = ops.topk_encode if entry == "wrapper" else torch.ops.saefast.topk_encode
    with pytest.raises(error, match=message):
        call(f, *_ok())


def test_k_must_be_an_int():
    with pytest.raises(TypeError, match=r"k must be an int"):
        ops.topk_encode(*_ok(), 2.0)
    with pytest.raises(TypeError, match=r"k must be an int"):
        ops.topk_encode(*_ok(), True)


def test_result_unpacks_as_a_pair():
    values, indices = ops.topk_encode(*_ok(), 2)
    assert ops.topk_encode(*_ok(), 2)._fields == ("values", "indices")
    assert values.shape == indices.shape == (2, 2)
