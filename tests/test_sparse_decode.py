"""sparse_decode: against naive dense PyTorch and the reference kernels; gradients (repeated
latents), opcheck, input errors."""

from __future__ import annotations

import pytest
import torch

from saefast import ops
from saefast.ops import reference

from op_samples import (
    HALF_ULP,
    TOL,
    codes,
    dense_sparse_decode,
    devices,
    dtypes,
    gen,
    low_precision,
    randn,
    sample_inputs,
)


@devices
@dtypes
@pytest.mark.parametrize("case", range(len(sample_inputs("sparse_decode"))))
def test_sample_inputs_match_dense(device, dtype, case):
    values, indices, W, b = sample_inputs("sparse_decode", device, dtype)[case].args
    out = ops.sparse_decode(values, indices, W, b)
    assert out.dtype == dtype
    want = dense_sparse_decode(values.double(), indices, W.double(), b.double())
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.double(), want, atol=max(atol, 1e-6), rtol=max(rtol, 1e-5))


@devices
@pytest.mark.parametrize("B,k,F,d", [(7, 3, 20, 5), (1, 4, 4, 2)])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_matches_dense(device, B, k, F, d, index_dtype):
    values = randn(B, k, seed=1, device=device)
    indices = torch.stack([torch.randperm(F, generator=gen(i))[:k] for i in range(B)]).to(device)
    W, b = randn(F, d, seed=2, device=device), randn(d, seed=3, device=device)
    out = ops.sparse_decode(values, indices.to(index_dtype), W, b)
    torch.testing.assert_close(out, dense_sparse_decode(values, indices, W, b))


@devices
def test_non_contiguous_and_repeated_indices(device):
    values = randn(4, 6, seed=1, device=device).T  # [6, 4]
    indices = torch.tensor([[0, 0, 3, 1]] * 6, device=device).T.contiguous().T  # [6, 4], repeats, strided
    W = randn(5, 7, seed=2, device=device).T  # [7, 5]
    b = randn(10, seed=3, device=device)[::2]  # [5]
    out = ops.sparse_decode(values, indices, W, b)
    torch.testing.assert_close(out, dense_sparse_decode(values, indices, W, b))


@devices
def test_int32_indices_and_non_contiguous_across_tiles(device):
    values, indices = codes(5, 4, 30, device=device)
    W, b = randn(7, 30, seed=3, device=device).T, randn(14, seed=4, device=device)[::2]  # [30, 7], [7]
    want = reference.sparse_decode(values, indices, W.contiguous(), b.contiguous())
    torch.testing.assert_close(ops.sparse_decode(values.T.contiguous().T, indices.int(), W, b), want)


@devices
@low_precision
def test_16bit_accumulates_in_float32(device, dtype):
    values, W, b = (randn(4, 8, seed=1, dtype=dtype, device=device),
                    randn(30, 16, seed=2, dtype=dtype, device=device),
                    randn(16, seed=3, dtype=dtype, device=device))
    indices = torch.randint(0, 30, (4, 8), generator=gen()).to(device)
    out = ops.sparse_decode(values, indices, W, b)
    assert out.dtype == dtype
    want = dense_sparse_decode(values.double(), indices, W.double(), b.double())
    # float32 accumulation: only the final rounding to the 16-bit dtype remains
    torch.testing.assert_close(out.double(), want, atol=1e-6, rtol=HALF_ULP[dtype])


@devices
def test_float16_sums_past_its_range_accumulate_in_float32(device):
    # products and partial sums past float16's largest finite value (65,504) with final sums
    # that fit it: exact in float32, inf had float16 accumulated them
    h = dict(dtype=torch.float16, device=device)
    W = torch.tensor([[256.0], [-255.5]], **h)
    out = ops.sparse_decode(torch.tensor([[256.0, 256.0]], **h), torch.tensor([[0, 1]], device=device),
                            W, torch.zeros(1, **h))
    assert out.dtype == torch.float16 and out.tolist() == [[128.0]]
    # backward over 3 rows of one latent: grad_b_dec and grad_W_dec sum 40,000 + 30,000 - 64,992
    values, W, b = (t.requires_grad_() for t in (torch.ones(3, 1, **h), torch.ones(1, 1, **h),
                                                 torch.zeros(1, **h)))
    grad = torch.tensor([[40000.0], [30000.0], [-64992.0]], **h)
    ops.sparse_decode(values, torch.zeros(3, 1, dtype=torch.int64, device=device), W, b).backward(grad)
    assert b.grad.dtype == W.grad.dtype == values.grad.dtype == torch.float16
    assert b.grad.tolist() == [5008.0] and W.grad.tolist() == [[5008.0]]
    assert values.grad.tolist() == [[40000.0], [30000.0], [-64992.0]]


@devices
def test_forward_and_backward_op_match_reference(device):
    values, indices = codes(700, 9, 1300, device=device)
    W, b = randn(1300, 11, seed=3, device=device), randn(11, seed=4, device=device)
    torch.testing.assert_close(ops.sparse_decode(values, indices, W, b),
                               reference.sparse_decode(values, indices, W, b))
    grad = randn(700, 11, seed=5, device=device)
    for mask in ([True, True, True], [False, True, False], [True, False, True]):
        ours = torch.ops.saefast.sparse_decode_backward(grad, values, indices, W, mask)
        want = reference.sparse_decode_backward(grad, values, indices, W, mask)
        for o, w in zip(ours, want):
            assert o.shape == w.shape
            torch.testing.assert_close(o, w, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- gradients


@devices
def test_gradients_match_dense(device):
    values, W, b = randn(5, 3, seed=1, device=device), randn(12, 4, seed=2, device=device), randn(4, seed=3, device=device)
    indices = torch.tensor([[0, 5, 11], [5, 5, 2], [1, 2, 3], [11, 0, 7], [9, 8, 0]], device=device)
    grad = randn(5, 4, seed=4, device=device)
    leaves = [t.clone().requires_grad_() for t in (values, W, b)]
    (ops.sparse_decode(leaves[0], indices, leaves[1], leaves[2]) * grad).sum().backward()
    dense_leaves = [t.clone().requires_grad_() for t in (values, W, b)]
    (dense_sparse_decode(dense_leaves[0], indices, dense_leaves[1], dense_leaves[2]) * grad).sum().backward()
    for ours, want in zip(leaves, dense_leaves):
        torch.testing.assert_close(ours.grad, want.grad)


@devices
@pytest.mark.parametrize("case", range(len(sample_inputs("sparse_decode"))))
def test_gradcheck(device, case):
    values, indices, W, b = sample_inputs("sparse_decode", device, torch.float64, requires_grad=True)[case].args
    assert torch.autograd.gradcheck(lambda v, w, bb: ops.sparse_decode(v, indices, w, bb), (values, W, b),
                                    fast_mode=W.shape[0] > 100)  # fast: one random direction in W


@devices
def test_gradcheck_with_fixed_indices(device):
    values, W, b = (t.double().requires_grad_() for t in (randn(3, 2, seed=1, device=device),
                                                          randn(6, 4, seed=2, device=device),
                                                          randn(4, seed=3, device=device)))
    indices = torch.tensor([[0, 5], [2, 2], [4, 1]], device=device)
    assert torch.autograd.gradcheck(lambda v, w, bb: ops.sparse_decode(v, indices, w, bb), (values, W, b))


# ---------------------------------------------------------------------------- opcheck


@devices
@dtypes
@pytest.mark.parametrize("case", range(len(sample_inputs("sparse_decode"))))
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "grad"])
def test_opcheck(device, dtype, case, requires_grad):
    args = sample_inputs("sparse_decode", device, dtype, requires_grad=requires_grad)[case].args
    torch.library.opcheck(torch.ops.saefast.sparse_decode.default, args)


@devices
@pytest.mark.parametrize("mask", [[True, True, True], [True, False, False]])
def test_opcheck_backward_op(device, mask):
    values, indices = codes(5, 4, 1030, device=device)
    W = randn(1030, 3, seed=2, device=device)
    torch.library.opcheck(torch.ops.saefast.sparse_decode_backward.default,
                          (randn(5, 3, seed=10, device=device), values, indices, W, mask))


# ---------------------------------------------------------------------------- bad inputs


def _ok():
    return randn(2, 4), randn(6, 4), randn(6)


@pytest.mark.parametrize("entry", ["wrapper", "torch.ops"])
@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda f, x, W, b: f(x, x.long() * 0, W, b), ValueError, r"b_dec must be \[d\] with d = 4"),
        (lambda f, x, W, b: f(x, x.long() * 0 + 6, W, b[:4]), ValueError, r"indices must be in \[0, F = 6\)"),
        (lambda f, x, W, b: f(x, x.long()[:1], W, b[:4]), ValueError, r"indices must have the shape"),
        (lambda f, x, W, b: f(x, x, W, b[:4]), TypeError, r"indices must be int64"),
        (lambda f, x, W, b: f(x.half(), x.long() * 0, W, b[:4]), TypeError,
         r"values, W_dec, b_dec must share one dtype: float32, float64, bfloat16 or float16; "
         r"got values float16, W_dec float32, b_dec float32$"),
    ],
)
def test_bad_inputs_raise_clearly(entry, call, error, message):
    """The same message whichever kernel (native, reference) meets the input."""
    f = ops.sparse_decode if entry == "wrapper" else torch.ops.saefast.sparse_decode
    with pytest.raises(error, match=message):
        call(f, *_ok())
