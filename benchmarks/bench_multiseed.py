"""Many seeds in one sweep vs the original workflow of one run per seed.

    python benchmarks/bench_multiseed.py [--seeds 8] [--features 4096] [--k 32] [--tokens 20000]
                                         [--epochs 1,2] [--json out.json]

Three ways to get S trained SAEs and their pairwise matching, each timed end to end as a
user runs them (fresh processes, so start-up and imports count):
  one sweep        `saefast sweep --seeds S` from a cold activation cache: one harvest,
                   S SAEs trained together, all pairs matched
  separate, cold   the original study's workflow: S single-seed runs that each harvest their
                   own activations (own cache), then `saefast analyze` on the S run dirs
  separate, warm   the same S runs sharing an already-warm cache, then `saefast analyze`
Plus the training throughput of `saefast sweep --features 16384 --seeds 20` (in-process,
a few steps of 20 SAEs at d=384, batch 256): token-steps per second summed over seeds.

Ratios are of the same run. Batching saves no SAE FLOPs: the gain is one harvest and one
start-up, plus fewer, larger passes over the data. The workflows are timed once per epoch
count (default 1: the 20,000 tokens seen once; and 2): training is the same work in every
workflow, so the more of it per seed, the lower the ratio.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_sections  # noqa: E402


def _saefast(*args: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "saefast.cli.main", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"saefast {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def workflows(args: argparse.Namespace, epochs: int, work: Path) -> dict[str, float]:
    common = ["--model", args.model, "--features", str(args.features), "--k", str(args.k),
              "--tokens", str(args.tokens), "--epochs", str(epochs)]
    seeds = range(1, args.seeds + 1)
    out: dict[str, float] = {}
    out["one sweep"] = _saefast("sweep", *common, "--seeds", str(args.seeds),
                                "--out", str(work / "A"), "--cache-dir", str(work / "cacheA"))
    total = 0.0
    for s in seeds:
        total += _saefast("sweep", *common, "--axis", f"train.seed={s}", "--out", str(work / "B"),
                          "--cache-dir", str(work / f"cacheB{s}"))
        shutil.rmtree(work / f"cacheB{s}")
    out["separate, cold"] = total + _saefast(
        "analyze", *map(str, sorted((work / "B" / "runs").glob("*-s*"))), "--out", str(work / "B" / "report"))
    total = 0.0
    for s in seeds:
        total += _saefast("sweep", *common, "--axis", f"train.seed={s}", "--out", str(work / "C"),
                          "--cache-dir", str(work / "cacheA"))
    out["separate, warm"] = total + _saefast(
        "analyze", *map(str, sorted((work / "C" / "runs").glob("*-s*"))), "--out", str(work / "C" / "report"))
    return out


def throughput_16k_20_seeds(steps: int = 4) -> dict:
    """Token-steps per second of 20 SAEs (F=16384, k=8, d=384, batch 256) trained together,
    timed from the end of the first step to the end of the last (set-up excluded)."""
    import torch

    from saefast.config import SAEConfig, TrainConfig
    from saefast.train.trainer import train_saes

    x = torch.randn(256 * (steps + 1), 384)
    cfg = TrainConfig(epochs=1, batch_size=256, warmup_fraction=0.0, decay_fraction=0.0)
    stamps: list[float] = []
    train_saes(x, None, SAEConfig(16384, 8), cfg, list(range(1, 21)),
               on_step=lambda *_: stamps.append(time.perf_counter()), stop_after_steps=steps)
    seconds = stamps[-1] - stamps[0]
    return {"steps": steps - 1, "seconds": seconds,
            "tokens_per_second": (steps - 1) * 256 * 20 / seconds,
            "seconds_per_step": seconds / (steps - 1)}


def multiseed_section(args: argparse.Namespace) -> dict:
    times: dict[int, dict[str, float]] = {}
    for epochs in args.epochs:
        work = Path(tempfile.mkdtemp(prefix="saefast-bench-"))
        try:
            times[epochs] = workflows(args, epochs, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    thr = throughput_16k_20_seeds()
    rows = []
    for epochs, by_name in times.items():
        base = by_name["one sweep"]
        rows += [[f"{name}, {epochs} epoch{'s' if epochs > 1 else ''}", f"{t:.1f} s",
                  f"{t / base:.2f}x"] for name, t in by_name.items()]
    rows.append(["16384 x 20 seeds training", f"{thr['tokens_per_second']:,.0f} tok/s", "-"])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "title": f"{args.seeds} seeds x {args.features} features (k={args.k}, {args.tokens:,} "
                 f"tokens, {args.model}); time relative to one sweep",
        "columns": ["workflow", "time", "vs one sweep"],
        "rows": rows,
        "results": {"seconds": {str(e): t for e, t in times.items()},
                    "ratios": {str(e): {k: v / t["one sweep"] for k, v in t.items()}
                               for e, t in times.items()},
                    "throughput_16384x20": thr, "peak_child_rss_mb": peak,
                    "settings": vars(args)},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--features", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=20000)
    parser.add_argument("--epochs", default=[1, 2], type=lambda s: [int(v) for v in s.split(",")],
                        help="epoch counts to time the workflows at (default 1,2)")
    parser.add_argument("--model", default="minilm")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--json", help="write the results here")
    parser.set_defaults(sections="multiseed")  # one section, run like bench_train's
    run_sections(parser.parse_args(argv), {"multiseed": multiseed_section})


if __name__ == "__main__":
    main()
