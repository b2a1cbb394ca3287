"""What the Ray executor's tasks do on a worker: harvest, train one pass, match a batch of
pairs, answer a probe. Plain functions over the same library code the local executor runs
(`executor.harvest_job`, `passes.run_pass`, and the matchings `plan.report_matchings` names);
`ray.executor` wraps them as remote tasks. Nothing here imports ray or torch at module
level, so a probe task starts in a second.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from saefast.config import MatchConfig
from saefast.sweep import plan, seed_pool
from saefast.sweep.events import Events, RunOutcome
from saefast.sweep.executor import harvest_job
from saefast.sweep.experiment import RunSpec
from saefast.sweep.passes import open_stream
from saefast.sweep.plan import HarvestJob, token_steps


class Board:
    """Which tasks have started, and where (a Ray actor: tasks tell it when they start, the
    driver reads it for its queued / running counts). Plain data, no ray import."""

    def __init__(self) -> None:
        self.started: dict[str, str] = {}
        self.steps: dict[str, tuple[int, int]] = {}

    def start(self, task_id: str, node: str) -> None:
        self.started[task_id] = node

    def step(self, task_id: str, step: int, total: int) -> None:
        self.steps[task_id] = (step, total)

    def snapshot(self) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        return dict(self.started), dict(self.steps)


class StepsToBoard(Events):
    """A pass's step progress, sent to the board at most every STEP_SECONDS (`run_step` is
    the only event of a pass that the driver draws; the others stay `Events`' no-ops)."""

    STEP_SECONDS = 2.0

    def __init__(self, board: Any, task_id: str):
        self.board, self.task_id, self.last = board, task_id, 0.0

    def run_step(self, step: int, total: int, stats: dict) -> None:
        now = time.monotonic()
        if self.board is not None and (now - self.last >= self.STEP_SECONDS or step >= total):
            self.last = now
            self.board.step.remote(self.task_id, step, total)


def node_name() -> str:
    """The worker's node, as the progress table names it (its IP, else its host name)."""
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (tests of the bodies): the host
        return socket.gethostname()


def _announce(board: Any, task_id: str) -> str:
    node = node_name()
    if board is not None:
        board.start.remote(task_id, node)  # fire and forget: progress only
    return node


def _threads(n: int) -> None:
    """Ray starts workers with OMP_NUM_THREADS = the task's CPUs; say it to torch explicitly,
    so the task uses what it declared (results do not depend on it: saefast.sweep.threads)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------- probe


def probe(paths: list[str], token: str) -> list[str]:
    """The paths among `paths` where this node does not see the file holding `token`: a
    sweep's OUT and cache must be one shared filesystem for every node."""
    missing = []
    for p in paths:
        try:
            if Path(p).read_text() != token:
                missing.append(p)
        except OSError:
            missing.append(p)
    return missing


# ---------------------------------------------------------------------------- harvest


def harvest(job: HarvestJob, cache_dir: str, threads: int, board: Any = None,
            task_id: str = "") -> dict[str, Path]:
    """One harvest job into the shared cache ({hook: store}); the store's write lock makes a
    second harvest of the same store wait and then read it."""
    _announce(board, task_id)
    _threads(threads)
    return harvest_job(job, cache_dir)


def stream_width(spec: RunSpec, cache_dir: str) -> int:
    """d_model of a streamed group, with its corpus checked to be long enough."""
    return int(open_stream(spec.config, cache_dir).d)


def device_memory(device: str) -> int:
    """The training budget of `device` on the node this runs on (`memory.available_bytes`)."""
    from saefast.train import memory

    return memory.available_bytes(device)


# ---------------------------------------------------------------------------- passes


@dataclass
class PassResult:
    """A pass task's outcomes, and what the driver's per-node throughput is made of."""

    outcomes: list[RunOutcome]  # one per run of the pass
    node: str
    started: float  # time.time() on the worker
    seconds: float
    token_steps: int  # tokens seen, summed over the pass's seeds


def train_pass(runner: Callable, runs: list[RunSpec], data: Path | None, out_dir: Path, *,
               memory_budget: int | None, threads: int, cache_dir: str, board: Any = None,
               task_id: str = "") -> PassResult:
    """`runner(runs, data, out_dir)` (passes.run_pass) on this worker with `threads` threads;
    data None: a streamed group, whose stream is opened here (the model runs where the
    pass does)."""
    node = _announce(board, task_id)
    t0, wall = time.perf_counter(), time.time()
    _threads(threads)
    source = data if data is not None else open_stream(runs[0].config, cache_dir)
    try:
        outcomes = runner(runs, source, out_dir, events=StepsToBoard(board, task_id),
                          memory_budget=memory_budget, threads=threads)
    finally:
        seed_pool.shutdown()  # seed workers a pass started live no longer than the task
    return PassResult(outcomes, node, wall, time.perf_counter() - t0,
                      sum(token_steps(r.config) for r in runs))


# ---------------------------------------------------------------------------- pairs


def match_pairs(pairs: list[tuple[str, str]], folder: str, *, match: MatchConfig,
                threads: int, board: Any = None, task_id: str = "") -> list[str]:
    """Every matching a group report makes of each pair (`plan.report_matchings`), into the
    sweep's matching cache, which the report then reads. Returns the pairs that could not be
    matched, each with why: they are left to the report, which says it again."""
    from saefast.errors import SaefastError, first_line
    from saefast.match.cache import MatchingCache
    from saefast.runs.artifacts import load_sae

    _announce(board, task_id)
    _threads(threads)
    cache = MatchingCache(folder)
    loaded: dict[str, Any] = {}
    errors = []
    for a, b in pairs:
        try:
            for path in (a, b):
                if path not in loaded:
                    loaded[path] = load_sae(path)
            for kind in plan.report_matchings(match):
                _match(kind, loaded[a], loaded[b], solver=match.solver, cache=cache)
        except SaefastError as e:
            errors.append(f"{os.path.basename(a)} x {os.path.basename(b)}: {first_line(e)}")
    return errors


def _match(kind: str, sa, sb, *, solver: str, cache) -> None:
    """One matching of a pair, by its `match.cache` kind, the way the report makes it."""
    from saefast.report import matchings

    if kind == "encoder":
        if sa.encoder is not None and sb.encoder is not None:  # the report skips it too
            matchings.encoder_matching(sa, sb, solver=solver, matchings=cache)
    elif kind in ("decoder", "decoder-live"):
        matchings.pair_matching(sa, sb, live_only=kind == "decoder-live", solver=solver,
                                matchings=cache)
    else:
        raise ValueError(f"no matching of kind {kind!r}")
