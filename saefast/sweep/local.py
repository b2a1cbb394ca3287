"""The local executor: a sweep's runs trained on this machine, one pass after another.

    skip_finished -> harvest each corpus once for all its hooks (plan.harvest_jobs), or
    open a stream per streamed group -> plan.seed_passes (sized by this machine's memory)
    -> passes.run_pass for each pass, in order

A diverged run is recorded and the others go on. Progress goes through `Events`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from saefast.sweep import plan, seed_pool
from saefast.sweep.events import Events, RunOutcome
from saefast.sweep.executor import (
    Executor,
    harvest_job,
    pass_label,
    skip_finished,
    source_width,
    stores_of_job,
)
from saefast.sweep.experiment import RunSpec
from saefast.sweep.passes import open_stream, run_pass

if TYPE_CHECKING:
    from saefast.data.stream import StreamSource

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """`Executor` on this machine (the default of `run_sweep`): harvest each corpus once for
    all its hooks, then hand each pass of seeds to `passes.run_pass`; seed worker processes
    a pass starts live until the sweep ends."""

    local_devices = True

    def __call__(self, runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None = None,
                 events: Events | None = None, memory_budget: int | None = None,
                 threads: int | None = None) -> list[RunOutcome]:
        try:
            return self._train(runs, Path(out_dir), cache_dir, events or Events(),
                               memory_budget, threads)
        finally:
            seed_pool.shutdown()  # the seed workers live for one sweep

    def _train(self, runs: list[RunSpec], out_dir: Path, cache_dir: str | Path | None,
               events: Events, memory_budget: int | None, threads: int | None) -> list[RunOutcome]:
        todo, outcomes = skip_finished(runs, out_dir, events)
        if not todo:
            return outcomes
        sources: dict[str, Path | StreamSource] = {}  # group -> activation store, or a stream
        for job in plan.harvest_jobs(todo):
            events.harvest_started(job)
            got = harvest_job(job, cache_dir, on_progress=events.harvest_progress,
                              on_wait=events.message)
            sources.update(stores_of_job(todo, job, got))
        for spec in todo:
            if not spec.config.data.cache and spec.group not in sources:
                events.message(f"{spec.group}: streaming activations from the model (no disk cache)")
                sources[spec.group] = open_stream(spec.config, cache_dir)
        d_model = {g: source_width(s) for g, s in sources.items()}
        passes = plan.seed_passes(todo, d_model, memory_budget)
        for i, runs_of_pass in enumerate(passes):
            events.pass_started(pass_label(runs_of_pass), len(runs_of_pass), i, len(passes))
            for outcome in run_pass(runs_of_pass, sources[runs_of_pass[0].group], out_dir,
                                    events=events, memory_budget=memory_budget, threads=threads):
                outcomes.append(outcome)
                events.run_finished(outcome)
        return outcomes
