"""The op library as a whole: registration (schemas, which kernel serves which device, the
reference fallback), build_info, thread-count independence, training parity with the
reference path, the README example. Each op's own tests: tests/test_<op>.py."""

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

from op_samples import (
    assert_topk,
    dense_cosines,
    dense_pre,
    dense_sparse_decode,
    encoder,
    randn,
)

ROOT = Path(__file__).resolve().parents[1]
DISABLED = os.environ.get("SAEFAST_DISABLE_NATIVE") == "1"


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
                assert "saefast/ops/library.py" in rows[key] and "default backend kernel" in rows[key], rows[key]


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
    """Importing the ops, and calling each once eagerly, loads none of the heavy libraries
    (sympy: torch._check_* imports it on first use, ~0.35 s, so eager checks raise directly)."""
    code = ("import sys, torch, saefast.ops as ops; x = torch.randn(8, 4); "
            "v, i = ops.topk_encode(x, x, torch.zeros(8), 2); ops.sparse_decode(v, i, x, torch.zeros(4)); "
            "ops.cosine_topk(x, x, 2); "
            "heavy = [m for m in ('transformer_lens', 'matplotlib', 'scipy', 'sympy') "
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
                    "cpu_kernels", "cuda_kernels", "cpu_tiles", "torch_mismatch"):
            assert key in info
        assert set(info["cpu_tiles"]) == {"max_row_block", "gemm_tile"}
    else:
        assert info["reason"]
    if DISABLED:
        assert not info["native"] and "SAEFAST_DISABLE_NATIVE" in info["reason"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.cuda
def test_ops_on_cuda_match_cpu():
    x, W, b = randn(8, 16, seed=1), randn(300, 16, seed=2), randn(300, seed=3)
    values, indices = ops.topk_encode(x.cuda(), W.cuda(), b.cuda(), 5)
    assert_topk(values.cpu(), indices.cpu(), dense_pre(x, W, b), 5, atol=1e-4)
    out = ops.sparse_decode(values, indices, W.cuda(), randn(16, seed=4).cuda())
    torch.testing.assert_close(out.cpu(), dense_sparse_decode(values.cpu(), indices.cpu(), W, randn(16, seed=4)),
                               atol=1e-4, rtol=1e-4)
    rv, ri, cv, ci = ops.cosine_topk(x.cuda(), W.cuda(), 4)
    sims = dense_cosines(x, W)
    assert_topk(rv.cpu(), ri.cpu(), sims, 4, atol=1e-5)
    assert_topk(cv.cpu(), ci.cpu(), sims.T, 4, atol=1e-5)


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("rows,features", [(520, 1100), (600, 5000)])  # 5000: feature groups vary
def test_results_do_not_depend_on_the_number_of_threads(rows, features):
    x, W, b = encoder(rows, 8, features)
    A, B = randn(520, 8, seed=5), randn(1100, 8, seed=6)
    grad = randn(rows, 6, seed=7)
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


# ---------------------------------------------------------------------------- training parity


def train_small(steps: int = 40) -> dict:
    """A small Top-K SAE trained with saefast.ops and Adam on planted features: the weights
    after each of the first 3 steps and every loss."""
    d, F, k, B = 16, 1100, 6, 64
    dirs = nnf.normalize(randn(48, d, seed=20), dim=1)  # [48, d] planted features
    gen = torch.Generator().manual_seed(21)
    W_dec = nnf.normalize(randn(F, d, seed=22), dim=1)  # [F, d]
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


@pytest.mark.skipif(DISABLED, reason="trains on the reference path against itself")
def test_training_matches_the_reference_path(tmp_path):
    """Native (when built) and SAEFAST_DISABLE_NATIVE=1 train the same SAE: the same weights
    over the first steps, and a final loss within tolerance (top-k near-ties let a long run
    drift legitimately)."""
    out = tmp_path / "reference.pt"
    code = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import test_ops as t; torch.save(t.train_small(), {str(out)!r})")
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
    x = randn(8, 16, seed=3)
    out_plain, out_fast = sae_plain(x), sae_fast(x)
    torch.testing.assert_close(out_fast, out_plain, atol=1e-5, rtol=1e-5)
    out_plain.pow(2).sum().backward()
    out_fast.pow(2).sum().backward()
    for (name, p), q in zip(sae_plain.named_parameters(), sae_fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-4, msg=name)
