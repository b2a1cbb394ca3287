"""cosine_topk: the k largest cosines of every row of A over B's rows, and of B's over A's.

The check, the public wrapper, the reference kernel and fake kernel of the op (it is not
differentiable); the native kernels are csrc/cpu/cosine_topk.cpp and csrc/cuda/cosine_topk.cpp.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from saefast.ops import checks, reference
from saefast.ops.library import register

OP = "cosine_topk"


class CosineTopK(NamedTuple):
    """Both sides' top-k cosines, sorted descending (unpacks as a 4-tuple)."""

    row_vals: Tensor  # [n, k], the dtype of A
    row_idx: Tensor  # [n, k] int64 into B's rows
    col_vals: Tensor  # [m, k]
    col_idx: Tensor  # [m, k] int64 into A's rows


def check(A: Tensor, B: Tensor, k: int) -> None:
    checks.matrix(OP, "A", A, "[n, d]")
    checks.matrix(OP, "B", B, "[m, d]")
    checks.require(OP, A.shape[1] == B.shape[1],
                   f"A and B must have the same d, got A {checks.shape(A)} and B {checks.shape(B)}")
    checks.same_float(OP, A=A, B=B)
    checks.same_device(OP, A=A, B=B)
    checks.k_in_range(OP, k, min(A.shape[0], B.shape[0]), "min(n, m)")


def cosine_topk(A: Tensor, B: Tensor, k: int) -> CosineTopK:
    """The k largest cosines of every row of A (over B's rows) and of every row of B (over A's).

    A [n, d], B [m, d], 1 <= k <= min(n, m) -> CosineTopK(row_vals [n, k], row_idx [n, k]
    into B, col_vals [m, k], col_idx [m, k] into A), sorted descending, ties to the smaller
    index. A zero row has cosine 0 with everything. Not differentiable."""
    checks.int_arg(OP, "k", k)
    return CosineTopK(*torch.ops.saefast.cosine_topk.default(A, B, k))


def _reference(A, B, k):
    check(A, B, k)
    return reference.cosine_topk(A, B, k)


def _fake(A, B, k):
    check(A, B, k)
    n, m = A.shape[0], B.shape[0]
    return (A.new_empty(n, k), A.new_empty(n, k, dtype=torch.int64),
            A.new_empty(m, k), A.new_empty(m, k, dtype=torch.int64))


register(OP, reference=_reference, fake=_fake)
