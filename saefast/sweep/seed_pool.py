"""Worker processes that train the seeds of one pass side by side (see `saefast.sweep.threads`):
the sweep's side.

`run_parts` hands each part of a pass (a list of runs differing by seed) to a worker
(`sweep.seed_worker`), which runs `passes.run_pass_here` on it exactly as the sweep's own
process would: it opens the activation store itself (memory-mapped, or in memory within its
share of the budget), so no activations are pickled, trains, checkpoints under its own
seeds' name and writes its run dirs. Only the outcomes come back, and step progress, merged
here into one `Events.run_step` so the progress bar shows the slowest part.

Tasks and messages are pickles over a worker's stdin and stdout (`seed_worker` says why it
is a fresh interpreter). Workers are kept for the rest of the sweep (starting one imports
torch, ~2 s); `shutdown` (called by `sweep.local.LocalExecutor` and each Ray pass task, and
at exit) closes their stdin and they exit. A worker whose sweep died stops at its next step.
Interrupted (Ctrl-C, or a Ray task cancelled) while it waits on its workers, the sweep stops
them with SIGTERM and waits for them, so their checkpoints are whole; a worker that Ctrl-C
reached first has already stopped quietly (exit code INTERRUPTED).
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue as queue_lib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from saefast.errors import SaefastError
from saefast.train.progress import step_record

if TYPE_CHECKING:
    from saefast.sweep.events import Events, RunOutcome
    from saefast.sweep.experiment import RunSpec


BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
INTERRUPTED = 130  # a worker's exit code when SIGINT or SIGTERM stopped it (128 + SIGINT)


class WorkerFailed(SaefastError, RuntimeError):
    """A seed worker process died or raised; its message says which runs."""


class _Worker:
    """One worker process and the thread that reads its messages into `inbox`."""

    def __init__(self, threads: int, inbox: queue_lib.Queue, index: int):
        self.index = index
        # BLAS threads as torch's: numpy's matrix products in a report task would otherwise
        # take every core in every worker
        env = dict(os.environ, **{v: str(threads) for v in BLAS_THREAD_VARS})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "saefast.sweep.seed_worker", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout, inbox), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[bytes], inbox: queue_lib.Queue) -> None:
        while True:
            try:
                message = pickle.load(stream)
            except (EOFError, pickle.UnpicklingError, OSError):
                inbox.put((self.index, "exit", None))
                return
            inbox.put((self.index, *message))

    def send(self, task: tuple) -> None:
        pickle.dump(task, self.proc.stdin)
        self.proc.stdin.flush()

    def close(self, *, stop: bool = False) -> None:
        """Close its stdin and wait for it to exit (it finishes the task it has); with
        stop, SIGTERM it first (it unwinds at once and exits)."""
        if stop and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def interrupted(self) -> bool:
        """Whether it exited because a Ctrl-C reached it (the sweep's own is then due)."""
        return self.proc.poll() in (INTERRUPTED, -signal.SIGINT)


_workers: list[_Worker] = []
_threads: int | None = None
_inbox: queue_lib.Queue = queue_lib.Queue()


def _pool(n: int, threads: int) -> list[_Worker]:
    global _workers, _threads, _inbox
    if _threads != threads or len(_workers) < n or any(w.proc.poll() is not None for w in _workers):
        shutdown()
        _inbox = queue_lib.Queue()
        _workers = [_Worker(threads, _inbox, i) for i in range(n)]
        _threads = threads
    return _workers[:n]


def shutdown(*, stop: bool = False) -> None:
    """Close the workers (they hold no state between passes); stop: interrupt them first."""
    global _workers, _threads
    for w in _workers:
        w.close(stop=stop)
    _workers, _threads = [], None


@contextmanager
def _stopped_if_interrupted() -> Iterator[None]:
    """(A decorator.) Interrupted meanwhile, the workers are stopped (not left training
    until their pass ends, nor waited on at exit) before the interruption goes on."""
    try:
        yield
    except KeyboardInterrupt:
        shutdown(stop=True)
        raise


def _failed(worker: _Worker) -> None:
    """A worker died or raised: the others are closed; a worker that Ctrl-C stopped means
    the sweep is being interrupted, which the caller reports, not a failure."""
    shutdown()
    if worker.interrupted():
        raise KeyboardInterrupt


atexit.register(shutdown)


def merged_stats(latest: dict[int, tuple[int, int, dict]]) -> tuple[int, int, dict]:
    """One progress line from each part's latest (step, total, stats): the slowest part's
    step, means over seeds, every seed's own numbers, the mean rate of the parts."""
    step = min(s for s, _, _ in latest.values())
    total = max(t for _, t, _ in latest.values())
    per_seed: dict = {}
    for _, _, stats in latest.values():
        per_seed.update(stats.get("per_seed") or {})
    rates = [st.get("tokens_per_second", 0.0) for _, _, st in latest.values()]
    return step, total, step_record(per_seed, sum(rates) / len(rates))


@_stopped_if_interrupted()
def run_parts(parts: list[list[RunSpec]], data: Path, out_dir: Path, *, events: Events,
              memory_budget: int | None, threads: int) -> list[RunOutcome]:
    """Train each part in a worker (len(parts) workers of `threads` threads); the outcomes
    in the order of the parts' runs. Each worker gets an equal share of the memory budget."""
    from saefast.train import memory

    workers = _pool(len(parts), threads)
    device = parts[0][0].config.model.device
    share = (memory_budget or memory.available_bytes(device)) // len(parts)
    for w, part in zip(workers, parts):
        w.send(("train", part, data, out_dir, share))
    results: dict[int, list[RunOutcome]] = {}
    latest: dict[int, tuple[int, int, dict]] = {}
    evaluated: dict[int, tuple[int, int]] = {}  # part -> (tokens done, total)
    while len(results) < len(parts):
        index, kind, payload = _inbox.get()
        if kind == "step":
            latest[index] = payload
            events.run_step(*merged_stats(latest))
        elif kind == "evaluation":  # the slowest part's, as for steps
            evaluated[index] = payload
            events.run_evaluation(min(d for d, _ in evaluated.values()),
                                  max(t for _, t in evaluated.values()))
        elif kind == "done":
            results[index] = payload
        else:  # "error" (the worker's traceback) or "exit" (it died)
            _failed(workers[index])
            names = ", ".join(r.name for r in parts[index])
            detail = payload or f"the worker process exited (code {workers[index].proc.poll()})"
            raise WorkerFailed(f"training {names} in a worker process failed: {detail}")
    return [outcome for i in range(len(parts)) for outcome in results[i]]


def _again(error: tuple[str, str, str]) -> SaefastError:
    """A worker's saefast error (module, class name, message) as the same class here."""
    import importlib

    module, name, message = error
    try:
        cls = getattr(importlib.import_module(module), name)
        if isinstance(cls, type) and issubclass(cls, SaefastError):
            return cls(message)
    except (ImportError, AttributeError, TypeError):
        pass
    return WorkerFailed(message)


@_stopped_if_interrupted()
def map_calls(calls: list[tuple[str, str, tuple]], *, workers: int, threads: int,
              on_start: Callable[[int], None] | None = None) -> list:
    """Each call (module, function, args) run in a worker, up to `workers` at once, in the
    order given (put the longest first); the results in that order. on_start(i) when call i
    is handed to a worker. An error of saefast's is raised as it is; any other, or a worker
    that dies, as WorkerFailed."""
    pool = _pool(workers, threads)
    todo = list(range(len(calls)))
    busy: dict[int, int] = {}  # worker index -> call index
    results: dict[int, object] = {}

    def hand(worker: _Worker) -> None:
        i = todo.pop(0)
        busy[worker.index] = i
        if on_start is not None:
            on_start(i)
        worker.send(("call", *calls[i]))

    for w in pool:
        if todo:
            hand(w)
    while busy:
        index, kind, payload = _inbox.get()
        if kind == "step":
            continue
        if kind == "done":
            results[busy.pop(index)] = payload
            if todo:
                hand(pool[index])
            continue
        _failed(pool[index])
        if kind == "raise":
            raise _again(payload)
        module, function, _ = calls[busy[index]]
        detail = payload or f"the worker process exited (code {pool[index].proc.poll()})"
        raise WorkerFailed(f"{module}.{function} in a worker process failed: {detail}")
    return [results[i] for i in range(len(calls))]

