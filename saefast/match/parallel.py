"""Independent matchings side by side in threads.

A report matches many pairs, each mostly on one thread: the sparse solve (two thirds of a
16,384-feature pair) and the certificate are serial, and the evidence around them runs torch
on one thread. The native solver, torch's GEMMs and NumPy's large operations release the GIL,
so on W cores W pairs go at once, each on T // W of torch's T threads (T // W = 1 on two
cores: the candidates' GEMM then uses the core its pair has, instead of two pairs' GEMMs
fighting over both). Results come back in the order of the items and equal a serial run's:
each pair is computed the same way, and every output element of the candidates' GEMM is one
thread's dot product whatever the thread count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, TypeVar

MAX_WORKERS = 8  # pairs at once at most (each holds its candidates and certificate rows)

T = TypeVar("T")
R = TypeVar("R")


def workers(n_items: int, threads: int | None = None) -> int:
    """Pairs at once: one per torch thread (`threads`, default torch's), at most MAX_WORKERS
    and at most n_items."""
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return max(1, min(threads, MAX_WORKERS, n_items))


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n while inside (process-wide), then restored (also
    `sweep.threads.torch_threads`, for a pass's training)."""
    import torch

    prev = torch.get_num_threads()
    if n != prev:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != prev:
            torch.set_num_threads(prev)


def map_ordered(fn: Callable[[T], R], items: Sequence[T], *,
                on_done: Callable[[int, int], None] | None = None,
                n_workers: int | None = None) -> list[R]:
    """[fn(item) for item in items], computed `n_workers` at a time (default `workers`).
    on_done(done, total) after each item finishes, in the order they finish. An exception
    in fn is raised here once the items already running have finished."""
    items = list(items)
    n = len(items)
    w = workers(n) if n_workers is None else max(1, min(n_workers, n))
    if w <= 1:
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            if on_done is not None:
                on_done(i + 1, n)
        return out
    import torch

    results: list = [None] * n
    with torch_threads(max(1, torch.get_num_threads() // w)), \
            ThreadPoolExecutor(max_workers=w, thread_name_prefix="saefast-pairs") as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                if on_done is not None:
                    on_done(done, n)
        except BaseException:
            for future in futures:
                future.cancel()  # what has not started does not start
            raise
    return results


_KEY_LOCKS: dict[tuple, threading.Lock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


def computed_once(cache: dict, key: Any, compute: Callable[[], R]) -> R:
    """cache[key], computing it if missing, once: a thread that asks for a key another
    thread is computing waits for that result instead of computing it again (two pairs
    matched side by side both needed the same null draws, a 16K matching each)."""
    if key in cache:
        return cache[key]
    with _KEY_LOCKS_GUARD:
        lock = _KEY_LOCKS.setdefault((id(cache), key), threading.Lock())
    with lock:
        if key not in cache:
            cache[key] = compute()
        return cache[key]
