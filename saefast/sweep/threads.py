"""How many CPU threads a sweep uses, and where: inside each op, or across the seeds of a pass.

One training step of a small dictionary (n_features x d_model up to SMALL_DICTIONARY, e.g.
128-2048 features at d = 384) is a few hundred microseconds of work split over a dozen ops.
Splitting each op over threads gains little, and on a machine busy with other work every
parallel region waits for a core that another process holds (OpenMP spin-waits), so a sweep
slows 10-20x instead of 2x. The seeds of a pass are independent, so such passes run their
seeds in worker processes instead (`seed_pool`), each with `threads // workers` intra-op
threads (1 on a 2-core laptop); a pass of one seed, or one too short to pay for starting the
workers, runs in the sweep's process on one thread. Large dictionaries, GPUs and streamed passes (data.cache false: the model
runs in the sweep's process) keep intra-op threads in one process.

The thread count: `saefast sweep --threads N`, else $SAEFAST_THREADS, else torch's intra-op
thread count (the cores, or $OMP_NUM_THREADS). Result bits do not depend on any of this:
the native kernels tile by shape only, and a seed's weights are the same alone, beside
others, in a worker or not, with 1 or 2 threads (tests/test_threads.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

from saefast.errors import ConfigError
from saefast.match.parallel import torch_threads  # noqa: F401  (passes and tests call it here)

ENV = "SAEFAST_THREADS"
# "off": every pass trains in the sweep's process with the whole thread budget inside each op
# (how sweeps ran before issue 13; benchmarks/bench_busy.py compares the two)
WORKERS_ENV = "SAEFAST_SEED_WORKERS"
# n_features x d_model at or below which a pass runs its seeds in parallel processes instead
# of threads inside each op. benchmarks/bench_busy.py --sections pass (2-core AMD EPYC): a
# pass of 5 seeds on 2 workers of 1 thread against one process of 2 threads is 1.41-1.82x
# faster at 128 x 384 and 1.34x at 512 x 384 (idle machine; beside other work the gap grows).
# Measured up to 512 x 384; 2048 x 384 is an extrapolation, not a measurement.
SMALL_DICTIONARY = 2048 * 384
# A pass with less work than this (multiply-adds, ~2 x batch x F x d a step and seed) trains
# in the sweep's process on one thread: starting the workers (importing torch, ~2 s) would
# cost more than it saves (~1e10 is ~1 s of one core).
MIN_PARALLEL_WORK = 10**10

T = TypeVar("T")


def configured(threads: int | None = None) -> int:
    """The sweep's thread budget: `threads`, else $SAEFAST_THREADS, else torch's."""
    if threads is None and os.environ.get(ENV):
        text = os.environ[ENV]
        try:
            threads = int(text)
        except ValueError:
            raise ConfigError(f"{ENV} must be a whole number of threads, got {text!r}") from None
    if threads is None:
        import torch

        return torch.get_num_threads()
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return threads


@dataclass(frozen=True)
class PassPlan:
    workers: int  # processes the seeds are split over (1: the sweep's own process)
    threads: int  # intra-op threads of each

    @property
    def parallel_seeds(self) -> bool:
        return self.workers > 1


def plan_pass(n_seeds: int, n_features: int, d_model: int, *, steps: int, batch_size: int,
              device: str = "cpu", cached: bool = True, threads: int | None = None) -> PassPlan:
    """Where the seeds of one pass run (see the module docstring): small dictionaries on
    worker processes when there is work enough for them, else on one thread here; large
    ones, GPUs and streams with the whole thread budget here."""
    threads = configured(threads)
    small = n_features * d_model <= SMALL_DICTIONARY
    if workers_off() or not device.startswith("cpu") or not cached or not small:
        return PassPlan(1, threads)
    work = 2 * batch_size * n_features * d_model * steps * n_seeds
    workers = max(1, min(threads, n_seeds))
    if workers == 1 or work < MIN_PARALLEL_WORK:
        return PassPlan(1, 1)
    return PassPlan(workers, max(1, threads // workers))


def workers_off() -> bool:
    """$SAEFAST_SEED_WORKERS=off: everything in the sweep's process (passes and reports)."""
    return os.environ.get(WORKERS_ENV, "auto").lower() in ("off", "0", "no", "false")


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """items in `parts` contiguous runs whose lengths differ by at most one."""
    parts = max(1, min(parts, len(items)))
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        size = base + (p < extra)
        out.append(list(items[start:start + size]))
        start += size
    return out


def info(threads: int | None = None) -> dict:
    """For `saefast info`: the thread budget and how a small-dictionary pass of 5 seeds uses it."""
    import torch

    n = configured(threads)
    small = plan_pass(5, 128, 384, steps=10**6, batch_size=256, threads=n)
    return {"threads": n, "threads_source": ("--threads" if threads is not None else
                                             ENV if os.environ.get(ENV) else "torch"),
            "torch_intra_op_threads": torch.get_num_threads(),
            "small_dictionary_pass": (f"{small.workers} worker processes x {small.threads} thread(s)"
                                      if small.parallel_seeds else
                                      f"in the sweep's process, {small.threads} thread(s)"),
            "seed_workers": os.environ.get(WORKERS_ENV, "auto"),
            "small_dictionary_max": f"n_features x d_model <= {SMALL_DICTIONARY:,}"}
