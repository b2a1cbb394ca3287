"""topk_encode: Top-k of relu(x @ W_enc.T + b_enc) per row, and its sparse backward.

Everything Python knows about the op, in one place: the check, the public wrapper, the
registration of the reference kernel, fake kernel and autograd formula. The native kernels
are csrc/cpu/topk_encode.cpp and csrc/cuda/topk_encode.cpp (registered from C++; they take
precedence over the reference on their device).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from saefast.ops import checks, reference
from saefast.ops.library import register

OP = "topk_encode"


class TopK(NamedTuple):
    """Per row, the k kept values (sorted descending) and their feature indices."""

    values: Tensor  # [B, k], the dtype of x
    indices: Tensor  # [B, k] int64 into the F features


def check(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> None:
    checks.matrix(OP, "x", x, "[B, d]")
    checks.matrix(OP, "W_enc", W_enc, "[F, d]")
    checks.require(OP, W_enc.shape[1] == x.shape[1],
                   f"W_enc must be [F, d] with d = {x.shape[1]} (x is {checks.shape(x)}), "
                   f"got {checks.shape(W_enc)}")
    checks.require(OP, b_enc.dim() == 1 and b_enc.shape[0] == W_enc.shape[0],
                   f"b_enc must be [F] with F = {W_enc.shape[0]}, got shape {checks.shape(b_enc)}")
    checks.same_float(OP, x=x, W_enc=W_enc, b_enc=b_enc)
    checks.same_device(OP, x=x, W_enc=W_enc, b_enc=b_enc)
    checks.k_in_range(OP, k, W_enc.shape[0], "F")


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> TopK:
    """Top-k of relu(x @ W_enc.T + b_enc) per row, sorted descending.

    x [B, d], W_enc [F, d], b_enc [F], 1 <= k <= F -> TopK(values [B, k], indices [B, k]
    int64). Differentiable in x, W_enc and b_enc (gradients only where a positive value was
    kept). The kernel checks its inputs (ValueError / TypeError naming the argument)."""
    checks.int_arg(OP, "k", k)
    return TopK(*torch.ops.saefast.topk_encode.default(x, W_enc, b_enc, k))


def _reference(x, W_enc, b_enc, k):
    check(x, W_enc, b_enc, k)
    return reference.topk_encode(x, W_enc, b_enc, k)


def _fake(x, W_enc, b_enc, k):
    check(x, W_enc, b_enc, k)
    return x.new_empty(x.shape[0], k), x.new_empty(x.shape[0], k, dtype=torch.int64)


def _setup_context(ctx, inputs, output):
    x, W_enc, _b_enc, _k = inputs
    values, indices = output
    # x and W_enc are kept whole (no copy); the backward op reads x only for grad_W_enc and
    # W_enc only for grad_x
    ctx.save_for_backward(x, W_enc, values, indices)


def _backward(ctx, grad_values, _grad_indices):
    x, W_enc, values, indices = ctx.saved_tensors
    mask = list(ctx.needs_input_grad[:3])
    grads = torch.ops.saefast.topk_encode_backward.default(grad_values, x, W_enc, values,
                                                           indices, mask)
    return (*(g if need else None for g, need in zip(grads, mask)), None)


def _backward_fake(grad_values, x, W_enc, values, indices, output_mask):
    # an unneeded gradient is returned empty ([0]), as the schema says
    return (x.new_empty(x.shape if output_mask[0] else (0,)),
            W_enc.new_empty(W_enc.shape if output_mask[1] else (0,)),
            W_enc.new_empty((W_enc.shape[0],) if output_mask[2] else (0,)))


register(OP, reference=_reference, fake=_fake, backward=_backward, setup_context=_setup_context)
register("topk_encode_backward", reference=reference.topk_encode_backward, fake=_backward_fake)
