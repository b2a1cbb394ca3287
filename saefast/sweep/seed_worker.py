"""A seed worker process: the other side of `sweep.seed_pool`.

`python -m saefast.sweep.seed_worker THREADS` reads tasks (runs, activation store, OUT,
memory share) as pickles from its stdin, trains each with `passes.run_pass_here` on THREADS
torch threads, and sends back step progress and the outcomes (or the error) as pickles over
a copy of its stdout; anything the code prints goes to stderr instead. It is a fresh
interpreter (fork after OpenMP has started is unsafe) that never imports the caller's main
module, so a user's script needs no `if __name__ == "__main__"` guard (multiprocessing's
spawn would need one). It exits when its stdin closes, and at its next step when the sweep
that started it has died (its checkpoints stay for the resumed sweep).
"""

from __future__ import annotations

import os
import pickle
import sys
from typing import IO

from saefast.sweep.events import Events


class PipeEvents(Events):
    """A worker's Events: step progress goes to the sweep; the sweep's own process reports
    every other event, so they stay the no-ops of `Events`."""

    def __init__(self, out: IO[bytes], parent: int):
        self.out, self.parent = out, parent

    def run_step(self, step: int, total: int, stats: dict) -> None:
        if os.getppid() != self.parent:  # the sweep was killed: stop, its checkpoints stay
            os._exit(1)
        _send(self.out, ("step", (step, total, stats)))


def _send(out: IO[bytes], message: tuple) -> None:
    pickle.dump(message, out)
    out.flush()


def main(threads: int) -> None:
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
            runs, data, out_dir, budget = pickle.load(tasks)
        except EOFError:
            return
        try:
            outcomes = passes.run_pass_here(runs, data, out_dir, events=PipeEvents(out, parent),
                                            memory_budget=budget)
        except Exception as e:  # noqa: BLE001 - reported to the sweep, which raises
            _send(out, ("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
            continue
        _send(out, ("done", outcomes))


if __name__ == "__main__":
    main(int(sys.argv[1]))
