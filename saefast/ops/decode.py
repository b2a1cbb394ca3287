"""sparse_decode: x_hat = b_dec + sum_j values[:, j] * W_dec[indices[:, j]], and its backward.

The check, the public wrapper, the reference kernel, fake kernel and autograd formula of the
op; the native kernels are csrc/cpu/sparse_decode.cpp and csrc/cuda/sparse_decode.cpp.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saefast.ops import checks, reference
from saefast.ops.library import register

OP = "sparse_decode"


def check(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> None:
    checks.matrix(OP, "values", values, "[B, k]")
    checks.require(OP, checks.shape(indices) == checks.shape(values),
                   f"indices must have the shape of values {checks.shape(values)}, "
                   f"got {checks.shape(indices)}")
    checks.require(OP, indices.dtype in (torch.int64, torch.int32),
                   f"indices must be int64 (or int32), got {checks.dtype_name(indices.dtype)}",
                   TypeError)
    checks.matrix(OP, "W_dec", W_dec, "[F, d]")
    checks.require(OP, b_dec.dim() == 1 and b_dec.shape[0] == W_dec.shape[1],
                   f"b_dec must be [d] with d = {W_dec.shape[1]} (W_dec is {checks.shape(W_dec)}), "
                   f"got shape {checks.shape(b_dec)}")
    checks.same_float(OP, values=values, W_dec=W_dec, b_dec=b_dec)
    checks.same_device(OP, values=values, indices=indices, W_dec=W_dec, b_dec=b_dec)


def check_index_range(indices: Tensor, n_features: int) -> None:
    """Reads the indices (a device sync): eager kernels only, never under tracing."""
    if indices.numel() and (indices.min() < 0 or indices.max() >= n_features):
        checks.require(OP, False, f"indices must be in [0, F = {n_features}), got values in "
                                  f"[{int(indices.min())}, {int(indices.max())}]")


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """x_hat [B, d] = b_dec + sum_j values[:, j] * W_dec[indices[:, j]].

    values [B, k], indices [B, k] int64 (or int32) in [0, F), W_dec [F, d], b_dec [d].
    Differentiable in values, W_dec and b_dec. The kernel checks its inputs."""
    return torch.ops.saefast.sparse_decode.default(values, indices, W_dec, b_dec)


def _reference(values, indices, W_dec, b_dec):
    check(values, indices, W_dec, b_dec)
    check_index_range(indices, W_dec.shape[0])
    return reference.sparse_decode(values, indices, W_dec, b_dec)


def _fake(values, indices, W_dec, b_dec):
    check(values, indices, W_dec, b_dec)
    return values.new_empty(values.shape[0], W_dec.shape[1])  # [B, d]


def _setup_context(ctx, inputs, output):
    values, indices, W_dec, _b_dec = inputs
    ctx.save_for_backward(values, indices, W_dec)


def _backward(ctx, grad_out):
    values, indices, W_dec = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[2], needs[3]]  # values, W_dec, b_dec (indices get none)
    grad_values, grad_w, grad_b = torch.ops.saefast.sparse_decode_backward.default(
        grad_out, values, indices, W_dec, mask)
    return (grad_values if mask[0] else None, None, grad_w if mask[1] else None,
            grad_b if mask[2] else None)


def _backward_fake(grad_out, values, indices, W_dec, output_mask):
    # an unneeded gradient is returned empty ([0]), as the schema says
    return (values.new_empty(values.shape if output_mask[0] else (0,)),
            W_dec.new_empty(W_dec.shape if output_mask[1] else (0,)),
            W_dec.new_empty((W_dec.shape[1],) if output_mask[2] else (0,)))


register(OP, reference=_reference, fake=_fake, backward=_backward, setup_context=_setup_context)
register("sparse_decode_backward", reference=reference.sparse_decode_backward, fake=_backward_fake)
