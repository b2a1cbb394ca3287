"""What the Ray executor's tasks do on a worker: harvest, train one pass, match a batch of
pairs, answer a probe. Plain functions over the same library code the local executor runs
(`harvest.harvest`, `sweep.run_pass`, `stability.pair_matching`); `ray_executor` wraps them
as remote tasks. Nothing here imports ray or torch at module level, so a probe task starts
in a second.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from saefast.sweep.experiment import RunSpec
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


class _StepsToBoard:
    """A pass's step progress, sent to the board at most every STEP_SECONDS (`Events.run_step`
    is the only event a pass emits that the driver draws)."""

    STEP_SECONDS = 2.0

    def __init__(self, board: Any, task_id: str):
        self.board, self.task_id, self.last = board, task_id, 0.0

    def __getattr__(self, name: str):  # every other Events method: nothing to send
        return lambda *args, **kwargs: None

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
    from saefast.data import harvest as harvest_

    _announce(board, task_id)
    _threads(threads)
    return harvest_.harvest(job.model, job.hooks, job.corpus, job.tokens,
                            context_length=job.context_length,
                            drop_special_tokens=job.drop_special_tokens, device=job.device,
                            cache_dir=cache_dir)


def stream_width(spec: RunSpec, cache_dir: str) -> int:
    """d_model of a streamed group, with its corpus checked to be long enough."""
    from saefast.sweep import local as sweep

    return int(sweep.open_stream(spec.config, cache_dir).d)


def device_memory(device: str) -> int:
    """The training budget of `device` on the node this runs on (`memory.available_bytes`)."""
    from saefast.train import memory

    return memory.available_bytes(device)


# ---------------------------------------------------------------------------- passes


@dataclass
class PassResult:
    outcomes: list  # sweep.RunOutcome per run of the pass
    node: str
    started: float  # time.time() on the worker
    seconds: float
    token_steps: int  # tokens seen, summed over the pass's seeds


def train_pass(runner: Callable, runs: list[RunSpec], data: Path | None, out_dir: Path, *,
               memory_budget: int | None, threads: int, cache_dir: str, board: Any = None,
               task_id: str = "") -> PassResult:
    """`runner(runs, data, out_dir)` (sweep.run_pass) on this worker with `threads` threads;
    data None: a streamed group, whose stream is opened here (the model runs where the
    pass does)."""
    from saefast.sweep import local as sweep
    from saefast.sweep import seed_pool

    node = _announce(board, task_id)
    t0, wall = time.perf_counter(), time.time()
    _threads(threads)
    source = data if data is not None else sweep.open_stream(runs[0].config, cache_dir)
    try:
        outcomes = runner(runs, source, out_dir, events=_StepsToBoard(board, task_id),
                          memory_budget=memory_budget, threads=threads)
    finally:
        seed_pool.shutdown()  # seed workers a pass started live no longer than the task
    return PassResult(outcomes, node, wall, time.perf_counter() - t0,
                      sum(token_steps(r.config) for r in runs))


# ---------------------------------------------------------------------------- pairs


@dataclass
class PairsResult:
    matched: int
    node: str
    seconds: float
    errors: list[str] = field(default_factory=list)


def match_pairs(pairs: list[tuple[str, str]], folder: str, *, live_only: bool, solver: str,
                threads: int, board: Any = None, task_id: str = "") -> PairsResult:
    """Every matching a group report makes of each pair (decoder, live-only decoder when
    asked, encoder), into the sweep's matching cache, which the report then reads. A pair
    that cannot be matched is left to the report, which says why."""
    from saefast.errors import SaefastError, first_line
    from saefast.match.cache import MatchingCache
    from saefast.runs.artifacts import load_sae
    from saefast.stats import equivalence, stability

    node = _announce(board, task_id)
    t0 = time.perf_counter()
    _threads(threads)
    cache = MatchingCache(folder)
    loaded: dict[str, Any] = {}
    errors, matched = [], 0
    for a, b in pairs:
        try:
            for path in (a, b):
                if path not in loaded:
                    loaded[path] = load_sae(path)
            sa, sb = loaded[a], loaded[b]
            for live in (False, True) if live_only else (False,):
                stability.pair_matching(sa, sb, live_only=live, solver=solver, matchings=cache)
            if sa.encoder is not None and sb.encoder is not None:
                equivalence.encoder_matching(sa, sb, solver=solver, matchings=cache)
            matched += 1
        except SaefastError as e:
            errors.append(f"{os.path.basename(a)} x {os.path.basename(b)}: {first_line(e)}")
    return PairsResult(matched, node, time.perf_counter() - t0, errors)
