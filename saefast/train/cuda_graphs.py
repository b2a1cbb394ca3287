"""A seed's training step captured once in a CUDA graph and replayed (the GPU path of
`train.trainer.train_saes`).

Eagerly, one step of one SAE is ~60 kernel launches and ~8 custom-op dispatches from Python;
on an H100 that host work takes longer than the GPU's ~2.2 ms of kernels (docs/benchmarks.md,
"Where the time goes"), so the GPU waits. A replayed graph is one launch.

What is captured: the seed's forward, losses, backward and parallel-gradient removal
(`sync_free.seed_step`, which `train.step.SeedSteps` hands over), reading the batch from a
static buffer and leaving the loss, the dead count and the gradients in static tensors. Adam
and the decoder renorm run eagerly over all seeds afterwards (a few fused launches, the same
calls as without graphs). One graph per seed and AuxK switch (on/off: they run different
kernels), captured after `warmup` eager steps of that kind, because lazy initialisation
(cuBLAS workspaces, the allocator) must not happen inside a capture. A seed's two graphs
share one memory pool: they never replay in the same step, and a step's outputs are consumed
(Adam, the device log) before the seed's next replay. Graphs of different seeds do not
share: a later capture could place its outputs where an earlier graph keeps temporaries.

A capture that fails (or memory that runs short) turns graphs off for the rest of the call,
with the reason in `stats.reason`, and the steps go on eagerly: the same kernels either way.
Partial batches (the end of a window) run eagerly too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

# (seed index, batch [B, d], aux_on) -> (loss, dead count) as 0-d device tensors; the step
# also leaves the seed's gradients in its parameters' .grad
SeedStep = Callable[[int, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]

ENV = "SAEFAST_CUDA_GRAPHS"  # "0" turns graphs off (the eager sync-free path)
MIN_FREE_FRACTION = 0.2  # no new capture when less of the GPU's memory is free than this


def wanted(device) -> bool:
    """Graphs by default on CUDA, unless SAEFAST_CUDA_GRAPHS=0."""
    return torch.device(device).type == "cuda" and os.environ.get(ENV, "1") != "0"


@dataclass
class _Captured:
    replay: Callable[[], None]
    x: torch.Tensor  # the static batch the graph reads
    loss: torch.Tensor
    dead: torch.Tensor
    grads: list  # the seed's parameters' gradients, as the graph leaves them


@dataclass
class GraphStats:
    captured: int = 0
    replays: int = 0
    eager: int = 0
    reason: str | None = None  # why graphs were turned off, if they were

    def as_dict(self) -> dict:
        return {"captured": self.captured, "replays": self.replays, "eager_steps": self.eager,
                "off_because": self.reason}


class CudaGraphBackend:
    """Captures with torch.cuda.graph on a side stream (warm-up runs there too)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self.pools: dict[int, object] = {}

    def run_warmup(self, fn: Callable[[], tuple]) -> tuple:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = fn()
        current.wait_stream(self.stream)
        return out

    def memory_short(self) -> str | None:
        free, total = torch.cuda.mem_get_info(self.device)
        if free < MIN_FREE_FRACTION * total:
            return f"only {free / 2**30:.1f} of {total / 2**30:.1f} GiB free for a new graph"
        return None

    def capture(self, pool_key: int, fn: Callable[[], tuple]) -> tuple[Callable[[], None], tuple]:
        """(replay, outputs): fn's work recorded, not run; replay() runs it on the current
        stream, writing into `outputs` each time."""
        graph = torch.cuda.CUDAGraph()
        pool = self.pools.get(pool_key)
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.graph(graph, pool=pool, stream=self.stream):
            out = fn()
        current.wait_stream(self.stream)
        self.pools.setdefault(pool_key, graph.pool())
        return graph.replay, out


class SeedStepGraphs:
    """Runs `step(i, x, aux_on)` through captured graphs where it can (see the module doc)."""

    def __init__(self, params_of: Callable[[int], list], step: SeedStep, batch: int,
                 backend, warmup: int = 2):
        self.params_of, self.step, self.batch = params_of, step, batch
        self.backend, self.warmup = backend, warmup
        self.graphs: dict[tuple[int, bool], _Captured] = {}
        self.seen: dict[tuple[int, bool], int] = {}
        self.stats = GraphStats()

    def run(self, i: int, x: torch.Tensor, aux_on: bool) -> tuple[torch.Tensor, torch.Tensor]:
        key = (i, bool(aux_on))
        if self.stats.reason is None and x.shape[0] == self.batch:
            cap = self.graphs.get(key)
            if cap is None and self.seen.get(key, 0) >= self.warmup:
                cap = self._capture(key, x)
            if cap is not None:
                cap.x.copy_(x)
                cap.replay()
                for p, g in zip(self.params_of(i), cap.grads):
                    p.grad = g
                self.stats.replays += 1
                return cap.loss, cap.dead
            self.seen[key] = self.seen.get(key, 0) + 1
            self.stats.eager += 1
            return self.backend.run_warmup(lambda: self.step(i, x, aux_on))
        self.stats.eager += 1
        return self.step(i, x, aux_on)

    def _capture(self, key: tuple[int, bool], x: torch.Tensor) -> _Captured | None:
        i, aux_on = key
        short = self.backend.memory_short()
        if short is not None:
            self.stats.reason = short
            return None
        static_x = x.clone()
        params = self.params_of(i)

        def body():
            loss, dead = self.step(i, static_x, aux_on)
            return loss.detach(), dead, [p.grad for p in params]

        for p in params:
            p.grad = None  # the graph allocates the gradients it writes
        try:
            replay, (loss, dead, grads) = self.backend.capture(i, body)
        except Exception as exc:  # noqa: BLE001 - any failure: eager from here on, say why
            self.stats.reason = f"capture failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            for p in params:
                p.grad = None
            return None
        cap = _Captured(replay, static_x, loss, dead, grads)
        self.graphs[key] = cap
        self.stats.captured += 1
        return cap
