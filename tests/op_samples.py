"""What the op tests share: sample inputs, naive dense versions, tolerances, the oracle of the
native kernels' exact selection.

Backend: each pytest process tests the backend it loaded, native when built, the reference
kernels under SAEFAST_DISABLE_NATIVE=1 (the README's second pytest invocation). Device: cpu,
plus cuda when present. Dtype: float32, float64, bfloat16, float16.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as nnf

import saefast

INFO = saefast.build_info()
NATIVE = bool(INFO.get("native"))
BACKEND = "native" if NATIVE else "reference"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# (atol, rtol) of a result against float64 math on the same (rounded) inputs; float16 keeps 11
# significant bits to bfloat16's 8, so its bound is tighter
TOL = {torch.float32: (1e-5, 0.0), torch.float64: (1e-12, 0.0), torch.bfloat16: (0.06, 0.01),
       torch.float16: (1e-3, 2**-10)}
# The 16-bit dtypes accumulate in float32 and round once at the end: a result is within this
# relative error (half an ulp: 2^-8 with 8 significant bits, 2^-11 with 11) of float64 math on
# the rounded inputs, plus float32's own error (an atol of ~1e-5 at these sizes).
HALF_ULP = {torch.bfloat16: 2**-8, torch.float16: 2**-11}
low_precision = pytest.mark.parametrize("dtype", list(HALF_ULP), ids=lambda d: str(d).removeprefix("torch."))

devices = pytest.mark.parametrize("device", DEVICES)
dtypes = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
needs_native = pytest.mark.skipif(not NATIVE, reason="checks the native kernels' blocking")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64).to(dtype).to(device)


def encoder(B, d, F, seed=0, dtype=torch.float32, device="cpu"):
    """x [B, d], W_enc [F, d], b_enc [F] (a small bias, so relu leaves most values)."""
    x = randn(B, d, seed=seed + 1, dtype=dtype, device=device)
    W = randn(F, d, seed=seed + 2, dtype=dtype, device=device)
    b = (randn(F, seed=seed + 3) * 0.5).to(dtype).to(device)
    return x, W, b


def codes(B, k, F, seed=0, device="cpu"):
    """values [B, k] >= 0 and indices [B, k] into F latents (repeats allowed)."""
    indices = torch.randint(0, F, (B, k), generator=gen(seed))
    return randn(B, k, seed=seed + 1).abs().to(device), indices.to(device)


# ---------------------------------------------------------------------------- naive versions


def dense_pre(x, W_enc, b_enc):
    return torch.relu(x.double() @ W_enc.double().T + b_enc.double())  # [B, F]


def dense_sparse_decode(values, indices, W_dec, b_dec):
    return b_dec + (values.unsqueeze(2) * W_dec[indices.long()]).sum(1)  # [B, d]


def dense_cosines(A, B):
    return nnf.normalize(A.double(), dim=1) @ nnf.normalize(B.double(), dim=1).T  # [n, m]


def assert_topk(values, indices, dense, k, atol, rtol=0.0):
    """values are the k largest of each row of `dense`, sorted, and `indices` point at them."""
    expected = dense.topk(k, dim=1).values
    assert values.shape == indices.shape == (dense.shape[0], k)
    assert indices.dtype == torch.int64
    torch.testing.assert_close(values.double(), expected, atol=atol, rtol=rtol)
    torch.testing.assert_close(dense.gather(1, indices), values.double(), atol=atol, rtol=rtol)
    assert (values[:, :-1] >= values[:, 1:]).all(), "not sorted descending"
    assert all(len(set(row.tolist())) == k for row in indices), "repeated index in a row"


def assert_same_topk(values, indices, ref_values, dense, atol):
    """Same values as the reference; indices point at those values (ties may differ)."""
    assert indices.dtype == torch.int64 and values.shape == ref_values.shape
    torch.testing.assert_close(values.double(), ref_values.double(), atol=atol, rtol=0)
    torch.testing.assert_close(dense.gather(1, indices), values.double(), atol=atol, rtol=0)
    assert (values[:, :-1] >= values[:, 1:]).all(), "not sorted descending"
    assert all(len(set(row.tolist())) == row.numel() for row in indices), "repeated index"


# ---------------------------------------------------------------------------- sample inputs


class Sample(NamedTuple):
    args: tuple
    name: str


def sample_inputs(op: str, device="cpu", dtype=torch.float32, requires_grad=False) -> list[Sample]:
    """Small valid inputs of `op`, crossing the native kernels' tiles (1,024 columns)."""
    def leaf(t):
        return t.clone().requires_grad_(requires_grad and t.is_floating_point())

    if op == "topk_encode":
        cases = [((4, 6, 11), 3, "small"), ((5, 3, 1030), 4, "two tiles"), ((3, 5, 40), 40, "k = F")]
        return [Sample((*map(leaf, encoder(B, d, F, dtype=dtype, device=device)), k), name)
                for (B, d, F), k, name in cases]
    if op == "sparse_decode":
        out = []
        for (B, k, F, d), name in [((4, 3, 11, 6), "small"), ((6, 3, 5, 3), "repeated latents"),
                                   ((5, 4, 1030, 3), "many latents")]:
            values, indices = codes(B, k, F, device=device)
            W, b = randn(F, d, seed=3, dtype=dtype, device=device), randn(d, seed=4, dtype=dtype, device=device)
            out.append(Sample((leaf(values.to(dtype)), indices, leaf(W), leaf(b)), name))
        return out
    if op == "cosine_topk":
        cases = [((5, 8, 4), 3, "small"), ((7, 1030, 3), 3, "two tiles"), ((4, 6, 3), 4, "k = n")]
        return [Sample((randn(n, d, seed=7, dtype=dtype, device=device),
                        randn(m, d, seed=8, dtype=dtype, device=device), k), name)
                for (n, m, d), k, name in cases]
    raise ValueError(op)


# ---------------------------------------------------------------------------- exact selection
# The native kernels walk balanced row blocks of at most max_row_block rows (set by the shape
# alone) and gemm_tile-wide column tiles, reported by the build (build_info()["cpu_tiles"]).
# Their output must be exactly the top-k of the GEMM's values under (value desc, index asc):
# the oracle below sorts stably. Integer-valued inputs make every GEMM exact (any blocking,
# any BLAS) and give many ties; for float inputs the oracle makes the kernels' GEMM calls.


def blockwise_mm(a, b):
    """a @ b.T with the native kernels' calls: balanced row blocks, column tiles,
    single-threaded (as inside the kernels' workers)."""
    tiles = INFO["cpu_tiles"]
    row_block, tile = tiles["max_row_block"], tiles["gemm_tile"]
    count = max(1, -(-a.shape[0] // row_block))
    base, extra = divmod(a.shape[0], count)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for blk in range(count):
            r0, n = blk * base + min(blk, extra), base + (blk < extra)
            rows.append(torch.cat([a[r0:r0 + n] @ b[c0:c0 + tile].T for c0 in range(0, b.shape[0], tile)], 1))
        return torch.cat(rows)
    finally:
        torch.set_num_threads(before)


def stable_topk(v, k):
    values, indices = torch.sort(v, dim=1, descending=True, stable=True)  # ties: smaller index first
    return values[:, :k], indices[:, :k]


def acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def exact_values(shape, seed, kind, dtype):
    t = {"ints": lambda: torch.randint(-2, 3, shape, generator=gen(seed)).double(),  # exact GEMMs, ties
         "zeros": lambda: torch.zeros(shape, dtype=torch.float64),
         "randn": lambda: torch.randn(*shape, generator=gen(seed), dtype=torch.float64)}[kind]()
    return t.to(dtype)


def assert_equal(ours, want):
    for o, w in zip(ours, want):
        assert o.dtype == w.dtype and torch.equal(o, w)


class Threads:
    """torch.set_num_threads(n) inside a `with`."""

    def __init__(self, n: int):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)
