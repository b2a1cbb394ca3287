"""The active ops (native C++ kernels when built) against saefast.ops.reference, the oracle.

Sizes here cross the native kernels' tiles (1,024 features or rows of B a GEMM tile, up to
256 rows a block), so edge tiles and several blocks are exercised. Run the same file with
SAEFAST_DISABLE_NATIVE=1 and it checks the registered reference path instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as nnf

import saefast
from saefast import ops
from saefast.ops import reference

ROOT = Path(__file__).resolve().parents[1]
NATIVE = bool(saefast.build_info().get("native"))


def _randn(*shape, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _encoder(B, d, F, seed=0, dtype=torch.float32):
    x = _randn(B, d, seed=seed + 1, dtype=dtype)
    W = _randn(F, d, seed=seed + 2, dtype=dtype)
    b = (_randn(F, seed=seed + 3) * 0.5).to(dtype)
    return x, W, b


def _assert_same_topk(values, indices, ref_values, dense, atol):
    """Same values as the reference; indices point at those values (ties may differ)."""
    assert indices.dtype == torch.int64 and values.shape == ref_values.shape
    torch.testing.assert_close(values.double(), ref_values.double(), atol=atol, rtol=0)
    torch.testing.assert_close(dense.gather(1, indices), values.double(), atol=atol, rtol=0)
    assert (values[:, :-1] >= values[:, 1:]).all(), "not sorted descending"
    assert all(len(set(row.tolist())) == row.numel() for row in indices), "repeated index"


# ---------------------------------------------------------------------------- topk_encode


@pytest.mark.parametrize(
    "B,d,F,k",
    [
        (1, 8, 2500, 7),  # B = 1, F not a multiple of the tile
        (600, 12, 1030, 16),  # several row blocks, a 6-feature edge tile
        (3, 5, 40, 40),  # k = F
        (9, 4, 1500, 1100),  # k larger than a tile
    ],
)
def test_topk_encode_matches_reference(B, d, F, k):
    x, W, b = _encoder(B, d, F)
    values, indices = ops.topk_encode(x, W, b, k)
    ref_values, _ = reference.topk_encode(x, W, b, k)
    dense = torch.relu(x.double() @ W.double().T + b.double())  # [B, F]
    _assert_same_topk(values, indices, ref_values, dense, atol=1e-4)


def test_topk_encode_all_negative_rows_give_zeros_with_distinct_indices():
    x, W, _ = _encoder(4, 6, 1100)
    b = torch.full((1100,), -100.0)
    values, indices = ops.topk_encode(x, W, b, 5)
    assert (values == 0).all()
    assert all(len(set(row.tolist())) == 5 for row in indices)


def test_topk_encode_non_contiguous_and_dtypes():
    x, W, b = _encoder(40, 9, 1200, dtype=torch.float64)
    xs, Ws, bs = x.T.contiguous().T, W[:, :].T.contiguous().T, torch.stack([b, b], 1)[:, 0]
    assert not (xs.is_contiguous() or Ws.is_contiguous() or bs.is_contiguous())
    dense = torch.relu(x @ W.T + b)  # [B, F]
    for dtype, atol in [(torch.float64, 1e-10), (torch.float32, 1e-4)]:
        values, indices = ops.topk_encode(xs.to(dtype), Ws.to(dtype), bs.to(dtype), 8)
        assert values.dtype == dtype
        _assert_same_topk(values, indices, dense.topk(8, dim=1).values, dense, atol=atol)


def test_topk_encode_bfloat16_accumulates_in_float32():
    x, W, b = _encoder(16, 32, 1100, dtype=torch.bfloat16)
    values, indices = ops.topk_encode(x, W, b, 6)
    assert values.dtype == torch.bfloat16
    dense = torch.relu(x.double() @ W.double().T + b.double())  # from the rounded inputs
    # float32 accumulation: only the final rounding to bfloat16 (relative 2^-8) remains
    torch.testing.assert_close(values.double(), dense.gather(1, indices), atol=1e-6, rtol=2**-8)
    torch.testing.assert_close(values.double(), dense.topk(6, dim=1).values, atol=1e-6, rtol=2**-8)


def test_topk_encode_backward_matches_reference():
    x, W, b = _encoder(300, 10, 1030)
    values, indices = ops.topk_encode(x, W, b, 12)
    values[0, -3:] = 0.0  # relu'd entries get no gradient
    grad = _randn(300, 12, seed=9)
    for mask in ([True, True, True], [True, False, False], [False, True, False], [False, False, True]):
        ours = torch.ops.saefast.topk_encode_backward(grad, x, W, values, indices, mask)
        want = reference.topk_encode_backward(grad, x, W, values, indices, mask)
        for o, w in zip(ours, want):
            assert o.shape == w.shape
            torch.testing.assert_close(o, w, atol=1e-5, rtol=1e-5)


def test_topk_encode_gradcheck_across_tiles():
    # float64, a few rows and features spanning two 1,024-feature tiles (W_enc is not an input:
    # gradcheck would perturb all F*d of it); x and b_enc get the numerical check
    x, W, b = _encoder(3, 2, 1030, dtype=torch.float64)
    x.requires_grad_()
    b.requires_grad_()
    assert torch.autograd.gradcheck(lambda xx, bb: ops.topk_encode(xx, W, bb, 4)[0], (x, b),
                                    fast_mode=True)


# ---------------------------------------------------------------------------- sparse_decode


def _codes(B, k, F, seed=0):
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, F, (B, k), generator=gen)  # [B, k], repeats allowed
    return _randn(B, k, seed=seed + 1).abs(), indices


def test_sparse_decode_and_backward_match_reference():
    values, indices = _codes(700, 9, 1300)
    W, b = _randn(1300, 11, seed=3), _randn(11, seed=4)
    torch.testing.assert_close(ops.sparse_decode(values, indices, W, b),
                               reference.sparse_decode(values, indices, W, b))
    grad = _randn(700, 11, seed=5)
    for mask in ([True, True, True], [False, True, False], [True, False, True]):
        ours = torch.ops.saefast.sparse_decode_backward(grad, values, indices, W, mask)
        want = reference.sparse_decode_backward(grad, values, indices, W, mask)
        for o, w in zip(ours, want):
            assert o.shape == w.shape
            torch.testing.assert_close(o, w, atol=1e-5, rtol=1e-5)


def test_sparse_decode_int32_indices_and_non_contiguous():
    values, indices = _codes(5, 4, 30)
    W, b = _randn(7, 30, seed=3).T, _randn(14, seed=4)[::2]  # [30, 7], [7]
    want = reference.sparse_decode(values, indices, W.contiguous(), b.contiguous())
    torch.testing.assert_close(ops.sparse_decode(values.T.contiguous().T, indices.int(), W, b), want)


def test_sparse_decode_gradcheck_with_repeated_latents():
    values, indices = _codes(6, 3, 5)  # 18 entries on 5 latents: every latent repeats
    W, b = _randn(5, 3, seed=3, dtype=torch.float64), _randn(3, seed=4, dtype=torch.float64)
    inputs = [t.double().requires_grad_() for t in (values, W, b)]
    assert torch.autograd.gradcheck(lambda v, w, bb: ops.sparse_decode(v, indices, w, bb), inputs)


# ---------------------------------------------------------------------------- cosine_topk


@pytest.mark.parametrize("n,m,d,k", [(300, 1500, 6, 5), (1, 1030, 4, 1), (700, 2, 3, 2)])
def test_cosine_topk_matches_reference(n, m, d, k):
    A, B = _randn(n, d, seed=1), _randn(m, d, seed=2)
    rv, ri, cv, ci = ops.cosine_topk(A, B, k)
    want_rv, _, want_cv, _ = reference.cosine_topk(A, B, k)
    sims = nnf.normalize(A.double(), dim=1) @ nnf.normalize(B.double(), dim=1).T  # [n, m]
    _assert_same_topk(rv, ri, want_rv, sims, atol=1e-5)
    _assert_same_topk(cv, ci, want_cv, sims.T, atol=1e-5)


def test_cosine_topk_bfloat16_and_float64():
    A, B = _randn(40, 16, seed=1), _randn(1100, 16, seed=2)
    sims = nnf.normalize(A.double(), dim=1) @ nnf.normalize(B.double(), dim=1).T
    rv, ri, cv, ci = ops.cosine_topk(A.double(), B.double(), 4)
    _assert_same_topk(rv, ri, sims.topk(4, dim=1).values, sims, atol=1e-12)
    _assert_same_topk(cv, ci, sims.T.topk(4, dim=1).values, sims.T, atol=1e-12)
    Ab, Bb = A.bfloat16(), B.bfloat16()
    sims_b = nnf.normalize(Ab.double(), dim=1) @ nnf.normalize(Bb.double(), dim=1).T
    rv, ri, cv, ci = ops.cosine_topk(Ab, Bb, 4)
    assert rv.dtype == cv.dtype == torch.bfloat16
    # float32 accumulation of the rounded inputs, then one bfloat16 rounding of the result
    torch.testing.assert_close(rv.double(), sims_b.gather(1, ri), atol=1e-6, rtol=2**-8)
    torch.testing.assert_close(rv.double(), sims_b.topk(4, dim=1).values, atol=1e-6, rtol=2**-8)


def test_cosine_topk_ties_go_to_the_smaller_index():
    A = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # rows 0 and 1: same direction
    B = torch.tensor([[0.0, 3.0], [1.0, 0.0], [5.0, 0.0]])  # rows 1 and 2: same direction
    rv, ri, cv, ci = ops.cosine_topk(A, B, 2)
    assert ri[0].tolist() == [1, 2] and ri[1].tolist() == [1, 2]
    assert ci[1].tolist() == [0, 1] and ci[2].tolist() == [0, 1]


# ---------------------------------------------------------------------------- exact selection
# The native kernels walk row blocks of at most 256 rows (balanced, set by the shape alone),
# feature tiles of 1,024 and, when few row blocks, groups of tiles merged per row. Their
# output must be exactly the top-k of the GEMM's values under (value desc, index asc): the
# oracle below sorts stably. Integer-valued inputs make every GEMM exact (any blocking, any
# BLAS) and give many ties; for float inputs the oracle makes the kernels' GEMM calls.

ROW_BLOCK, TILE = 256, 1024


def _blockwise_mm(a, b):
    """a @ b.T with the native kernels' calls: balanced row blocks of <= 256, 1,024-wide tiles,
    single-threaded (as inside the kernels' workers)."""
    count = max(1, -(-a.shape[0] // ROW_BLOCK))
    base, extra = divmod(a.shape[0], count)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for blk in range(count):
            r0, n = blk * base + min(blk, extra), base + (blk < extra)
            rows.append(torch.cat([a[r0:r0 + n] @ b[c0:c0 + TILE].T for c0 in range(0, b.shape[0], TILE)], 1))
        return torch.cat(rows)
    finally:
        torch.set_num_threads(before)


def _stable_topk(v, k):
    values, indices = torch.sort(v, dim=1, descending=True, stable=True)  # ties: smaller index first
    return values[:, :k], indices[:, :k]


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _encode_oracle(x, W, b, k):
    acc = _acc(x.dtype)
    values, indices = _stable_topk(_blockwise_mm(x.to(acc), W.to(acc)) + b.to(acc), k)
    return values.relu().to(x.dtype), indices


def _cosine_oracle(A, B, k):
    acc = _acc(A.dtype)
    unit = [t.to(acc) / t.to(acc).norm(2, 1, keepdim=True).clamp_min(1e-12) for t in (A, B)]
    sims = _blockwise_mm(*unit)  # [n, m]
    rv, ri = _stable_topk(sims, k)
    cv, ci = _stable_topk(sims.T.contiguous(), k)
    return rv.to(A.dtype), ri, cv.to(A.dtype), ci


def _values(shape, seed, kind, dtype):
    gen = torch.Generator().manual_seed(seed)
    if kind == "ints":  # small integers: exact GEMMs, many ties
        t = torch.randint(-2, 3, shape, generator=gen).double()
    elif kind == "zeros":
        t = torch.zeros(shape, dtype=torch.float64)
    else:
        t = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return t.to(dtype)


def _assert_equal(ours, want):
    for o, w in zip(ours, want):
        assert o.dtype == w.dtype and torch.equal(o, w)


@pytest.mark.skipif(not NATIVE, reason="checks the native kernels' blocking")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
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
def test_topk_encode_is_the_exact_top_k(B, F, k, dtype, kind, threads):
    x, W = _values((B, 6), 1, kind, dtype), _values((F, 6), 2, kind, dtype)
    b = _values((F,), 3, kind, dtype) * (kind != "ints")  # ints: all-equal bias, more ties
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _assert_equal(ops.topk_encode(x, W, b, k), _encode_oracle(x, W, b, k))
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not NATIVE, reason="checks the native kernels' blocking")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("n,m,k", [(300, 1500, 20), (1, 1030, 1), (700, 2, 2), (257, 64, 64), (40, 33, 33)])
@pytest.mark.parametrize("kind", ["ints", "randn"])
def test_cosine_topk_is_the_exact_top_k(n, m, k, dtype, kind, threads):
    A, B = _values((n, 3), 4, kind, dtype), _values((m, 3), 5, kind, dtype)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _assert_equal(ops.cosine_topk(A, B, k), _cosine_oracle(A, B, k))
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("rows,features", [(520, 1100), (600, 5000)])  # 5000: feature groups vary
def test_results_do_not_depend_on_the_number_of_threads(rows, features):
    x, W, b = _encoder(rows, 8, features)
    A, B = _randn(520, 8, seed=5), _randn(1100, 8, seed=6)
    grad = _randn(rows, 6, seed=7)
    before = torch.get_num_threads()

    def run():
        values, indices = ops.topk_encode(x, W, b, 6)
        grads = torch.ops.saefast.topk_encode_backward(grad, x, W, values, indices, [True] * 3)
        dec = torch.ops.saefast.sparse_decode_backward(x, values, indices, W, [True] * 3)
        return [values, indices, *grads, *dec, *ops.cosine_topk(A, B, 6)]

    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(max(2, before))
        many = run()
    finally:
        torch.set_num_threads(before)
    for a, b_ in zip(one, many):
        assert torch.equal(a, b_)


# ---------------------------------------------------------------------------- opcheck, errors


def _opcheck_cases():
    x, W, b = _encoder(5, 3, 1030)
    values, indices = reference.topk_encode(x, W, b, 4)
    grad = _randn(5, 4, seed=8)
    return [
        ("topk_encode", tuple(t.requires_grad_() for t in (x.clone(), W.clone(), b.clone())) + (4,)),
        ("topk_encode_backward", (grad, x, W, values, indices, [True, True, True])),
        ("topk_encode_backward", (grad, x, W, values, indices, [False, True, False])),
        ("sparse_decode", (values.clone().requires_grad_(), indices, W.clone().requires_grad_(),
                           _randn(3, seed=9).requires_grad_())),
        ("sparse_decode_backward", (_randn(5, 3, seed=10), values, indices, W, [True, True, True])),
        ("sparse_decode_backward", (_randn(5, 3, seed=10), values, indices, W, [True, False, False])),
        ("cosine_topk", (_randn(7, 3, seed=11), _randn(1030, 3, seed=12), 3)),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_cases())))
def test_opcheck_across_tiles_and_backward_ops(case):
    name, args = _opcheck_cases()[case]
    torch.library.opcheck(getattr(torch.ops.saefast, name).default, args)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda x, W, b: torch.ops.saefast.topk_encode(x, W, b, 7), ValueError, r"1 <= k <= F = 6, got k = 7"),
        (lambda x, W, b: torch.ops.saefast.topk_encode(x, W[:, :3], b, 2), ValueError, r"W_enc must be \[F, d\]"),
        (lambda x, W, b: torch.ops.saefast.topk_encode(x, W.double(), b, 2), TypeError, r"share one dtype"),
        (lambda x, W, b: torch.ops.saefast.sparse_decode(x, x.long() + 6, W, b[:4]), ValueError,
         r"indices must be in \[0, F = 6\)"),
        (lambda x, W, b: torch.ops.saefast.sparse_decode(x, x, W, b[:4]), TypeError, r"indices must be int64"),
        (lambda x, W, b: torch.ops.saefast.cosine_topk(x, W, 3), ValueError, r"1 <= k <= min\(n, m\) = 2"),
    ],
)
def test_direct_torch_ops_calls_fail_clearly(call, error, message):
    """Calls that skip saefast.ops' Python checks meet the same checks at the kernel."""
    x, W, b = _randn(2, 4), _randn(6, 4), _randn(6)
    with pytest.raises(error, match=message):
        call(x, W, b)


# ---------------------------------------------------------------------------- training parity


def train_small(steps: int = 40) -> dict:
    """A small Top-K SAE trained with saefast.ops and Adam on planted features: the weights
    after each of the first 3 steps and every loss."""
    d, F, k, B = 16, 1100, 6, 64
    dirs = nnf.normalize(_randn(48, d, seed=20), dim=1)  # [48, d] planted features
    gen = torch.Generator().manual_seed(21)
    W_dec = nnf.normalize(_randn(F, d, seed=22), dim=1)  # [F, d]
    params = [torch.nn.Parameter(t) for t in (W_dec.clone(), torch.zeros(F), W_dec, torch.zeros(d))]
    W_enc, b_enc, W_dec, b_dec = params
    opt = torch.optim.Adam(params, lr=3e-3)
    snapshots, losses = [], []
    for step in range(steps):
        codes = torch.rand(B, 48, generator=gen) * (torch.rand(B, 48, generator=gen) < 0.1)  # [B, 48]
        x = codes @ dirs + 0.01 * torch.randn(B, d, generator=gen)  # [B, d]
        values, indices = ops.topk_encode(x - b_dec, W_enc, b_enc, k)
        loss = (ops.sparse_decode(values, indices, W_dec, b_dec) - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step < 3:
            snapshots.append([p.detach().clone() for p in params])
    return {"snapshots": snapshots, "losses": losses}


def test_training_matches_the_reference_path(tmp_path):
    """Native (when built) and SAEFAST_DISABLE_NATIVE=1 train the same SAE: the same weights
    over the first steps, and a final loss within tolerance (top-k near-ties let a long run
    drift legitimately)."""
    out = tmp_path / "reference.pt"
    code = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_ops_native as t; torch.save(t.train_small(), {str(out)!r})")
    env = dict(os.environ, SAEFAST_DISABLE_NATIVE="1")
    env.pop("SAEFAST_REQUIRE_NATIVE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    want = torch.load(out)
    ours = train_small()
    for step, (mine, theirs) in enumerate(zip(ours["snapshots"], want["snapshots"])):
        for name, a, b in zip(("W_enc", "b_enc", "W_dec", "b_dec"), mine, theirs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{name} after step {step + 1}")
    assert ours["losses"][-1] == pytest.approx(want["losses"][-1], rel=0.05)
    assert ours["losses"][-1] < 0.5 * ours["losses"][0], "the SAE did not learn"


# ---------------------------------------------------------------------------- README example


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use saefast.ops in your own SAE", 1)[1]
    return re.search(r"```python\n(.+?)\n```", section, re.S).group(1)


@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="no source tree")
def test_readme_example_switches_an_existing_sae_to_saefast():
    code = _readme_example()
    plain_code, switch = code.split("# Switch", 1)
    plain, switched = {}, {}
    exec(plain_code, plain)
    exec(code, switched)
    assert switch.count("saefast.ops.") == 2, "the switch should be two lines"
    torch.manual_seed(0)
    sae_plain = plain["TopKSAE"](16, 300, 4)
    sae_fast = switched["TopKSAE"](16, 300, 4)
    sae_fast.load_state_dict(sae_plain.state_dict())
    x = _randn(8, 16, seed=3)
    out_plain, out_fast = sae_plain(x), sae_fast(x)
    torch.testing.assert_close(out_fast, out_plain, atol=1e-5, rtol=1e-5)
    out_plain.pow(2).sum().backward()
    out_fast.pow(2).sum().backward()
    for (name, p), q in zip(sae_plain.named_parameters(), sae_fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-4, msg=name)


# ---------------------------------------------------------------------------- reference path


@pytest.mark.skipif(not NATIVE, reason="the native build is not loaded: this file already ran the reference")
def test_this_file_passes_with_native_disabled():
    """The same checks against the reference kernels registered from Python."""
    env = dict(os.environ, SAEFAST_DISABLE_NATIVE="1")
    env.pop("SAEFAST_REQUIRE_NATIVE", None)
    select = "not training_matches and not native_disabled"  # parity already runs both paths
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__, "-k", select],
        capture_output=True, text=True, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
