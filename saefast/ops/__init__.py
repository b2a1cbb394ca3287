"""The public saefast ops: `torch.ops.saefast.*`, re-exported here with input checks.

Registration (DESIGN.md, "Ops"): the schemas are the one list in saefast/ops/schemas.inc. When
the native extension loads, C++ has defined them and registered its CPU/CUDA kernels;
otherwise they are defined here. Either way saefast/ops/reference.py is registered under
CompositeExplicitAutograd, which the dispatcher uses for every backend without a kernel of
its own (a C++ TORCH_LIBRARY_IMPL(saefast, CPU, ...) kernel takes precedence on CPU). The
fake kernels and the (sparse) autograd formulas below serve both paths.

Light to import: torch and saefast.ops.reference only.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import torch
from torch import Tensor

from saefast.ops import native as _native, reference

__all__ = ["topk_encode", "sparse_decode", "cosine_topk", "SCHEMAS", "NATIVE"]

_SCHEMA_FILE = Path(__file__).with_name("schemas.inc")


def read_schemas(path: Path = _SCHEMA_FILE) -> list[str]:
    """The op schema strings of saefast/ops/schemas.inc (shared with csrc/saefast.cpp)."""
    schemas = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("//"):
            schemas.append(ast.literal_eval(line.rstrip(",")))
    return schemas


SCHEMAS: list[str] = read_schemas()
NATIVE: bool = _native.load()  # True: C++ defined the schemas (and maybe kernels)

# ---------------------------------------------------------------------------- input checks

_FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def _fail(op: str, message: str, error: type[Exception] = ValueError):
    raise error(f"saefast.{op}: {message}")


def _check_matrix(op: str, name: str, t: Tensor, layout: str) -> None:
    if t.dim() != 2:
        _fail(op, f"{name} must be 2-D {layout}, got shape {tuple(t.shape)}")


def _check_float(op: str, **tensors: Tensor) -> None:
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1 or dtypes.pop() not in _FLOAT_DTYPES:
        got = ", ".join(f"{n} {str(t.dtype).removeprefix('torch.')}" for n, t in tensors.items())
        _fail(op, f"{', '.join(tensors)} must share one dtype: float32, float64 or bfloat16; "
                  f"got {got}", TypeError)


def _check_device(op: str, **tensors: Tensor) -> None:
    if len({t.device for t in tensors.values()}) != 1:
        got = ", ".join(f"{n} on {t.device}" for n, t in tensors.items())
        _fail(op, f"all inputs must be on one device; got {got}")


def _check_k(op: str, k: int, limit: int, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, torch.SymInt)):
        _fail(op, f"k must be an int, got {type(k).__name__}", TypeError)
    if k < 1 or k > limit:
        _fail(op, f"k must satisfy 1 <= k <= {what} = {limit}, got k = {k}")


def _check_topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> None:
    op = "topk_encode"
    _check_matrix(op, "x", x, "[B, d]")
    _check_matrix(op, "W_enc", W_enc, "[F, d]")
    if W_enc.shape[1] != x.shape[1]:
        _fail(op, f"W_enc must be [F, d] with d = {x.shape[1]} (x is {tuple(x.shape)}), "
                  f"got {tuple(W_enc.shape)}")
    if b_enc.dim() != 1 or b_enc.shape[0] != W_enc.shape[0]:
        _fail(op, f"b_enc must be [F] with F = {W_enc.shape[0]}, got shape {tuple(b_enc.shape)}")
    _check_float(op, x=x, W_enc=W_enc, b_enc=b_enc)
    _check_device(op, x=x, W_enc=W_enc, b_enc=b_enc)
    _check_k(op, k, W_enc.shape[0], "F")


def _check_sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> None:
    op = "sparse_decode"
    _check_matrix(op, "values", values, "[B, k]")
    if tuple(indices.shape) != tuple(values.shape):
        _fail(op, f"indices must have the shape of values {tuple(values.shape)}, "
                  f"got {tuple(indices.shape)}")
    if indices.dtype not in (torch.int64, torch.int32):
        _fail(op, f"indices must be int64 (or int32), got {str(indices.dtype).removeprefix('torch.')}",
              TypeError)
    _check_matrix(op, "W_dec", W_dec, "[F, d]")
    if b_dec.dim() != 1 or b_dec.shape[0] != W_dec.shape[1]:
        _fail(op, f"b_dec must be [d] with d = {W_dec.shape[1]} (W_dec is {tuple(W_dec.shape)}), "
                  f"got shape {tuple(b_dec.shape)}")
    _check_float(op, values=values, W_dec=W_dec, b_dec=b_dec)
    _check_device(op, values=values, indices=indices, W_dec=W_dec, b_dec=b_dec)


def _check_cosine_topk(A: Tensor, B: Tensor, k: int) -> None:
    op = "cosine_topk"
    _check_matrix(op, "A", A, "[n, d]")
    _check_matrix(op, "B", B, "[m, d]")
    if A.shape[1] != B.shape[1]:
        _fail(op, f"A and B must have the same d, got A {tuple(A.shape)} and B {tuple(B.shape)}")
    _check_float(op, A=A, B=B)
    _check_device(op, A=A, B=B)
    _check_k(op, k, min(A.shape[0], B.shape[0]), "min(n, m)")


# ---------------------------------------------------------------------------- public ops


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of relu(x @ W_enc.T + b_enc) per row, sorted descending.

    x [B, d], W_enc [F, d], b_enc [F], 1 <= k <= F -> (values [B, k], indices [B, k] int64).
    Differentiable in x, W_enc and b_enc (gradients only where a positive value was kept)."""
    _check_topk_encode(x, W_enc, b_enc, k)
    return torch.ops.saefast.topk_encode.default(x, W_enc, b_enc, k)


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """x_hat [B, d] = b_dec + sum_j values[:, j] * W_dec[indices[:, j]].

    values [B, k], indices [B, k] int64, W_dec [F, d], b_dec [d]. Differentiable in values,
    W_dec and b_dec."""
    _check_sparse_decode(values, indices, W_dec, b_dec)
    return torch.ops.saefast.sparse_decode.default(values, indices, W_dec, b_dec)


def cosine_topk(A: Tensor, B: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The k largest cosines of every row of A (over B's rows) and of every row of B (over A's).

    A [n, d], B [m, d], 1 <= k <= min(n, m) -> (row_vals [n, k], row_idx [n, k] into B,
    col_vals [m, k], col_idx [m, k] into A), sorted descending. Not differentiable."""
    _check_cosine_topk(A, B, k)
    return torch.ops.saefast.cosine_topk.default(A, B, k)


# ---------------------------------------------------------------------------- registration

if NATIVE:
    _lib = torch.library.Library("saefast", "IMPL")
else:
    _lib = torch.library.Library("saefast", "DEF")
    for _schema in SCHEMAS:
        _lib.define(_schema)
    _lib.impl("build_info", lambda: json.dumps({"native": False}), "CompositeImplicitAutograd")


def _check_index_range(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> None:
    """Reads the indices (a device sync): only for the reference kernel, never under tracing."""
    if indices.numel() and (indices.min() < 0 or indices.max() >= W_dec.shape[0]):
        _fail("sparse_decode", f"indices must be in [0, F = {W_dec.shape[0]}), got values in "
                               f"[{int(indices.min())}, {int(indices.max())}]")


def _checked(reference_op, *checks):
    def kernel(*args):
        for check in checks:
            check(*args)
        return reference_op(*args)

    kernel.__name__ = reference_op.__name__
    return kernel


# Reference kernels for every backend without a native one (a direct backend registration
# such as TORCH_LIBRARY_IMPL(saefast, CPU, m) wins over this alias).
_lib.impl("topk_encode", _checked(reference.topk_encode, _check_topk_encode),
          "CompositeExplicitAutograd")
_lib.impl("sparse_decode",
          _checked(reference.sparse_decode, _check_sparse_decode, _check_index_range),
          "CompositeExplicitAutograd")
_lib.impl("cosine_topk", _checked(reference.cosine_topk, _check_cosine_topk),
          "CompositeExplicitAutograd")
_lib.impl("topk_encode_backward", reference.topk_encode_backward, "CompositeExplicitAutograd")
_lib.impl("sparse_decode_backward", reference.sparse_decode_backward, "CompositeExplicitAutograd")


@torch.library.register_fake("saefast::topk_encode", lib=_lib)
def _topk_encode_fake(x, W_enc, b_enc, k):
    _check_topk_encode(x, W_enc, b_enc, k)
    return x.new_empty(x.shape[0], k), x.new_empty(x.shape[0], k, dtype=torch.int64)


@torch.library.register_fake("saefast::sparse_decode", lib=_lib)
def _sparse_decode_fake(values, indices, W_dec, b_dec):
    _check_sparse_decode(values, indices, W_dec, b_dec)
    return values.new_empty(values.shape[0], W_dec.shape[1])


@torch.library.register_fake("saefast::cosine_topk", lib=_lib)
def _cosine_topk_fake(A, B, k):
    _check_cosine_topk(A, B, k)
    n, m = A.shape[0], B.shape[0]
    return (A.new_empty(n, k), A.new_empty(n, k, dtype=torch.int64),
            A.new_empty(m, k), A.new_empty(m, k, dtype=torch.int64))


@torch.library.register_fake("saefast::topk_encode_backward", lib=_lib)
def _topk_encode_backward_fake(grad_values, x, W_enc, values, indices, output_mask):
    return (x.new_empty(x.shape if output_mask[0] else (0,)),
            W_enc.new_empty(W_enc.shape if output_mask[1] else (0,)),
            W_enc.new_empty((W_enc.shape[0],) if output_mask[2] else (0,)))


@torch.library.register_fake("saefast::sparse_decode_backward", lib=_lib)
def _sparse_decode_backward_fake(grad_out, values, indices, W_dec, output_mask):
    return (values.new_empty(values.shape if output_mask[0] else (0,)),
            W_dec.new_empty(W_dec.shape if output_mask[1] else (0,)),
            W_dec.new_empty((W_dec.shape[1],) if output_mask[2] else (0,)))


def _topk_encode_setup(ctx, inputs, output):
    x, W_enc, _b_enc, _k = inputs
    values, indices = output
    # x and W_enc are kept whole (no copy); the backward op reads x only for grad_W_enc and
    # W_enc only for grad_x
    ctx.save_for_backward(x, W_enc, values, indices)


def _topk_encode_backward(ctx, grad_values, _grad_indices):
    x, W_enc, values, indices = ctx.saved_tensors
    mask = list(ctx.needs_input_grad[:3])
    grads = torch.ops.saefast.topk_encode_backward.default(grad_values, x, W_enc, values,
                                                           indices, mask)
    return (*(g if need else None for g, need in zip(grads, mask)), None)


def _sparse_decode_setup(ctx, inputs, output):
    values, indices, W_dec, _b_dec = inputs
    ctx.save_for_backward(values, indices, W_dec)


def _sparse_decode_backward(ctx, grad_out):
    values, indices, W_dec = ctx.saved_tensors
    needs = ctx.needs_input_grad
    mask = [needs[0], needs[2], needs[3]]
    grad_values, grad_w, grad_b = torch.ops.saefast.sparse_decode_backward.default(
        grad_out, values, indices, W_dec, mask)
    return (grad_values if mask[0] else None, None, grad_w if mask[1] else None,
            grad_b if mask[2] else None)


torch.library.register_autograd("saefast::topk_encode", _topk_encode_backward,
                                setup_context=_topk_encode_setup, lib=_lib)
torch.library.register_autograd("saefast::sparse_decode", _sparse_decode_backward,
                                setup_context=_sparse_decode_setup, lib=_lib)
