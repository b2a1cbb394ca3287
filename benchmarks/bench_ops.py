"""The saefast ops one at a time, against naive PyTorch and a sparsify-style sparse backward.

    python benchmarks/bench_ops.py [--rounds 5] [--sections encode_fwd,encode,decode,cosine] [--json out.json]

encode_fwd  topk_encode forward alone against its GEMM: torch.mm x @ W_enc.T (the yardstick:
         the fused op's floor), naive (addmm, relu, torch.topk) and saefast.ops.topk_encode, at
         the training shape (384, 4096, 32, 256) and an evaluation batch (384, 4096, 32, 8192)

encode   topk_encode forward + backward into x, W_enc, b_enc (grad of the values = ones):
         naive (x @ W_enc.T, relu, torch.topk, autograd), sparsify-style (autograd.Function
         with an embedding_bag / index_add_ backward), saefast.ops.topk_encode
decode   sparse_decode forward + backward into values, W_dec, b_dec: naive (dense scatter
         + GEMM), sparsify-style (embedding_bag with per-sample weights), saefast.ops
cosine   cosine_topk (rows and columns) on two 4,096 x 384 dictionaries, k = 20 (the
         matching's candidate pass) and two 16,384 x 768 ones, k = 32, against one float32
         torch.mm of the same matrices (the yardstick: the goal is at most its time) and the
         pure-PyTorch reference (blockwise GEMM + torch.topk, one round)
Shapes for encode/decode (d_model, n_features, k, batch): (768, 16384, 32, 2048) and
(384, 4096, 8, 4096). Medians of interleaved rounds; peak memory is that of a fresh process
(peak resident set minus the resident set once the inputs exist).
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
from saefast.ops import reference  # noqa: E402

from _common import (  # noqa: E402
    measure_in_subprocess,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    run_sections,
    time_interleaved,
)
from bench_train import SHAPES, SparseBackwardTopK, make_params  # noqa: E402

METHODS = ["naive", "sparsify-style", "saefast"]
COSINE_SHAPES = [(4096, 4096, 384, 20), (16384, 16384, 768, 32)]  # n, m, d, k
ENCODE_FWD_SHAPES = [(384, 4096, 32, 256), (384, 4096, 32, 8192)]  # d, F, k, B
ENCODE_FWD_METHODS = ["torch.mm (yardstick)", "naive", "saefast"]


def _clear(params):
    for p in params:
        p.grad = None


def encode_case(method: str, d: int, F: int, k: int, B: int):
    W_enc, b_enc, _, _ = make_params(d, F)
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(1)).requires_grad_()  # [B, d]
    params = [x, W_enc, b_enc]

    def run():
        _clear(params)
        if method == "naive":
            values, _ = torch.relu(x @ W_enc.T + b_enc).topk(k, dim=1)  # [B, k]
        elif method == "sparsify-style":
            values, _ = SparseBackwardTopK.apply(x, W_enc, b_enc, k)
        else:
            values, _ = saefast.ops.topk_encode(x, W_enc, b_enc, k)
        values.sum().backward()

    return run


def encode_fwd_case(method: str, d: int, F: int, k: int, B: int):
    W_enc, b_enc, _, _ = make_params(d, F)
    W_enc, b_enc = W_enc.detach(), b_enc.detach()
    x = torch.randn(B, d, generator=torch.Generator().manual_seed(1))  # [B, d]
    fns = {"torch.mm (yardstick)": lambda: x @ W_enc.T,
           "naive": lambda: torch.relu(torch.addmm(b_enc, x, W_enc.T)).topk(k, dim=1),
           "saefast": lambda: saefast.ops.topk_encode(x, W_enc, b_enc, k)}
    return fns[method]


def decode_case(method: str, d: int, F: int, k: int, B: int):
    _, _, W_dec, b_dec = make_params(d, F)
    gen = torch.Generator().manual_seed(2)
    values = torch.rand(B, k, generator=gen).requires_grad_()  # [B, k]
    indices = torch.stack([torch.randperm(F, generator=gen)[:k] for _ in range(B)])  # [B, k]
    params = [values, W_dec, b_dec]

    def run():
        _clear(params)
        if method == "naive":
            codes = torch.zeros(B, F).scatter(1, indices, values)  # [B, F]
            out = codes @ W_dec + b_dec
        elif method == "sparsify-style":
            out = nnf.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum") + b_dec
        else:
            out = saefast.ops.sparse_decode(values, indices, W_dec, b_dec)
        out.sum().backward()

    return run


def cosine_case(method: str, n: int, m: int, d: int, k: int):
    gen = torch.Generator().manual_seed(3)
    A, B = torch.randn(n, d, generator=gen), torch.randn(m, d, generator=gen)  # [n, d], [m, d]
    fns = {"torch.mm (yardstick)": lambda: A @ B.T,
           "reference (PyTorch)": lambda: reference.cosine_topk(A, B, k),
           "saefast": lambda: saefast.ops.cosine_topk(A, B, k)}
    return fns[method]


CASES = {"encode": encode_case, "decode": decode_case, "encode_fwd": encode_fwd_case}


def _memory(section: str, method: str, shape=None) -> dict:
    return measure_in_subprocess(Path(__file__), "--child", section, method,
                                 ",".join(map(str, shape or ())))


def op_section(name: str, args) -> dict:
    results, rows = [], []
    for shape in SHAPES:
        d, F, k, B = shape
        fns = {m: CASES[name](m, d, F, k, B) for m in METHODS}
        times = time_interleaved(fns, rounds=args.rounds)
        del fns
        naive_s, sparsify_s = times["naive"]["median_s"], times["sparsify-style"]["median_s"]
        for method in METHODS:
            t = times[method]["median_s"]
            mem = _memory(name, method, shape)
            results.append({"shape": dict(d=d, F=F, k=k, B=B), "method": method, "s": t,
                            "tokens_per_s": B / t, "vs_naive": naive_s / t,
                            "vs_sparsify": sparsify_s / t, "memory": mem,
                            "times_s": times[method]["times_s"]})
            rows.append([f"{d}/{F}/{k}/{B}", method, f"{t * 1e3:.1f}", f"{B / t:,.0f}",
                         f"{naive_s / t:.2f}x", f"{sparsify_s / t:.2f}x", f"{mem['peak_mb']:,.0f}"])
    return {"title": f"{name} forward + backward, median of {args.rounds} interleaved rounds",
            "columns": ["d/F/k/B", "method", "ms", "tokens/s", "vs naive", "vs sparsify", "peak MB"],
            "rows": rows, "results": results}


def encode_fwd_section(args) -> dict:
    results, rows = [], []
    for shape in ENCODE_FWD_SHAPES:
        d, F, k, B = shape
        times = time_interleaved({m: encode_fwd_case(m, d, F, k, B) for m in ENCODE_FWD_METHODS},
                                 rounds=args.rounds)
        mm_s = times["torch.mm (yardstick)"]["median_s"]
        for method in ENCODE_FWD_METHODS:
            t = times[method]["median_s"]
            mem = _memory("encode_fwd", method, shape)
            results.append({"shape": dict(d=d, F=F, k=k, B=B), "method": method, "s": t,
                            "vs_mm": t / mm_s, "memory": mem, "times_s": times[method]["times_s"]})
            rows.append([f"{d}/{F}/{k}/{B}", method, f"{t * 1e3:.2f}", f"{t / mm_s:.2f}",
                         f"{mem['peak_mb']:,.0f}"])
    return {"title": f"topk_encode forward, median of {args.rounds} interleaved rounds",
            "columns": ["d/F/k/B", "method", "ms", "time / torch.mm", "peak MB"],
            "rows": rows, "results": results}


def cosine_section(args) -> dict:
    results, rows = [], []
    for shape in COSINE_SHAPES:
        n, m, d, k = shape
        fast = {name: cosine_case(name, *shape) for name in ("torch.mm (yardstick)", "saefast")}
        times = time_interleaved(fast, rounds=args.rounds)
        if not args.skip_reference:
            times.update(time_interleaved({"reference (PyTorch)": cosine_case("reference (PyTorch)", *shape)},
                                          rounds=1, warmup=0))
        mm_s = times["torch.mm (yardstick)"]["median_s"]
        for method, t in times.items():
            mem = _memory("cosine", method, shape)
            results.append({"shape": dict(n=n, m=m, d=d, k=k), "method": method, "s": t["median_s"],
                            "vs_mm": t["median_s"] / mm_s, "memory": mem, "times_s": t["times_s"]})
            rows.append([f"{n}/{m}/{d}/{k}", method, f"{t['median_s']:.3f}", f"{t['median_s'] / mm_s:.2f}",
                         f"{mem['peak_mb']:,.0f}"])
    return {"title": f"cosine_topk (rows and columns), median of {args.rounds} rounds",
            "columns": ["n/m/d/k", "method", "s", "time / torch.mm", "peak MB"], "rows": rows,
            "results": results}


SECTIONS = {"encode_fwd": encode_fwd_section, "encode": lambda a: op_section("encode", a),
            "decode": lambda a: op_section("decode", a), "cosine": cosine_section}


def child(section: str, method: str, shape: str) -> None:
    """Fresh-process memory measurement: prints one JSON line."""
    dims = map(int, shape.split(","))
    fn = cosine_case(method, *dims) if section == "cosine" else CASES[section](method, *dims)
    reset_peak_rss()
    before = rss_mb()
    fn()
    peak = peak_rss_mb()
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "peak_mb": peak - before}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    parser.add_argument("--skip-reference", action="store_true", help="cosine: skip the slow PyTorch reference")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", nargs=3, metavar=("SECTION", "METHOD", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    run_sections(args, SECTIONS)


if __name__ == "__main__":
    main()
