"""Streaming (`saefast sweep --stream`, no activation cache) against the cached path.

    python benchmarks/bench_stream.py [--tokens 250000,1000000] [--features 1024] [--k 32]
                                      [--seeds 2] [--json out.json]

For each token budget, the same sweep (MiniLM, python-code, blocks.0.hook_resid_pre, 1 epoch)
runs twice in fresh processes: with the disk cache (cold: harvest, then train from it) and
with --stream. Reported: wall time, the peak resident set of the process, and the bytes
the activation cache takes on disk. The stream's memory should not grow with the budget
(one shuffle window of activations at a time); the cache's disk use grows linearly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_sections  # noqa: E402

# runs the CLI in this process and reports its own peak resident set (VmHWM) at exit
_RUNNER = """
import json, sys
from saefast.cli.main import main
rc = main(sys.argv[1:])
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]
print(json.dumps({'rc': rc, 'peak_rss_mb': int(hwm[0].split()[1]) / 1024 if hwm else None}))
"""


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def one(args: argparse.Namespace, tokens: int, stream: bool, work: Path) -> dict:
    tag = f"{'stream' if stream else 'cache'}-{tokens}"
    cmd = [sys.executable, "-c", _RUNNER, "sweep", "--model", "minilm", "--corpus", "python-code",
           "--hook", "blocks.0.hook_resid_pre", "--tokens", str(tokens), "--epochs", "1",
           "--features", str(args.features), "--k", str(args.k), "--seeds", str(args.seeds),
           "--out", str(work / f"out-{tag}"), "--cache-dir", str(work / f"cache-{tag}")]
    if stream:
        cmd.append("--stream")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{tag} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cache = work / f"cache-{tag}" / "activations"
    out = {"seconds": seconds, "peak_rss_mb": result["peak_rss_mb"], "cache_bytes": _disk_bytes(cache)}
    shutil.rmtree(work / f"cache-{tag}", ignore_errors=True)
    return out


def stream_section(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="saefast-bench-stream-"))
    results: dict[str, dict] = {}
    try:
        for tokens in args.tokens:
            for stream in (False, True):
                results[f"{'stream' if stream else 'cache'} {tokens:,}"] = one(args, tokens, stream, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [[name, f"{r['seconds']:.1f} s", f"{r['peak_rss_mb']:,.0f} MB",
             f"{r['cache_bytes'] / 2**20:,.0f} MB"] for name, r in results.items()]
    return {
        "title": f"sweep --stream vs the disk cache ({args.seeds} seeds x {args.features} features, "
                 f"k={args.k}, MiniLM L0, python-code, 1 epoch)",
        "columns": ["path, tokens", "time", "peak RSS", "activation cache on disk"],
        "rows": rows,
        "results": {"runs": results, "settings": {**vars(args), "tokens": list(args.tokens)}},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="250000,1000000",
                        type=lambda s: [int(float(v)) for v in s.split(",")])
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.set_defaults(sections="stream")  # one section, run like bench_train's
    run_sections(parser.parse_args(argv), {"stream": stream_section})


if __name__ == "__main__":
    main()
