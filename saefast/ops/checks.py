"""Input checks of the ops on the Python paths (reference kernels, fake kernels).

Each op module (encode.py, decode.py, cosine.py) composes these into one `check` that its
reference kernel and its fake kernel both run; the native kernels run the same checks in
C++ (csrc/cpu/checks.h) with the same messages, so every path fails alike and each call is
checked once, by the kernel the dispatcher picked. Written with torch._check_value /
_check_type: under torch.compile a condition on symbolic sizes becomes a runtime assertion
instead of a guard.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def require(op: str, cond, message: str, error: type[Exception] = ValueError) -> None:
    if isinstance(cond, bool):  # eager: torch._check_* would import sympy on first use (~0.35 s)
        if not cond:
            raise error(f"saefast.{op}: {message}")
        return
    check = torch._check_type if error is TypeError else torch._check_value
    check(cond, lambda: f"saefast.{op}: {message}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def shape(t: Tensor) -> tuple:
    return tuple(t.shape)


def matrix(op: str, name: str, t: Tensor, layout: str) -> None:
    require(op, t.dim() == 2, f"{name} must be 2-D {layout}, got shape {shape(t)}")


def same_float(op: str, **tensors: Tensor) -> None:
    dtypes = {t.dtype for t in tensors.values()}
    got = ", ".join(f"{n} {dtype_name(t.dtype)}" for n, t in tensors.items())
    require(op, len(dtypes) == 1 and dtypes.pop() in FLOAT_DTYPES,
            f"{', '.join(tensors)} must share one dtype: float32, float64, bfloat16 or float16; got {got}",
            TypeError)


def same_device(op: str, **tensors: Tensor) -> None:
    got = ", ".join(f"{n} on {t.device}" for n, t in tensors.items())
    require(op, len({t.device for t in tensors.values()}) == 1,
            f"all inputs must be on one device; got {got}")


def int_arg(op: str, name: str, value) -> None:
    """An int argument, not a bool or float (the schema's own error would be cryptic)."""
    require(op, isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool),
            f"{name} must be an int, got {type(value).__name__}", TypeError)


def k_in_range(op: str, k: int, limit: int, what: str) -> None:
    int_arg(op, "k", k)
    require(op, 1 <= k and k <= limit, f"k must satisfy 1 <= k <= {what} = {limit}, got k = {k}")
