"""What a sweep reports while it works, and what it reports a run ended as.

`Events` is the sink an executor calls; its methods do nothing, so a sink overrides only
what it draws (the CLI's `cli.tables.RichEvents`, a seed worker's pipe, a Ray task's
progress board). Every sink is a subclass: an event it does not know is an AttributeError,
not silently dropped. Nothing here draws on the screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from saefast.sweep.experiment import RunSpec
from saefast.sweep.plan import HarvestJob

__all__ = ["Events", "RunOutcome", "NodeRate", "ClusterProgress"]


@dataclass
class RunOutcome:
    """How one run of a sweep ended: trained now ("done"), finished before ("skipped", with
    its run dir and metrics), or "failed" (with the error; nothing is written for it)."""

    spec: RunSpec
    status: str  # "done", "skipped", "failed"
    path: Path | None = None
    error: str | None = None
    metrics: dict | None = None


@dataclass
class NodeRate:
    """One node's finished work in a remote sweep: passes, token-steps (tokens seen summed
    over seeds), and the seconds since its first task started."""

    passes: int = 0
    token_steps: int = 0
    seconds: float = 0.0

    @property
    def token_steps_per_s(self) -> float:
        return self.token_steps / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ClusterProgress:
    """Where a remote executor's tasks stand: passes and pair batches queued (submitted, not
    started), running, done and failed, and each node's throughput."""

    passes: dict[str, int]  # queued, running, done, failed
    pairs: dict[str, int]  # the same, for batches of pair matchings
    nodes: dict[str, NodeRate]
    running: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # pass -> node, step, total


class Events:
    """What a sweep reports while it works; the CLI draws it with rich. No-ops by default:
    a sink subclasses this and overrides the events it shows."""

    def harvest_started(self, job: HarvestJob) -> None: ...
    def harvest_progress(self, done: int, total: int) -> None: ...
    def pass_started(self, label: str, n_seeds: int, index: int, total: int) -> None: ...
    def run_step(self, step: int, total: int, stats: dict) -> None: ...
    # after training: done of the total training tokens encoded again for the firing
    # counts (`train.evaluation.evaluate_many`; done = 0 as it starts)
    def run_evaluation(self, done: int, total: int) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...
    def report_started(self, group: str) -> None: ...
    def report_step(self, group: str, step: str, index: int, total: int) -> None: ...
    def report_pair(self, group: str, done: int, total: int) -> None: ...
    def message(self, text: str) -> None: ...
    def cluster_progress(self, progress: ClusterProgress) -> None: ...
