"""A seed worker process: the other side of `sweep.seed_pool`.

`python -m saefast.sweep.seed_worker THREADS` reads tasks as pickles from its stdin: "train"
(runs, activation store, OUT, memory share), trained with `passes.run_pass_here`, or "call"
(module, function, args: a sweep's group reports, `seed_pool.map_calls`), on THREADS torch
(and BLAS) threads, and sends back step progress and the result (or the error) as pickles over
a copy of its stdout; anything the code prints goes to stderr instead. It is a fresh
interpreter (fork after OpenMP has started is unsafe) that never imports the caller's main
module, so a user's script needs no `if __name__ == "__main__"` guard (multiprocessing's
spawn would need one). It exits when its stdin closes, and at its next step when the sweep
that started it has died (its checkpoints stay for the resumed sweep). Ctrl-C reaches the
whole process group, so a worker gets it beside the sweep: it stops quietly with code
INTERRUPTED (the sweep alone says "interrupted"), as it does on the SIGTERM by which the
sweep stops its workers when only the sweep was interrupted (`seed_pool`).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
from typing import IO

from saefast.errors import SaefastError
from saefast.sweep.events import Events
from saefast.sweep.seed_pool import INTERRUPTED


class PipeEvents(Events):
    """A worker's Events: step and firing-count progress go to the sweep; the sweep's own process reports
    every other event, so they stay the no-ops of `Events`."""

    def __init__(self, out: IO[bytes], parent: int):
        self.out, self.parent = out, parent

    def run_step(self, step: int, total: int, stats: dict) -> None:
        if os.getppid() != self.parent:  # the sweep was killed: stop, its checkpoints stay
            os._exit(1)
        _send(self.out, ("step", (step, total, stats)))

    def run_evaluation(self, done: int, total: int) -> None:
        if os.getppid() != self.parent:
            os._exit(1)
        _send(self.out, ("evaluation", (done, total)))


def _send(out: IO[bytes], message: tuple) -> None:
    pickle.dump(message, out)
    out.flush()


def _stop(signum: int, frame: object) -> None:
    """SIGINT or SIGTERM: unwind (temp files go, checkpoints stay), ignoring a second one
    (the terminal's Ctrl-C and the sweep's SIGTERM both come) that would break the unwinding.
    Ignored by a handler, not SIG_IGN: one already pending would be printed as a race."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    raise KeyboardInterrupt


def _ignore(signum: int, frame: object) -> None:
    pass


def main(threads: int) -> int:
    """Serve tasks until stdin closes (0) or a signal stops it (INTERRUPTED)."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # first: importing torch takes seconds
        signal.signal(sig, _stop)
    try:
        _serve(threads)
    except KeyboardInterrupt:  # the sweep reports the interruption, once
        return INTERRUPTED
    return 0


def _serve(threads: int) -> None:
    import traceback

    import torch

    out = os.fdopen(os.dup(1), "wb")  # messages; anything printed goes to stderr instead
    os.dup2(2, 1)
    torch.set_num_threads(threads)
    from saefast.sweep import passes

    parent = os.getppid()
    tasks = sys.stdin.buffer
    while True:
        try:
            kind, *task = pickle.load(tasks)
        except EOFError:
            return
        try:
            if kind == "train":
                runs, data, out_dir, budget = task
                result = passes.run_pass_here(runs, data, out_dir,
                                              events=PipeEvents(out, parent), memory_budget=budget)
            else:  # "call": module, function, args (`seed_pool.map_calls`)
                module, function, args = task
                result = getattr(importlib.import_module(module), function)(*args)
        except Exception as e:  # noqa: BLE001 - reported to the sweep, which raises
            if kind == "call" and isinstance(e, SaefastError):  # raised again there: one line
                _send(out, ("raise", (type(e).__module__, type(e).__qualname__, str(e))))
            else:  # a training pass's failure names its runs (`seed_pool.run_parts`)
                _send(out, ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
            continue
        _send(out, ("done", result))


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
