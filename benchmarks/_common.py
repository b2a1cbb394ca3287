"""Shared helpers of the benchmark scripts: interleaved timing, peak memory, machine, output.

The machine may be shared, so absolute times are noisy: every script times the contenders
of one comparison in the same run, interleaved (one call of each, round after round), and
reports medians and ratios of medians. Peak memory is measured in a fresh process per
contender (its peak resident set), so one contender's garbage does not count for another.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import saefast

    info = saefast.build_info()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "saefast_native": bool(info.get("native")),
        "native_kernels": info.get("cpu_kernels", []),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict:
    """{name: {"median_s", "min_s", "times_s"}}: each round calls every fn once, in turn."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts}
            for name, ts in times.items()}


def rss_mb() -> float:
    """Current resident set of this process, MB (Linux; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


def reset_peak_rss() -> None:
    """Restarts the peak-resident-set count from the current resident set (Linux >= 4.0;
    elsewhere a no-op, and peaks then include what happened before). Free heap memory is
    handed back to the system first (glibc malloc_trim), so that reusing it counts too."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident set of this process so far, MB: VmHWM on Linux (ru_maxrss there keeps
    the parent's peak across fork + exec, so a fresh process would inherit it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure_in_subprocess(script: Path, *args: str, timeout: float = 600) -> dict:
    """Runs `python script *args` in a fresh process; its last stdout line is a JSON dict."""
    env = dict(os.environ)
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_json(path: str | None, payload: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """A rich table when rich is installed, else plain aligned text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(columns)]
        for line in [columns, *rows]:
            print("  ".join(str(v).rjust(w) for v, w in zip(line, widths)))
        return
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*map(str, row))
    Console(width=120).print(table)


def run_sections(args, sections: dict) -> None:
    """Run the sections named in args.sections, print each table, write the JSON."""
    payload = {"machine": machine(), "sections": {}}
    for name in args.sections.split(","):
        section = sections[name](args)
        print_table(section["title"], section["columns"], section["rows"])
        payload["sections"][name] = section["results"]
    payload["machine_after"] = {"load_average": machine()["load_average"]}
    write_json(args.json, payload)
