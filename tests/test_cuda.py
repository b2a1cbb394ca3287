"""The CUDA kernels (csrc/cuda/) against the CPU kernels and float64 math, their run-to-run
determinism, and training on a GPU. Skipped without a GPU; the shared op tests
(test_topk_encode.py, ...) also run on CUDA when one is present."""

import pytest
import torch

import saefast
from saefast import ops

CUDA = torch.cuda.is_available()
NATIVE_CUDA = CUDA and "topk_encode" in saefast.build_info().get("cuda_kernels", [])
pytestmark = pytest.mark.skipif(not NATIVE_CUDA, reason="needs a GPU and the CUDA kernels")


def randn(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def on_both(*tensors):
    return [t.clone() for t in tensors], [t.cuda() for t in tensors]


@pytest.mark.parametrize("B,d,F,k", [(37, 19, 3000, 7), (5, 8, 50, 50), (64, 16, 5000, 1),
                                     (40, 12, 4000, 300), (20, 12, 2000, 600),
                                     (2000, 8, 70_000, 32)])
def test_topk_encode_matches_cpu(B, d, F, k):
    """float64: values and indices equal the CPU kernel's (no near-ties at this precision);
    k = 600 runs the sorting path, F = 70,000 several row blocks."""
    cpu, gpu = on_both(randn(B, d, seed=1), randn(F, d, seed=2), randn(F, seed=3) * 0.3)
    v_c, i_c = ops.topk_encode(*cpu, k)
    v_g, i_g = ops.topk_encode(*gpu, k)
    assert torch.equal(i_g.cpu(), i_c)
    torch.testing.assert_close(v_g.cpu(), v_c, atol=1e-12, rtol=0)


def test_topk_encode_masked_bias_and_ties_match_cpu():
    """-inf on all but a few latents (AuxK) and exact ties (zero weights): the same indices as
    the CPU (ties to the smaller index; -inf after the finite values, by index)."""
    x, W = randn(30, 10, seed=1), randn(6000, 10, seed=2)
    b = torch.full((6000,), float("-inf"), dtype=torch.float64)
    b[torch.arange(0, 6000, 997)] = 0.0  # 7 finite latents
    for k in (5, 7, 40, 512):
        cpu, gpu = on_both(x, W, b)
        v_c, i_c = ops.topk_encode(*cpu, k)
        v_g, i_g = ops.topk_encode(*gpu, k)
        assert torch.equal(i_g.cpu(), i_c), k
        torch.testing.assert_close(v_g.cpu(), v_c, atol=1e-12, rtol=0)
    zeros = torch.zeros(5000, 10, dtype=torch.float64)  # every value ties at 0: slow path
    v, i = ops.topk_encode(x.cuda(), zeros.cuda(), torch.zeros(5000, dtype=torch.float64).cuda(), 9)
    assert torch.equal(i.cpu(), torch.arange(9).expand(30, 9)) and (v == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_topk_encode_low_precision_close_to_float64(dtype):
    x, W, b = randn(256, 64, seed=1, dtype=dtype), randn(8192, 64, seed=2, dtype=dtype), randn(8192, seed=3, dtype=dtype)
    v, i = ops.topk_encode(x.cuda(), W.cuda(), b.cuda(), 32)
    dense = torch.relu(x.double() @ W.double().T + b.double())
    atol = {torch.float32: 1e-4, torch.bfloat16: 0.06, torch.float16: 1e-3}[dtype]
    torch.testing.assert_close(v.double().cpu(), dense.topk(32).values, atol=atol, rtol=0.01)
    torch.testing.assert_close(dense.gather(1, i.cpu()), v.double().cpu(), atol=atol, rtol=0.01)


def test_backwards_match_cpu_with_hot_latents():
    """Gradients of both ops equal the CPU's (float64), with latents that fire on most rows
    (their entries span many chunks of the latent-sorted scatter)."""
    B, d, F, k = 700, 24, 300, 16
    x, W, b = randn(B, d, seed=1), randn(F, d, seed=2), randn(F, seed=3)
    b[:5] += 50.0  # latents 0-4 are in every row's top-k
    W_dec, b_dec = randn(F, d, seed=4), randn(d, seed=5)
    grads = {}
    for dev in ("cpu", "cuda"):
        ps = [t.detach().clone().to(dev).requires_grad_() for t in (x, W, b, W_dec, b_dec)]
        v, i = ops.topk_encode(ps[0], ps[1], ps[2], k)
        out = ops.sparse_decode(v, i, ps[3], ps[4])
        (out * randn(B, d, seed=6).to(dev)).sum().backward()
        grads[dev] = [p.grad.cpu() for p in ps]
    for g_cpu, g_gpu in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(g_gpu, g_cpu, atol=1e-10, rtol=1e-10)


def test_run_to_run_deterministic_float32():
    x, W, b = (t.float().cuda() for t in (randn(1024, 64, seed=1), randn(16384, 64, seed=2), randn(16384, seed=3)))
    W_dec = randn(16384, 64, seed=4).float().cuda()
    runs = []
    for _ in range(2):
        ps = [t.clone().requires_grad_() for t in (x, W, b, W_dec)]
        v, i = ops.topk_encode(ps[0], ps[1], ps[2], 32)
        out = ops.sparse_decode(v, i, ps[3], torch.zeros(64, device="cuda"))
        out.square().sum().backward()
        runs.append([v, i, out] + [p.grad for p in ps])
    for a, b_ in zip(*runs):
        assert torch.equal(a, b_)


def test_cosine_topk_matches_cpu():
    A, B = randn(3000, 32, seed=1), randn(2500, 32, seed=2)
    for k in (1, 20):
        got = ops.cosine_topk(A.cuda(), B.cuda(), k)
        want = ops.cosine_topk(A, B, k)
        for g, w in zip(got, want):
            if g.dtype == torch.int64:
                assert torch.equal(g.cpu(), w)
            else:
                torch.testing.assert_close(g.cpu(), w, atol=1e-12, rtol=0)


def test_out_of_range_index_is_an_error():
    """Checked on the device (a host check would sync every call): the kernel traps. Run in a
    subprocess, since a trap ends the CUDA context."""
    import subprocess
    import sys
    code = ("import torch, saefast.ops as o\n"
            "v = torch.ones(2, 3, device='cuda'); i = torch.full((2, 3), 99, device='cuda')\n"
            "o.sparse_decode(v, i, torch.ones(10, 4, device='cuda'), torch.zeros(4, device='cuda'))\n"
            "torch.cuda.synchronize()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0


def test_training_on_cuda_matches_cpu():
    """The sync-free GPU trainer reaches the CPU trainer's reconstruction (float32, strict)."""
    from saefast.config import SAEConfig, TrainConfig
    from saefast.train.trainer import train_saes
    x = (randn(6000, 32, seed=1) @ randn(32, 32, seed=2)).float()
    cfg = TrainConfig(epochs=2, batch_size=128, dead_window=500)
    cpu = train_saes(x[:5000], x[5000:], SAEConfig(256, 8), cfg, [1, 2])
    gpu = train_saes(x[:5000], x[5000:], SAEConfig(256, 8), cfg, [1, 2], device="cuda")
    for c, g in zip(cpu, gpu):
        assert g.sae.W_dec.is_cuda
        assert g.metrics["held_out"]["fvu"] == pytest.approx(c.metrics["held_out"]["fvu"], rel=0.05)
        assert [e["step"] for e in g.history] == [e["step"] for e in c.history]


@pytest.mark.parametrize("matmul", ["float32", "bfloat16"])
def test_cuda_graph_steps_match_eager_steps(matmul):
    """Each seed's step replayed from a captured graph (saefast/cuda_graphs.py) gives the eager
    step's weights and losses, with AuxK switching on mid-run (a second graph per seed), and
    the same bits run to run."""
    from saefast.config import SAEConfig, TrainConfig
    from saefast.train.trainer import train_saes
    x = (randn(6000, 32, seed=1) @ randn(32, 32, seed=2)).float()
    cfg = TrainConfig(epochs=2, batch_size=128, dead_window=300, matmul=matmul)

    def run(graphs):
        return train_saes(x[:5000], x[5000:], SAEConfig(256, 8), cfg, [1, 2], device="cuda",
                          log_every=5, cuda_graphs=graphs)

    eager, graphed, again = run(False), run(True), run(True)
    stats = graphed[0].metrics["cuda_graphs"]
    assert stats["off_because"] is None and stats["replays"] > stats["eager_steps"]
    assert stats["captured"] >= 3  # both seeds' plain steps, and at least one AuxK step
    for e, g, a in zip(eager, graphed, again):
        torch.testing.assert_close(g.sae.W_dec, e.sae.W_dec, atol=1e-4, rtol=1e-4)
        assert [h["loss"] for h in g.history] == pytest.approx([h["loss"] for h in e.history], rel=1e-3)
        assert all(torch.equal(p, q) for p, q in zip(g.sae.parameters(), a.sae.parameters()))


def test_dense_path_of_large_k_matches_cpu():
    """k = 512 runs decode and both backwards as GEMMs on dense codes; repeated indices in a
    row (allowed by sparse_decode) add up, as on the CPU."""
    B, d, F, k = 300, 16, 2000, 512
    x, W, b = randn(B, d, seed=1), randn(F, d, seed=2), randn(F, seed=3)
    W_dec, b_dec = randn(F, d, seed=4), randn(d, seed=5)
    values = randn(B, k, seed=6).abs()
    indices = torch.randint(0, 40, (B, k), generator=torch.Generator().manual_seed(7))  # repeats
    grads = {}
    for dev in ("cpu", "cuda"):
        ps = [t.detach().clone().to(dev).requires_grad_() for t in (x, W, b, W_dec, b_dec, values)]
        v, i = ops.topk_encode(ps[0], ps[1], ps[2], k)
        out = ops.sparse_decode(v, i, ps[3], ps[4]) + ops.sparse_decode(ps[5], indices.to(dev), ps[3], ps[4])
        (out * randn(B, d, seed=8).to(dev)).sum().backward()
        grads[dev] = [out.detach().cpu()] + [p.grad.cpu() for p in ps]
    for g_cpu, g_gpu in zip(grads["cpu"], grads["cuda"]):
        torch.testing.assert_close(g_gpu, g_cpu, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("k", [16, 256])  # 256: the dense tensor-core path of 16-bit inputs
def test_16bit_decode_and_backwards_match_cpu(dtype, k):
    """Both devices accumulate in float32 and round once, so they agree to about an ulp of
    the 16-bit dtype. The same values and indices on both (the CPU's top-k): a near-tie
    ranked differently by the two GEMMs would change what is compared."""
    B, d, F = 300, 32, 2048
    x, W, b = randn(B, d, seed=1, dtype=dtype), randn(F, d, seed=2, dtype=dtype), randn(F, seed=3, dtype=dtype)
    W_dec, b_dec = randn(F, d, seed=4, dtype=dtype), randn(d, seed=5, dtype=dtype)
    v, i = ops.topk_encode(x, W, b, k)
    v_g, i_g = ops.topk_encode(x.cuda(), W.cuda(), b.cuda(), k)
    dense = torch.relu(x.double() @ W.double().T + b.double())
    ulp = 2**-7 if dtype == torch.bfloat16 else 2**-10
    torch.testing.assert_close(v_g.double().cpu(), v.double(), atol=1e-3, rtol=ulp)
    torch.testing.assert_close(dense.gather(1, i_g.cpu()), v_g.double().cpu(), atol=1e-3, rtol=ulp)
    g_v, g_out = randn(B, k, seed=6, dtype=dtype), randn(B, d, seed=7, dtype=dtype)
    mask = [True, True, True]
    calls = [lambda *t: torch.ops.saefast.topk_encode_backward(t[0], t[1], t[2], t[3], t[4], mask),
             lambda *t: [torch.ops.saefast.sparse_decode(t[3], t[4], t[5], t[6])],
             lambda *t: torch.ops.saefast.sparse_decode_backward(t[7], t[3], t[4], t[5], mask)]
    args = (g_v, x, W, v, i, W_dec, b_dec, g_out)
    for call in calls:
        for got, want in zip(call(*(t.cuda() for t in args)), call(*args)):
            assert got.dtype == want.dtype == dtype
            torch.testing.assert_close(got.cpu().double(), want.double(), atol=1e-3, rtol=ulp)


@pytest.mark.parametrize("tf32", [False, True])
def test_matching_with_gpu_candidates_is_certified_and_optimal(tf32):
    """Candidates from the CUDA cosine_topk (TF32 with a widened margin when allowed): the same
    certified optimum as CPU candidates."""
    from saefast.match import match_decoders
    a, b = randn(3000, 32, seed=1).float(), randn(3000, 32, seed=2).float()
    a[:1500] = b[:1500] + 0.3 * randn(1500, 32, seed=3).float()  # half the features recur
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        gpu = match_decoders(a, b, solver="native", device="cuda")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    cpu = match_decoders(a, b, solver="native", device="cpu")
    assert gpu.certified and cpu.certified and gpu.info["tf32"] == tf32
    assert gpu.cosines.sum() == pytest.approx(cpu.cosines.sum(), abs=1e-9)
