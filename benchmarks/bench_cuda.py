"""saefast's CUDA path against PyTorch's own ops on the same GPU, in one run.

    python benchmarks/bench_cuda.py [--sections encode,decode,step,cosine,train,sweep,profile]
                                    [--json out.json] [--budget-s 300]

Sections (shapes from the CUDA issue: B=4096 tokens, d=768, k=32):
  encode   topk_encode forward, and forward+backward, at F = 16,384 and 65,536, against
           dense PyTorch (x @ W_enc.T + b_enc, relu, torch.topk; autograd through it)
  decode   sparse_decode forward+backward at F = 16,384 against a dense decode (codes
           scattered into [B, F], then a GEMM) and against torch's embedding_bag
  step     one training step of one 16,384 x 768 SAE (AuxK on 10 % dead latents, fused Adam,
           unit-norm decoder), saefast's sync-free step against the dense PyTorch step
  cosine   cosine_topk (k=20) at 16,384 and 131,072 features against the pure-PyTorch
           blockwise reference (at 131,072 the reference is timed on 1/16 of the rows and
           scaled, and marked so)
  train    train_saes (what `saefast sweep` runs per pass) on synthetic activations on the
           GPU: 1 seed and 20 seeds x 16,384 features, token-steps/s, and the time 2e9
           token-steps (20 seeds x 100M tokens) would take at that rate
Precisions: fp32 (strict float32 GEMMs), tf32 (TensorFloat-32 GEMMs), bf16 (GEMM inputs in
bfloat16, float32 accumulation; for PyTorch, autocast). Each comparison is timed in one run,
interleaved (one call of each contender per round, CUDA-synchronised), medians of rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as nnf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import saefast  # noqa: E402
from saefast import ops  # noqa: E402
from saefast.ops import reference  # noqa: E402

B, D, K = 4096, 768, 32
PRECISIONS = ["fp32", "tf32", "bf16"]
MATMUL = {"fp32": "float32", "tf32": "tf32", "bf16": "bfloat16"}  # TrainConfig.matmul
DEADLINE = [float("inf")]


def out_of_time() -> bool:
    return time.perf_counter() > DEADLINE[0]


@contextlib.contextmanager
def precision(p: str):
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = p == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def timed(fns: dict, rounds: int = 5, reps: int = 3, warmup: int = 2) -> dict:
    """{name: median seconds per call}, rounds interleaved, each round `reps` calls."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / reps)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cast(p: str, *ts):
    return [t.bfloat16() if p == "bf16" else t for t in ts]


# ---------------------------------------------------------------------------- encode


def dense_encode(x, W, b, k):
    return (x @ W.T + b).relu().topk(k, dim=1)


def section_encode() -> list[dict]:
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    for F in (16384, 65536):
        x = torch.randn(B, D, device="cuda", generator=g)
        W = nnf.normalize(torch.randn(F, D, device="cuda", generator=g), dim=1)
        b = torch.zeros(F, device="cuda")
        grad = torch.randn(B, K, device="cuda", generator=g)
        for p in PRECISIONS:
            if out_of_time():
                return rows
            xs, Ws, bs = cast(p, x, W, b)
            leaves = [t.clone().requires_grad_() for t in (xs, Ws, bs)]

            def fwd_bwd(enc):
                def run():
                    for t in leaves:
                        t.grad = None
                    v, _ = enc(*leaves, K)
                    (v.float() * grad).sum().backward()
                return run

            with precision(p):
                t = timed({"saefast fwd": lambda: ops.topk_encode(xs, Ws, bs, K),
                           "torch fwd": lambda: dense_encode(xs, Ws, bs, K),
                           "saefast fwd+bwd": fwd_bwd(ops.topk_encode),
                           "torch fwd+bwd": fwd_bwd(dense_encode)})
            rows.append({"F": F, "precision": p, **{f"{n} ms": v * 1e3 for n, v in t.items()},
                         "fwd speedup": t["torch fwd"] / t["saefast fwd"],
                         "fwd+bwd speedup": t["torch fwd+bwd"] / t["saefast fwd+bwd"]})
            del leaves
    return rows


# ---------------------------------------------------------------------------- decode


def section_decode() -> list[dict]:
    """k = 32 (the main decode: gathers) and k = 512 (AuxK's: GEMMs on dense codes where
    tensor cores may be used, see csrc/cuda/glue.h use_dense)."""
    F = 16384
    g = torch.Generator(device="cuda").manual_seed(1)
    W_dec = nnf.normalize(torch.randn(F, D, device="cuda", generator=g), dim=1)
    b_dec = torch.zeros(D, device="cuda")
    grad = torch.randn(B, D, device="cuda", generator=g)
    rows = []
    for k in (K, 512):
        values = torch.rand(B, k, device="cuda", generator=g)
        indices = torch.stack([torch.randperm(F, device="cuda", generator=g)[:k] for _ in range(B)])
        for p in PRECISIONS:
            if out_of_time():
                return rows
            vs, Wd, bd = cast(p, values, W_dec, b_dec)
            leaves = [t.clone().requires_grad_() for t in (vs, Wd, bd)]

            def dense(v, i, W, b):
                z = torch.zeros(v.shape[0], W.shape[0], device="cuda", dtype=v.dtype).scatter(1, i, v)
                return z @ W + b

            def bag(v, i, W, b):  # no bfloat16 backward in torch
                return nnf.embedding_bag(i, W, per_sample_weights=v, mode="sum") + b

            def run(fn):
                def go():
                    for t in leaves:
                        t.grad = None
                    (fn(leaves[0], indices, leaves[1], leaves[2]).float() * grad).sum().backward()
                return go

            fns = {"saefast": run(ops.sparse_decode), "torch dense": run(dense)}
            if p != "bf16":
                fns["torch embedding_bag"] = run(bag)
            with precision(p):
                t = timed(fns)
            row = {"F": F, "k": k, "precision": p, **{f"{n} ms": v * 1e3 for n, v in t.items()},
                   "speedup vs dense": t["torch dense"] / t["saefast"]}
            if "torch embedding_bag" in t:
                row["speedup vs embedding_bag"] = t["torch embedding_bag"] / t["saefast"]
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- one step


class DenseSAE(torch.nn.Module):
    """The plain PyTorch Top-K SAE step: dense pre-activations, torch.topk, dense decode."""

    def __init__(self, F, seed):
        super().__init__()
        from saefast.train.sae import TopKSAE
        ref = TopKSAE(D, F, K, seed=seed, device="cuda")
        self.W_enc, self.b_enc = ref.W_enc, ref.b_enc
        self.W_dec, self.b_dec = ref.W_dec, ref.b_dec

    def loss(self, x, dead, aux_k):
        pre = (x - self.b_dec) @ self.W_enc.T + self.b_enc  # [B, F]
        v, i = pre.relu().topk(K, dim=1)
        x_hat = torch.zeros_like(pre).scatter(1, i, v) @ self.W_dec + self.b_dec
        loss = (x_hat - x).pow(2).sum(-1).mean()
        if dead is None:
            return loss
        # AuxK as saefast computes it: the dead latents' top aux_k of a second encode
        pre_aux = (x - self.b_dec).detach() @ self.W_enc.T + self.b_enc
        va, ia = pre_aux.masked_fill(~dead, float("-inf")).relu().topk(aux_k, dim=1)
        e_hat = torch.zeros_like(pre_aux).scatter(1, ia, va) @ self.W_dec
        return loss + (e_hat - (x - x_hat).detach()).pow(2).sum(-1).mean() / 32


def step_fns(F: int, p: str, dead_every: int = 10):
    from saefast.train.sae import TopKSAE
    from saefast.train.sync_free import seed_step  # the step train_saes runs (and captures)
    g = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(B, D, device="cuda", generator=g)
    aux_k = 512
    since = torch.zeros(F, dtype=torch.int64, device="cuda")
    if dead_every:
        since[::dead_every] = 10**9  # dead latents: AuxK runs
    dead = since >= 10**6
    aux_on = bool(dead_every)

    sae = TopKSAE(D, F, K, seed=1, device="cuda")
    if p == "bf16":
        sae.matmul_dtype = torch.bfloat16
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)

    def ours():
        opt.zero_grad(set_to_none=True)
        seed_step(sae, x, since.clone(), 10**6, aux_k, 1 / 32, aux_on)
        opt.step()
        sae.normalize_decoder_()

    # the same step replayed from a captured CUDA graph (what train_saes does by default)
    from saefast.train.cuda_graphs import CudaGraphBackend, SeedStepGraphs
    sae_g = TopKSAE(D, F, K, seed=1, device="cuda")
    sae_g.matmul_dtype = sae.matmul_dtype
    opt_g = torch.optim.Adam(sae_g.parameters(), lr=1e-4, fused=True)
    since_g = since.clone()

    def step_g(i, xb, aux):
        return seed_step(sae_g, xb, since_g, 10**6, aux_k, 1 / 32, aux)

    graphs = SeedStepGraphs(lambda i: list(sae_g.parameters()), step_g, B,
                            CudaGraphBackend("cuda"))

    def graphed():
        since_g.copy_(since)  # the same dead latents every call
        opt_g.zero_grad(set_to_none=True)
        graphs.run(0, x, aux_on)
        opt_g.step()
        sae_g.normalize_decoder_()

    graphed.graphs = graphs
    dense = DenseSAE(F, 1)
    opt_d = torch.optim.Adam(dense.parameters(), lr=1e-4, fused=True)

    def theirs():
        opt_d.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=p == "bf16"):
            loss = dense.loss(x, dead if aux_on else None, aux_k)
        loss.backward()
        with torch.no_grad():
            G, W = dense.W_dec.grad, dense.W_dec
            G.addcmul_(W, torch.linalg.vecdot(G, W).unsqueeze(1), value=-1)
        opt_d.step()
        with torch.no_grad():
            W.div_(W.norm(dim=1, keepdim=True).clamp_min(1e-12))

    return ours, graphed, theirs


def section_step() -> list[dict]:
    """With AuxK on (10 % of latents dead, early training) and off (none dead)."""
    rows = []
    for dead_every, label in ((10, "10% dead"), (0, "none dead")):
        for p in PRECISIONS:
            if out_of_time():
                return rows
            ours, graphed, theirs = step_fns(16384, p, dead_every)
            with precision(p):
                t = timed({"saefast": ours, "saefast graphed": graphed, "torch dense": theirs},
                          rounds=5, reps=5, warmup=4)  # graphs capture after 2 warm-up steps
            rows.append({"F": 16384, "AuxK": label, "precision": p,
                         "saefast ms": t["saefast"] * 1e3,
                         "saefast graphed ms": t["saefast graphed"] * 1e3,
                         "torch dense ms": t["torch dense"] * 1e3,
                         "saefast tokens/s": B / t["saefast"],
                         "graphed tokens/s": B / t["saefast graphed"],
                         "torch tokens/s": B / t["torch dense"],
                         "speedup": t["torch dense"] / t["saefast"],
                         "graphed speedup": t["torch dense"] / t["saefast graphed"],
                         "graphs": graphed.graphs.stats.as_dict()})
    return rows


# ---------------------------------------------------------------------------- cosine


def section_cosine() -> list[dict]:
    rows = []
    kk = 20
    for n in (16384, 131072):
        if out_of_time():
            break
        g = torch.Generator(device="cuda").manual_seed(3)
        A = torch.randn(n, D, device="cuda", generator=g)
        Bm = torch.randn(n, D, device="cuda", generator=g)
        row = {"features": n}
        for p in ("fp32", "tf32"):
            with precision(p):
                row[f"saefast {p} s"] = timed({"s": lambda: ops.cosine_topk(A, Bm, kk)},
                                              rounds=1 if n > 20000 else 3, reps=1, warmup=1)["s"]
        part = n if n <= 16384 else n // 16
        with precision("fp32"):
            ref = timed({"r": lambda: reference.cosine_topk(A[:part], Bm, kk)}, rounds=1, reps=1,
                        warmup=0)["r"]
        row["torch reference fp32 s"] = ref * n / part
        row["reference scaled from"] = f"{part} of {n} rows" if part < n else "all rows"
        row["speedup fp32"] = row["torch reference fp32 s"] / row["saefast fp32 s"]
        rows.append(row)
        del A, Bm
        torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------- train


def section_train(device: str = "cuda", features: int = 16384, modes=(True, False),
                  shapes=((1, 200), (20, 100))) -> list[dict]:
    """train_saes on activations held on the GPU, each seed's step replayed from a CUDA graph
    (the default) and eagerly (SAEFAST_CUDA_GRAPHS=0), interleaved per precision."""
    from saefast.config import SAEConfig, TrainConfig
    from saefast.train.trainer import train_saes
    rows = []
    g = torch.Generator(device=device).manual_seed(4)
    mix = torch.randn(D, D, device=device, generator=g) / D**0.5
    for seeds, steps in shapes:
        for p in ("bf16", "tf32", "fp32"):
            if out_of_time():
                return rows
            n = B * steps
            acts = torch.randn(n, D, device=device, generator=g) @ mix
            cfg = TrainConfig(epochs=1, batch_size=B, matmul=MATMUL[p], shuffle_buffer=n,
                              dead_window=B * 10, checkpoint_every=0)
            for graphs in modes:
                # a warm-up call (cuBLAS heuristics, allocator), then the timed one
                train_saes(acts[:B * 5], None, SAEConfig(features, K), cfg, list(range(seeds)),
                           device=device, cuda_graphs=graphs)
                if device == "cuda":
                    torch.cuda.synchronize()
                marks = []  # (seconds, step) at each read-out (every 10 steps: a sync each)
                res = train_saes(acts, None, SAEConfig(features, K), cfg, list(range(seeds)),
                                 device=device, cuda_graphs=graphs, log_every=10,
                                 on_step=lambda st, tot, stats: marks.append((time.perf_counter(), st)))
                secs = res[0].metrics["train_seconds"]
                rate = seeds * n / secs
                # steady state: from step 30 on, after warm-ups and captures (AuxK's included)
                (t0, s0), (t1, s1) = next(m for m in marks if m[1] >= 30), marks[-1]
                steady = seeds * B * (s1 - s0) / (t1 - t0)
                rows.append({"seeds": seeds, "features": features, "precision": p, "steps": steps,
                             "cuda graphs": graphs, "train s": secs, "token-steps/s": rate,
                             "steady token-steps/s": steady,
                             "steady tokens/s per SAE": steady / seeds,
                             "2e9 token-steps at steady rate, min": 2e9 / steady / 60,
                             "graph stats": res[0].metrics.get("cuda_graphs"),
                             "diverged": sum(not hasattr(r, "sae") for r in res)})
                del res
                if device == "cuda":
                    torch.cuda.empty_cache()
            del acts
    return rows


def synthetic_store(path: Path, n: int, d: int = D, seed: int = 5) -> Path:
    """An activation store of n Gaussian rows with a decaying spectrum (what a harvest
    writes, without a model: this machine has no model weights and no network)."""
    import numpy as np

    from saefast.data.store import StoreWriter
    gen = np.random.default_rng(seed)
    scales = (1.0 / np.sqrt(np.arange(1, d + 1))).astype(np.float32)
    mix = np.linalg.qr(gen.standard_normal((d, d)))[0].astype(np.float32)
    writer = StoreWriter.open(path, {"hook": "blocks.6.hook_resid_pre", "model": "synthetic",
                                     "corpus": "gaussian"})
    for start in range(0, n, 65_536):
        rows = (gen.standard_normal((min(65_536, n - start), d), dtype=np.float32) * scales) @ mix
        writer.add(rows * 10, n_chunks=1, n_tokens=n)
    writer.flush()
    return path


def section_sweep(seeds: int = 20, features: int = 16384, steps: int = 48, pairs: int = 3,
                  device: str = "cuda", matmul: str = "bfloat16") -> list[dict]:
    """What `saefast sweep --features 16384 --seeds 20` runs after its harvest, on a synthetic
    store of GPT-2 width: one pass of 20 seeds (`passes.run_pass`: the store read window by
    window, training, held-out evaluation, 20 run dirs written), then `pairs` of its 190
    certified matchings with GPU candidates, extrapolated to all 190."""
    import tempfile

    from saefast.match import match_decoders
    from saefast.runs.artifacts import load_sae
    from saefast.sweep import passes
    from saefast.sweep.experiment import Experiment, expand
    from saefast.sweep.plan import token_steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        held_out = 8192
        n = B * steps + held_out
        store = synthetic_store(tmp / "store", n)
        exp = Experiment(base={"model.name": "synthetic", "model.hook": "blocks.6.hook_resid_pre",
                               "model.device": device, "data.tokens": n,
                               "data.held_out": held_out / n,
                               "sae.n_features": features, "sae.k": K, "train.epochs": 1,
                               "train.batch_size": B, "train.matmul": matmul},
                         grid={"train.seed": list(range(seeds))})
        runs = expand(exp)
        t0 = time.perf_counter()
        outcomes = passes.run_pass(runs, store, tmp / "out")
        secs = time.perf_counter() - t0
        done = [o for o in outcomes if o.status == "done"]
        seen = token_steps(runs[0].config) * len(done)
        train_s = done[0].metrics["train_seconds"] if done else float("nan")
        rows.append({"seeds": seeds, "features": features, "precision": matmul,
                     "steps": done[0].metrics["steps"] if done else 0,
                     "pass s (train, eval, write)": secs, "train s": train_s,
                     "token-steps/s, training": seen / train_s,
                     "token-steps/s, whole pass": seen / secs,
                     "cuda graphs": done[0].metrics.get("cuda_graphs") if done else None,
                     "failed": len(outcomes) - len(done)})
        decs = [load_sae(o.path).decoder for o in done[:pairs + 1]]
        times = []
        for a, b in zip(decs, decs[1:]):
            t0 = time.perf_counter()
            m = match_decoders(a, b, solver="native", device=device)
            times.append(time.perf_counter() - t0)
            assert m.certified
        if times:
            per = statistics.median(times)
            n_pairs = seeds * (seeds - 1) // 2
            rows.append({"matching": f"{features} x {features}, GPU candidates, certified",
                         "pairs timed": len(times), "s a pair (median)": per,
                         f"all {n_pairs} pairs, min (extrapolated)": per * n_pairs / 60})
    return rows


def section_profile() -> list[dict]:
    """Where a training step's time goes (bf16, 16,384 features, AuxK on and off): wall time
    a step, GPU kernel time a step (when the two are close, the GPU is the limit; when the
    wall is longer, the host is), and the largest kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    rows = []
    for dead_every, label in ((10, "10% dead"), (0, "none dead")):
        ours, graphed, _ = step_fns(16384, "bf16", dead_every)
        for name, fn in (("eager", ours), ("graphed", graphed)):
            for _ in range(4):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
            unprofiled = (time.perf_counter() - t0) / 20
            t0 = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
            wall = (time.perf_counter() - t0) / 5
            kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
            kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
            gpu = sum(e.self_device_time_total for e in kernels) / 5e3  # ms a step
            rows.append({"AuxK": label, "step": name, "wall ms a step": unprofiled * 1e3,
                         "wall ms a step (profiled)": wall * 1e3, "GPU kernel ms a step": gpu})
            for e in kernels[:14 if name == "eager" else 0]:
                rows.append({"AuxK": label, "kernel": e.key[:80], "calls a step": e.count / 5,
                             "ms a step": e.self_device_time_total / 5e3})
    return rows


SECTIONS = {"encode": section_encode, "decode": section_decode, "step": section_step,
            "cosine": section_cosine, "train": section_train, "sweep": section_sweep,
            "profile": section_profile}


def fmt(v):
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--budget-s", type=float, default=600, help="skip what would start later")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_cuda: needs a CUDA GPU")
    DEADLINE[0] = time.perf_counter() + args.budget_s
    info = saefast.build_info()
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "cuda_kernels": info.get("cuda_kernels"), "sections": {}}
    print(json.dumps({k: results[k] for k in ("gpu", "torch", "cuda_kernels")}), flush=True)
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        try:
            rows = SECTIONS[name]()
        except Exception as exc:  # one failing section must not lose the others
            rows = [{"error": f"{type(exc).__name__}: {exc}"}]
        results["sections"][name] = rows
        print(f"\n## {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
        for row in rows:
            print("  " + "  ".join(f"{k}={fmt(v)}" for k, v in row.items()), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
