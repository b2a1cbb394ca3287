"""saefast ops vs naive dense PyTorch: values, indices (up to ties), gradients, registration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as nnf

import saefast
from saefast import ops
from saefast.ops import reference

DISABLED = os.environ.get("SAEFAST_DISABLE_NATIVE") == "1"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------- naive versions


def dense_pre(x, W_enc, b_enc):
    return torch.relu(x.double() @ W_enc.double().T + b_enc.double())  # [B, F]


def dense_sparse_decode(values, indices, W_dec, b_dec):
    return b_dec + (values.unsqueeze(2) * W_dec[indices.long()]).sum(1)  # [B, d]


def dense_cosines(A, B):
    return nnf.normalize(A.double(), dim=1) @ nnf.normalize(B.double(), dim=1).T  # [n, m]


def assert_topk(values, indices, dense, k, atol):
    """values are the k largest of each row of `dense`, sorted, and `indices` point at them."""
    expected = dense.topk(k, dim=1).values
    assert values.shape == indices.shape == (dense.shape[0], k)
    assert indices.dtype == torch.int64
    torch.testing.assert_close(values.double(), expected, atol=atol, rtol=0)
    torch.testing.assert_close(dense.gather(1, indices), expected, atol=atol, rtol=0)
    assert (values[:, :-1] >= values[:, 1:]).all(), "not sorted descending"
    assert all(len(set(row.tolist())) == k for row in indices), "repeated index in a row"


# ---------------------------------------------------------------------------- topk_encode


@pytest.mark.parametrize(
    "B,d,F,k,tile",
    [
        (6, 8, 40, 5, 4096),  # one tile
        (6, 8, 40, 5, 7),  # F not a multiple of the tile, k < tile
        (5, 8, 23, 9, 4),  # k larger than a tile
        (1, 3, 10, 10, 4),  # B = 1, k = F
    ],
)
def test_topk_encode_matches_dense(monkeypatch, B, d, F, k, tile):
    monkeypatch.setattr(reference, "TILE_F", tile)
    x, W, b = _randn(B, d, seed=1), _randn(F, d, seed=2), _randn(F, seed=3) + 2.0
    values, indices = ops.topk_encode(x, W, b, k)
    assert values.dtype == x.dtype
    assert_topk(values, indices, dense_pre(x, W, b), k, atol=1e-5)


def test_topk_encode_non_contiguous():
    x = _randn(8, 5, seed=1).T  # [5, 8]
    W = _randn(8, 30, seed=2).T  # [30, 8]
    b = (_randn(60, seed=3) + 2.0)[::2]  # [30]
    assert not (x.is_contiguous() or W.is_contiguous() or b.is_contiguous())
    values, indices = ops.topk_encode(x, W, b, 4)
    assert_topk(values, indices, dense_pre(x, W, b), 4, atol=1e-5)


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-12), (torch.bfloat16, 0.06)])
def test_topk_encode_dtypes(dtype, atol):
    x, W, b = (_randn(4, 16, seed=1, dtype=dtype), _randn(50, 16, seed=2, dtype=dtype),
               _randn(50, seed=3, dtype=dtype))
    values, indices = ops.topk_encode(x, W, b, 6)
    assert values.dtype == dtype and indices.dtype == torch.int64
    dense = dense_pre(x, W, b)  # from the same (rounded) inputs, in float64
    torch.testing.assert_close(values.double(), dense.gather(1, indices), atol=atol, rtol=0.01)
    torch.testing.assert_close(values.double(), dense.topk(6, dim=1).values, atol=atol, rtol=0.01)


def test_topk_encode_gradients_match_dense(monkeypatch):
    monkeypatch.setattr(reference, "TILE_F", 8)
    x, W, b = _randn(5, 6, seed=1), _randn(20, 6, seed=2), _randn(20, seed=3)
    grad = _randn(5, 4, seed=4)

    leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    values, indices = ops.topk_encode(*leaves, 4)
    (values * grad).sum().backward()

    dense_leaves = [t.clone().requires_grad_() for t in (x, W, b)]
    pre = torch.relu(dense_leaves[0] @ dense_leaves[1].T + dense_leaves[2])  # [B, F]
    (pre.gather(1, indices) * grad).sum().backward()
    for ours, want in zip(leaves, dense_leaves):
        torch.testing.assert_close(ours.grad, want.grad, atol=1e-5, rtol=1e-5)


def test_topk_encode_gradcheck():
    x, W, b = _randn(3, 4, seed=1), _randn(9, 4, seed=2), _randn(9, seed=3)
    inputs = [t.double().requires_grad_() for t in (x, W, b)]
    assert torch.autograd.gradcheck(lambda *a: ops.topk_encode(*a, 3)[0], inputs)


def test_topk_encode_only_needed_grads():
    x, W, b = _randn(3, 4, seed=1).requires_grad_(), _randn(9, 4, seed=2), _randn(9, seed=3)
    ops.topk_encode(x, W, b, 2)[0].sum().backward()
    assert x.grad is not None and W.grad is None and b.grad is None


# ---------------------------------------------------------------------------- sparse_decode


@pytest.mark.parametrize("B,k,F,d", [(7, 3, 20, 5), (1, 4, 4, 2)])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_sparse_decode_matches_dense(B, k, F, d, index_dtype):
    values = _randn(B, k, seed=1)
    indices = torch.stack([torch.randperm(F, generator=_gen(i))[:k] for i in range(B)])
    W, b = _randn(F, d, seed=2), _randn(d, seed=3)
    out = ops.sparse_decode(values, indices.to(index_dtype), W, b)
    torch.testing.assert_close(out, dense_sparse_decode(values, indices, W, b))


def test_sparse_decode_non_contiguous_and_repeated_indices():
    values = _randn(4, 6, seed=1).T  # [6, 4]
    indices = torch.tensor([[0, 0, 3, 1]] * 6).T.contiguous().T  # [6, 4], repeats, strided
    W = _randn(5, 7, seed=2).T  # [7, 5]
    b = _randn(10, seed=3)[::2]  # [5]
    out = ops.sparse_decode(values, indices, W, b)
    torch.testing.assert_close(out, dense_sparse_decode(values, indices, W, b))


def test_sparse_decode_bfloat16():
    values, W, b = (_randn(4, 8, seed=1, dtype=torch.bfloat16),
                    _randn(30, 16, seed=2, dtype=torch.bfloat16), _randn(16, seed=3, dtype=torch.bfloat16))
    indices = torch.randint(0, 30, (4, 8), generator=_gen())
    out = ops.sparse_decode(values, indices, W, b)
    assert out.dtype == torch.bfloat16
    want = dense_sparse_decode(values.double(), indices, W.double(), b.double())
    torch.testing.assert_close(out.double(), want, atol=0.03, rtol=0.01)


def test_sparse_decode_gradients_match_dense():
    values, W, b = _randn(5, 3, seed=1), _randn(12, 4, seed=2), _randn(4, seed=3)
    indices = torch.tensor([[0, 5, 11], [5, 5, 2], [1, 2, 3], [11, 0, 7], [9, 8, 0]])
    grad = _randn(5, 4, seed=4)
    leaves = [t.clone().requires_grad_() for t in (values, W, b)]
    (ops.sparse_decode(leaves[0], indices, leaves[1], leaves[2]) * grad).sum().backward()
    dense_leaves = [t.clone().requires_grad_() for t in (values, W, b)]
    (dense_sparse_decode(dense_leaves[0], indices, dense_leaves[1], dense_leaves[2]) * grad).sum().backward()
    for ours, want in zip(leaves, dense_leaves):
        torch.testing.assert_close(ours.grad, want.grad)


def test_sparse_decode_gradcheck():
    values, W, b = (t.double().requires_grad_() for t in (_randn(3, 2, seed=1), _randn(6, 4, seed=2),
                                                          _randn(4, seed=3)))
    indices = torch.tensor([[0, 5], [2, 2], [4, 1]])
    assert torch.autograd.gradcheck(lambda v, w, bb: ops.sparse_decode(v, indices, w, bb), (values, W, b))


# ---------------------------------------------------------------------------- cosine_topk


@pytest.mark.parametrize("n,m,d,k,block", [(9, 13, 5, 3, 1 << 24), (9, 13, 5, 3, 26), (4, 6, 3, 4, 6), (1, 1, 2, 1, 1)])
def test_cosine_topk_matches_dense(monkeypatch, n, m, d, k, block):
    monkeypatch.setattr(reference, "COSINE_BLOCK_ELEMS", block)  # 26 -> blocks of 2 rows
    A, B = _randn(n, d, seed=1), _randn(m, d, seed=2)
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(A, B, k)
    sims = dense_cosines(A, B)  # [n, m]
    assert_topk(row_vals, row_idx, sims, k, atol=1e-6)
    assert_topk(col_vals, col_idx, sims.T, k, atol=1e-6)


def test_cosine_topk_zero_row_and_non_contiguous():
    A = _randn(6, 4, seed=1).T  # [4, 6]
    A[2] = 0.0
    B = _randn(5, 6, seed=2)
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(A, B, 3)
    assert torch.isfinite(row_vals).all() and torch.isfinite(col_vals).all()
    assert (row_vals[2] == 0).all()
    assert_topk(col_vals, col_idx, dense_cosines(A, B).T, 3, atol=1e-6)


def test_cosine_topk_bfloat16():
    A, B = _randn(7, 16, seed=1, dtype=torch.bfloat16), _randn(9, 16, seed=2, dtype=torch.bfloat16)
    row_vals, row_idx, col_vals, col_idx = ops.cosine_topk(A, B, 2)
    assert row_vals.dtype == col_vals.dtype == torch.bfloat16
    sims = dense_cosines(A, B)
    torch.testing.assert_close(row_vals.double(), sims.gather(1, row_idx), atol=0.01, rtol=0)


# ---------------------------------------------------------------------------- opcheck


def _opcheck_cases():
    x, W, b = _randn(4, 6, seed=1), _randn(11, 6, seed=2), _randn(11, seed=3)
    values, W_dec, b_dec = _randn(4, 3, seed=4), _randn(11, 6, seed=5), _randn(6, seed=6)
    indices = torch.tensor([[0, 3, 10], [1, 1, 2], [5, 6, 7], [9, 8, 0]])
    return [
        ("topk_encode", (x, W, b, 3)),
        ("topk_encode", tuple(t.requires_grad_() for t in (x.clone(), W.clone(), b.clone())) + (3,)),
        ("sparse_decode", (values, indices, W_dec, b_dec)),
        ("sparse_decode", (values.clone().requires_grad_(), indices, W_dec.clone().requires_grad_(),
                           b_dec.clone().requires_grad_())),
        ("cosine_topk", (_randn(5, 4, seed=7), _randn(8, 4, seed=8), 3)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.saefast, name).default, args)


# ---------------------------------------------------------------------------- bad inputs


def _ok():
    return _randn(2, 4), _randn(6, 4), _randn(6)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda x, W, b: ops.topk_encode(x, W, b, 7), ValueError, r"1 <= k <= F = 6, got k = 7"),
        (lambda x, W, b: ops.topk_encode(x, W, b, 0), ValueError, r"1 <= k <= F"),
        (lambda x, W, b: ops.topk_encode(x[None], W, b, 2), ValueError, r"x must be 2-D \[B, d\]"),
        (lambda x, W, b: ops.topk_encode(x, W[:, :3], b, 2), ValueError, r"W_enc must be \[F, d\] with d = 4"),
        (lambda x, W, b: ops.topk_encode(x, W, b[:5], 2), ValueError, r"b_enc must be \[F\] with F = 6"),
        (lambda x, W, b: ops.topk_encode(x.long(), W, b, 2), TypeError, r"float32, float64 or bfloat16; got x int64"),
        (lambda x, W, b: ops.topk_encode(x, W.double(), b, 2), TypeError, r"share one dtype"),
        (lambda x, W, b: ops.topk_encode(x, W, b, 2.0), TypeError, r"k must be an int"),
        (lambda x, W, b: ops.sparse_decode(x, x.long() * 0, W, b), ValueError, r"b_dec must be \[d\] with d = 4"),
        (lambda x, W, b: ops.sparse_decode(x, x.long() * 0 + 6, W, b[:4]), ValueError, r"indices must be in \[0, F = 6\)"),
        (lambda x, W, b: ops.sparse_decode(x, x.long()[:1], W, b), ValueError, r"indices must have the shape"),
        (lambda x, W, b: ops.sparse_decode(x, x, W, b), TypeError, r"indices must be int64"),
        (lambda x, W, b: ops.cosine_topk(x, W, 3), ValueError, r"1 <= k <= min\(n, m\) = 2"),
        (lambda x, W, b: ops.cosine_topk(x, W[:, :2], 1), ValueError, r"same d"),
        (lambda x, W, b: ops.cosine_topk(x.to("meta"), W, 1), ValueError, r"one device"),
    ],
)
def test_bad_inputs_raise_clearly(call, error, message):
    with pytest.raises(error, match=message):
        call(*_ok())


def test_direct_torch_ops_call_is_checked_too():
    x, W, b = _ok()
    with pytest.raises(Exception, match=r"k <= F"):
        torch.ops.saefast.topk_encode(x, W, b, 9)


# ---------------------------------------------------------------------------- registration


def _registered_saefast_ops() -> set[str]:
    return {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("saefast::")}


def test_schema_list_matches_registered():
    names = []
    for schema in ops.SCHEMAS:
        want = torch._C.parse_schema("saefast::" + schema)
        name = want.name.split("::")[1]
        names.append(name)
        assert str(getattr(torch.ops.saefast, name).default._schema) == str(want)
    assert len(set(names)) == len(names)
    assert _registered_saefast_ops() == {"saefast::" + n for n in names}


def test_schema_file_is_the_one_csrc_includes():
    cpp = Path(__file__).resolve().parents[1] / "csrc" / "saefast.cpp"
    if not cpp.exists():
        pytest.skip("no source tree")
    assert '#include "../saefast/ops/schemas.inc"' in cpp.read_text()


def test_reference_is_the_kernel_for_backends_without_a_native_one():
    info = saefast.build_info()
    for name in ("topk_encode", "sparse_decode", "cosine_topk"):
        table = torch._C._dispatch_dump_table(f"saefast::{name}")
        rows = dict(line.split(": ", 1) for line in table.splitlines() if ": " in line)
        for key, native in (("CPU", info.get("cpu_kernels", [])), ("CUDA", info.get("cuda_kernels", []))):
            if name not in native:
                assert "saefast/ops/__init__.py" in rows[key] and "default backend kernel" in rows[key], rows[key]


PRECEDENCE = r"""
import torch, saefast.ops as ops
lib = torch.library.Library("saefast", "IMPL")
lib.impl("topk_encode", lambda x, W, b, k: (x.new_full((x.shape[0], k), 42.0),
                                            x.new_zeros((x.shape[0], k), dtype=torch.int64)), "CPU")
x, W, b = torch.randn(2, 3), torch.randn(5, 3), torch.randn(5)
assert ops.topk_encode(x, W, b, 2)[0].eq(42).all(), "CPU kernel did not win"
assert not ops.cosine_topk(x, W, 2)[0].eq(42).any()
print("ok")
"""


def test_backend_kernel_takes_precedence_over_reference():
    """A kernel registered for CPU (as csrc/cpu/<op>.cpp will do) wins over the reference."""
    done = subprocess.run([sys.executable, "-c", PRECEDENCE], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_import_is_light():
    code = ("import sys, saefast.ops; heavy = [m for m in ('transformer_lens', 'matplotlib', 'scipy') "
            "if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_build_info_keys():
    info = saefast.build_info()
    for key in ("native", "torch", "python", "saefast", "devices", "lapjv", "scipy"):
        assert key in info
    assert info["devices"]["cpu"] is True and isinstance(info["devices"]["cuda"], int)
    if info["native"]:
        for key in ("loaded", "torch_version", "cuda", "cuda_version", "compiler", "openmp",
                    "cpu_kernels", "cuda_kernels"):
            assert key in info
    else:
        assert info["reason"]
    if DISABLED:
        assert not info["native"] and "SAEFAST_DISABLE_NATIVE" in info["reason"]


@pytest.mark.skipif(DISABLED, reason="already running with SAEFAST_DISABLE_NATIVE=1")
def test_ops_pass_with_native_disabled():
    env = dict(os.environ, SAEFAST_DISABLE_NATIVE="1")
    env.pop("SAEFAST_REQUIRE_NATIVE", None)
    select = "matches_dense or gradcheck or opcheck or bad_inputs or schema_list or build_info_keys"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", select],
        capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.cuda
def test_ops_on_cuda_match_cpu():
    x, W, b = _randn(8, 16, seed=1), _randn(300, 16, seed=2), _randn(300, seed=3)
    values, indices = ops.topk_encode(x.cuda(), W.cuda(), b.cuda(), 5)
    assert_topk(values.cpu(), indices.cpu(), dense_pre(x, W, b), 5, atol=1e-4)
    out = ops.sparse_decode(values, indices, W.cuda(), _randn(16, seed=4).cuda())
    torch.testing.assert_close(out.cpu(), dense_sparse_decode(values.cpu(), indices.cpu(), W, _randn(16, seed=4)),
                               atol=1e-4, rtol=1e-4)
    rv, ri, cv, ci = ops.cosine_topk(x.cuda(), W.cuda(), 4)
    sims = dense_cosines(x, W)
    assert_topk(rv.cpu(), ri.cpu(), sims, 4, atol=1e-5)
    assert_topk(cv.cpu(), ci.cpu(), sims.T, 4, atol=1e-5)
