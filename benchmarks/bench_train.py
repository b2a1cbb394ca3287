"""Training-step throughput of a Top-K SAE: naive PyTorch vs sparsify-style vs saefast.

    python benchmarks/bench_train.py [--rounds 5] [--sections single] [--json out.json]

Section `single` (one SAE, the step of saefast's trainer without its extras): x [B, d] ->
topk_encode(x - b_dec) -> sparse_decode -> summed squared error -> backward ->
torch.optim.Adam.step, with the same dense Adam (default settings, or `--fused-adam` for
all) for every contender:
  naive            dense x @ W_enc.T, relu, torch.topk, dense scatter + GEMM decode,
                   autograd through all of it
  sparsify-style   pure PyTorch with a sparse backward (EleutherAI sparsify's approach):
                   an autograd.Function whose backward is embedding_bag + index_add_,
                   decode by embedding_bag with per-sample weights
  saefast          saefast.ops.topk_encode / sparse_decode (native kernels when built)
  floor            not a step: x @ W_enc.T + torch.topk + the Adam step, the work no
                   Top-K step can skip (the "floor" of the ratio)
Shapes (d_model, n_features, k, batch): (768, 16384, 32, 2048) and (384, 4096, 8, 4096).
Times are medians of interleaved rounds (the machine may be shared: compare the ratios of
one run). Peak memory: the peak resident set of a fresh process that builds the model and
optimizer and runs two steps, minus its resident set before the first step.

More sections (e.g. multi-seed training) plug into SECTIONS: a function of the parsed
arguments returning {"title", "columns", "rows", "results"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as nnf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import saefast.ops  # noqa: E402

from _common import (  # noqa: E402
    measure_in_subprocess,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    run_sections,
    time_interleaved,
)

SHAPES = [(768, 16384, 32, 2048), (384, 4096, 8, 4096)]
METHODS = ["naive", "sparsify-style", "saefast"]


# ---------------------------------------------------------------------------- the contenders


def make_params(d: int, F: int, seed: int = 0) -> list[torch.nn.Parameter]:
    """W_enc [F, d], b_enc [F], W_dec [F, d], b_dec [d]: unit decoder rows, encoder = decoder."""
    gen = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(F, d, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    return [torch.nn.Parameter(t) for t in
            (W_dec.clone(), torch.zeros(F), W_dec, torch.zeros(d))]


def naive_forward(x, W_enc, b_enc, W_dec, b_dec, k):
    pre = torch.relu((x - b_dec) @ W_enc.T + b_enc)  # [B, F]
    values, indices = pre.topk(k, dim=1)  # [B, k]
    dense = torch.zeros_like(pre).scatter(1, indices, values)  # [B, F]
    return dense @ W_dec + b_dec  # [B, d]


class SparseBackwardTopK(torch.autograd.Function):
    """Top-K encoder whose backward touches only the kept entries (sparsify's approach)."""

    @staticmethod
    def forward(ctx, x, W_enc, b_enc, k):
        pre = torch.addmm(b_enc, x, W_enc.T).relu_()  # [B, F]
        values, indices = pre.topk(k, dim=1)  # [B, k]
        ctx.save_for_backward(x, W_enc, values, indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x, W_enc, values, indices = ctx.saved_tensors
        g = grad_values * (values > 0)  # [B, k]
        grad_x = nnf.embedding_bag(indices, W_enc, per_sample_weights=g, mode="sum")  # [B, d]
        rows = (g.unsqueeze(2) * x.unsqueeze(1)).flatten(0, 1)  # [B * k, d]
        grad_w = torch.zeros_like(W_enc).index_add_(0, indices.flatten(), rows)  # [F, d]
        grad_b = torch.zeros(W_enc.shape[0], dtype=g.dtype).index_add_(0, indices.flatten(), g.flatten())
        return grad_x, grad_w, grad_b, None


def sparsify_forward(x, W_enc, b_enc, W_dec, b_dec, k):
    values, indices = SparseBackwardTopK.apply(x - b_dec, W_enc, b_enc, k)
    return nnf.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum") + b_dec


def saefast_forward(x, W_enc, b_enc, W_dec, b_dec, k):
    values, indices = saefast.ops.topk_encode(x - b_dec, W_enc, b_enc, k)
    return saefast.ops.sparse_decode(values, indices, W_dec, b_dec)


FORWARDS = {"naive": naive_forward, "sparsify-style": sparsify_forward, "saefast": saefast_forward}


def make_step(method: str, d: int, F: int, k: int, B: int, fused_adam: bool):
    """A closure running one training step of `method` on a fixed batch."""
    params = make_params(d, F)
    opt = torch.optim.Adam(params, lr=1e-4, fused=True if fused_adam else None)
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(1))  # [B, d]
    if method == "floor":
        W_enc = params[0]

        def floor():
            with torch.no_grad():
                (x @ W_enc.T).topk(k, dim=1)
            for p in params:
                p.grad = torch.zeros_like(p) if p.grad is None else p.grad
            opt.step()

        return floor
    forward = FORWARDS[method]

    def step():
        x_hat = forward(x, *params, k)
        loss = (x_hat - x).pow(2).sum(dim=-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


# ---------------------------------------------------------------------------- section: single


def _memory(method: str, shape, fused_adam: bool) -> dict:
    args = ["--child", method, ",".join(map(str, shape))] + (["--fused-adam"] if fused_adam else [])
    return measure_in_subprocess(Path(__file__), *args)


def single_section(args) -> dict:
    results, rows = [], []
    for shape in SHAPES:
        d, F, k, B = shape
        contenders = [*METHODS, "floor"]
        steps = {m: make_step(m, d, F, k, B, args.fused_adam) for m in contenders}
        times = time_interleaved(steps, rounds=args.rounds)
        del steps
        naive_s = times["naive"]["median_s"]
        sparsify_s = times["sparsify-style"]["median_s"]
        for method in contenders:
            t = times[method]["median_s"]
            mem = _memory(method, shape, args.fused_adam) if method in METHODS else None
            entry = {"shape": dict(d=d, F=F, k=k, B=B), "method": method,
                     "step_s": t, "tokens_per_s": B / t, "vs_naive": naive_s / t,
                     "vs_sparsify": sparsify_s / t, "times_s": times[method]["times_s"],
                     "memory": mem}
            results.append(entry)
            rows.append([f"{d}/{F}/{k}/{B}", method, f"{t:.3f}", f"{B / t:,.0f}",
                         f"{naive_s / t:.2f}x", f"{sparsify_s / t:.2f}x",
                         f"{mem['step_peak_mb']:,.0f}" if mem else "-",
                         f"{mem['peak_rss_mb']:,.0f}" if mem else "-"])
    adam = "fused Adam" if args.fused_adam else "Adam"
    return {"title": f"Top-K SAE training step ({adam}), median of {args.rounds} interleaved rounds",
            "columns": ["d/F/k/B", "method", "step s", "tokens/s", "vs naive", "vs sparsify",
                        "step peak MB", "peak RSS MB"],
            "rows": rows, "results": results}


def adam_section(args) -> dict:
    """The optimizer update alone: torch.optim.Adam's default (foreach) vs fused=True, which
    saefast's trainer uses, on W_enc and W_dec of each shape."""
    results, rows = [], []
    for d, F, _k, _B in SHAPES:
        params = [torch.nn.Parameter(torch.randn(F, d)) for _ in range(2)]
        for p in params:
            p.grad = torch.randn_like(p)
        opts = {"foreach": torch.optim.Adam(params, lr=1e-4),
                "fused": torch.optim.Adam(params, lr=1e-4, fused=True)}
        t = time_interleaved({name: opt.step for name, opt in opts.items()}, args.rounds)
        base = t["foreach"]["median_s"]
        for name in opts:
            s = t[name]["median_s"]
            rows.append([f"{d}x{F} x2", name, f"{s * 1e3:.1f}", f"{base / s:.2f}x"])
            results.append({"shape": [F, d], "adam": name, "median_s": s, "vs_foreach": base / s})
    return {"title": f"Adam update over W_enc and W_dec, median of {args.rounds} interleaved rounds",
            "columns": ["params", "Adam", "ms", "vs foreach"], "rows": rows, "results": results}


from bench_multiseed import add_arguments as add_multiseed_arguments  # noqa: E402
from bench_multiseed import multiseed_section  # noqa: E402

# `multiseed`: S seeds in one sweep vs S separate runs (benchmarks/bench_multiseed.py)
SECTIONS = {"single": single_section, "adam": adam_section, "multiseed": multiseed_section}


# ---------------------------------------------------------------------------- entry points


def child(method: str, shape: str, fused_adam: bool) -> None:
    """Fresh-process memory measurement: prints one JSON line."""
    d, F, k, B = map(int, shape.split(","))
    step = make_step(method, d, F, k, B, fused_adam)
    reset_peak_rss()
    before = rss_mb()
    for _ in range(2):
        step()
    peak = peak_rss_mb()
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "step_peak_mb": peak - before}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(fused=True) for every contender")
    parser.add_argument("--json", help="write the results here")
    add_multiseed_arguments(parser)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.fused_adam)
        return
    run_sections(args, SECTIONS)


if __name__ == "__main__":
    main()
