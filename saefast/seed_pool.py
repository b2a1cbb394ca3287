"""Worker processes that train the seeds of one pass side by side (see `saefast.threads`).

`run_parts` hands each part of a pass (a list of runs differing by seed) to a worker, which
runs `sweep.run_pass_here` on it exactly as the sweep's own process would: it opens the
activation store itself (memory-mapped, or in memory within its share of the budget), so no
activations are pickled, trains, checkpoints under its own seeds' name and writes its run
dirs. Only the outcomes come back, and step progress through a queue, merged here into one
`Events.run_step` so the progress bar shows the slowest part.

The workers are 'spawn'ed (fork after OpenMP has started is unsafe) with torch's intra-op
threads set once, and kept for the rest of the sweep: starting one imports torch (~2 s).
`shutdown` (called by `sweep.execute_runs`, and at exit) stops them.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import queue as queue_lib
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saefast.experiment import RunSpec
    from saefast.sweep import Events, RunOutcome

_pool: ProcessPoolExecutor | None = None
_pool_shape: tuple[int, int] | None = None  # (workers, threads each)
_queue: Any = None  # the parent's end of the progress queue
_worker_queue: Any = None  # in a worker: where its step progress goes
_parent: int | None = None  # in a worker: the sweep's pid


def _init_worker(threads: int, progress) -> None:
    import torch

    global _worker_queue, _parent
    torch.set_num_threads(threads)
    _worker_queue, _parent = progress, os.getppid()


def _pool_for(workers: int, threads: int) -> ProcessPoolExecutor:
    global _pool, _pool_shape, _queue
    if _pool is not None and _pool_shape == (workers, threads):
        return _pool
    shutdown()
    ctx = mp.get_context("spawn")
    _queue = ctx.Queue()
    _pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads, _queue))
    _pool_shape = (workers, threads)
    return _pool


def shutdown() -> None:
    """Stop the workers (they hold no state between passes)."""
    global _pool, _pool_shape, _queue
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
    _pool, _pool_shape, _queue = None, None, None


atexit.register(shutdown)


class _QueueEvents:
    """A worker's Events: step progress goes to the parent, tagged with the part."""

    def __init__(self, part: int):
        self.part = part

    def run_step(self, step: int, total: int, stats: dict) -> None:
        if os.getppid() != _parent:  # the sweep was killed: stop, its checkpoints stay
            os._exit(1)
        _worker_queue.put((self.part, step, total, stats))

    def __getattr__(self, name):  # every other event is the parent's to send
        return lambda *args, **kwargs: None


def _run_part(part: int, runs: list[RunSpec], data: Path, out_dir: Path,
              memory_budget: int | None) -> list[RunOutcome]:
    from saefast import sweep

    return sweep.run_pass_here(runs, data, out_dir, events=_QueueEvents(part),
                               memory_budget=memory_budget)


def merged_stats(latest: dict[int, tuple[int, int, dict]]) -> tuple[int, int, dict]:
    """One progress line from each part's latest (step, total, stats): the slowest part's
    step, means over seeds, every seed's own numbers, the mean rate of the parts."""
    step = min(s for s, _, _ in latest.values())
    total = max(t for _, t, _ in latest.values())
    per_seed: dict = {}
    for _, _, stats in latest.values():
        per_seed.update(stats.get("per_seed") or {})
    rates = [st.get("tokens_per_second", 0.0) for _, _, st in latest.values()]
    n = max(1, len(per_seed))
    return step, total, {
        "loss": sum(v["loss"] for v in per_seed.values()) / n,
        "dead": sum(v["dead"] for v in per_seed.values()) / n,
        "per_seed": per_seed,
        "tokens_per_second": sum(rates) / len(rates)}


def _drain() -> list[tuple[int, int, int, dict]]:
    got = []
    while True:
        try:
            got.append(_queue.get_nowait())
        except queue_lib.Empty:
            return got


def run_parts(parts: list[list[RunSpec]], data: Path, out_dir: Path, *, events: Events,
              memory_budget: int | None, threads: int) -> list[RunOutcome]:
    """Train each part in a worker (len(parts) workers of `threads` threads); the outcomes
    in the order of the parts' runs. Each worker gets an equal share of the memory budget."""
    from saefast import memory

    pool = _pool_for(len(parts), threads)
    device = parts[0][0].config.model.device
    share = (memory_budget or memory.available_bytes(device)) // len(parts)
    _drain()  # nothing of an earlier pass is shown as this one's
    futures = [pool.submit(_run_part, i, part, data, out_dir, share) for i, part in enumerate(parts)]
    latest: dict[int, tuple[int, int, dict]] = {}
    pending = set(futures)
    while pending:
        _, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
        for part, step, total, stats in _drain():
            latest[part] = (step, total, stats)
        if latest:
            events.run_step(*merged_stats(latest))
        if any(f.done() and f.exception() is not None for f in futures):
            break
    return [outcome for f in futures for outcome in f.result()]  # re-raises a worker's error
