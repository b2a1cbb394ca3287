"""Matching two dictionaries: the dense GEMM alone, SciPy, lapjv, lap and saefast, same inputs.

    python benchmarks/bench_match.py [--sizes 4096,8192,16384] [--dims 384,768]
                                     [--kinds structured,random] [--methods gemm,scipy,lapjv,lap,saefast]
                                     [--max-dense 16384] [--json out.json]
    python benchmarks/bench_match.py --sizes 131072 --dims 768 --kinds structured --methods saefast

Inputs (n x d float32, generated blockwise from a fixed seed, so every contender sees the same
matrices): "random" = two Gaussian dictionaries (the hardest to certify: matched cosines are
small and close together); "structured" = a third of B's rows are A's rows plus 10% noise, at
random positions, the rest random (like two SAE seeds sharing a third of their features).

Contenders, each in a fresh process (its peak resident set minus the resident set once the
inputs exist is "peak MB"):
  gemm     the dense float32 cosine GEMM alone (normalised rows, a @ b.T): the yardstick
  scipy    GEMM + upcast to float64 + scipy.optimize.linear_sum_assignment(maximize=True)
  lapjv    GEMM + upcast + lapjv.lapjv(-cos, force_doubles=True)  (exact only in float64)
  lap      GEMM + upcast + lap.lapjv(-cos)
  saefast  saefast.match_decoders(a, b, solver="native"): cosine_topk candidates + sparse
           JV + certificate (and the rows the certificate recomputes); reports certified
Dense contenders are skipped above --max-dense (the float64 matrix alone is 8 n^2 bytes).
Totals: dense solvers maximise the float32 GEMM values, saefast the float64 products of the
same float32 unit rows; the totals agree to ~1e-7 relative (the values differ by that much).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    machine,
    measure_in_subprocess,
    peak_rss_mb,
    print_table,
    reset_peak_rss,
    rss_mb,
    write_json,
)

METHODS = ["gemm", "scipy", "lapjv", "lap", "saefast"]
BLOCK = 8192  # rows generated at a time


def make_inputs(n: int, d: int, kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two [n, d] float32 dictionaries (see the module docstring), generated blockwise."""
    g = torch.Generator().manual_seed(seed)
    a = torch.empty(n, d)
    b = torch.empty(n, d)
    for s in range(0, n, BLOCK):
        a[s:s + BLOCK] = torch.randn(min(BLOCK, n - s), d, generator=g)
        b[s:s + BLOCK] = torch.randn(min(BLOCK, n - s), d, generator=g)
    if kind == "structured":
        shared = n // 3
        where = torch.randperm(n, generator=g)[:shared]  # B's rows that copy A's first third
        for s in range(0, shared, BLOCK):
            e = min(shared, s + BLOCK)
            b[where[s:e]] = a[s:e] + 0.1 * torch.randn(e - s, d, generator=g)
    elif kind != "random":
        raise ValueError(f"unknown kind {kind!r}")
    return a, b


def _dense(a: torch.Tensor, b: torch.Tensor, method: str) -> tuple[float, bool]:
    au = torch.nn.functional.normalize(a, dim=1)
    bu = torch.nn.functional.normalize(b, dim=1)
    cos = (au @ bu.T).numpy()  # [n, n] float32
    if method == "gemm":
        return float("nan"), True
    cos64 = cos.astype(np.float64)
    del cos
    if method == "scipy":
        from scipy.optimize import linear_sum_assignment

        r, c = linear_sum_assignment(cos64, maximize=True)
        return float(cos64[r, c].sum()), True
    np.negative(cos64, out=cos64)
    if method == "lapjv":
        import lapjv

        x = lapjv.lapjv(cos64, force_doubles=True)[0]
    elif method == "lap":
        import lap

        x = lap.lapjv(cos64)[1]
    else:
        raise ValueError(method)
    return float(-cos64[np.arange(len(x)), x].sum()), True


def worker(n: int, d: int, kind: str, method: str) -> dict:
    torch.manual_seed(0)
    a, b = make_inputs(n, d, kind)
    import saefast.match  # noqa: F401  (imports and loads the extension outside the timing)

    if method == "saefast":
        saefast.match.match_decoders(a[:64], b[:64])  # warm the native ops
    base = rss_mb()
    reset_peak_rss()
    t0 = time.perf_counter()
    extra = {}
    if method == "saefast":
        m = saefast.match.match_decoders(a, b, solver="native")
        total, certified = m.total, m.certified
        extra = {"timings": m.timings, "k": m.info.get("k"), "edges": m.info.get("edges"),
                 "rounds": m.info.get("rounds"), "rows_recomputed": m.info.get("rows_recomputed"),
                 "gap_bound": m.info.get("gap_bound")}
    else:
        total, certified = _dense(a, b, method)
    seconds = time.perf_counter() - t0
    return {"n": n, "d": d, "kind": kind, "method": method, "seconds": seconds, "total": total,
            "certified": certified, "peak_mb": peak_rss_mb() - base, **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="4096,8192,16384")
    p.add_argument("--dims", default="384,768")
    p.add_argument("--kinds", default="structured,random")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--max-dense", type=int, default=16384, help="skip dense solvers above this n")
    p.add_argument("--json", default=None)
    p.add_argument("--worker", nargs=4, metavar=("N", "D", "KIND", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        n, d, kind, method = args.worker
        print(json.dumps(worker(int(n), int(d), kind, method)))
        return
    methods = args.methods.split(",")
    results, rows = [], []
    for n in map(int, args.sizes.split(",")):
        for d in map(int, args.dims.split(",")):
            for kind in args.kinds.split(","):
                got = {}
                for method in methods:
                    if method in ("scipy", "lapjv", "lap") and n > args.max_dense:
                        continue
                    got[method] = r = measure_in_subprocess(
                        Path(__file__), "--worker", str(n), str(d), kind, method, timeout=3600)
                    results.append(r)
                    print(json.dumps(r), flush=True)
                gemm = got.get("gemm", {}).get("seconds")
                ref = got.get("scipy", {}).get("total")
                for method, r in got.items():
                    ratio = f"{r['seconds'] / gemm:.2f}" if gemm else "-"
                    vs_lapjv = (f"{got['lapjv']['seconds'] / r['seconds']:.1f}x"
                                if "lapjv" in got else "-")
                    agree = (f"{abs(r['total'] - ref) / abs(ref):.0e}"
                             if ref is not None and method != "gemm" else "-")
                    rows.append([f"{n} x {n}, d {d}, {kind}", method, f"{r['seconds']:.2f}",
                                 ratio, vs_lapjv, agree, f"{r['peak_mb']:.0f}",
                                 str(r["certified"]) if method != "gemm" else "-"])
    print_table("Matching (seconds; x gemm = time / dense GEMM; lapjv / time; rel. total vs SciPy)",
                ["inputs", "method", "s", "x gemm", "lapjv/s", "vs scipy", "peak MB", "certified"],
                rows)
    write_json(args.json, {"machine": machine(), "results": results})


if __name__ == "__main__":
    main()
