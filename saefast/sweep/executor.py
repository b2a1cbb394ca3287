"""The seam between a sweep and what trains its runs: `Executor`, and the steps every
executor takes the same way.

`run_sweep` hands an executor the sweep's runs and gets one `RunOutcome` per run back. Two
implement it: `sweep.local.LocalExecutor` (this machine; the default) and
`sweep.ray.executor.RayExecutor` (a Ray cluster). Both are built from the same steps:

    skip_finished   runs whose run dir is complete are skipped (plan.pending): a rerun resumes
    harvest_job     one forward pass fills the cache for every hook of a plan.HarvestJob
    stores_of_job   which group trains on which store a harvest job made
    source_width    d_model of an activation source (store or stream), for plan.seed_passes
    pass_label      how progress names a pass

and each pass ends in `sweep.passes.run_pass`, wherever it runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from saefast.sweep import plan
from saefast.sweep.events import Events, RunOutcome
from saefast.sweep.experiment import RunSpec
from saefast.sweep.plan import HarvestJob

if TYPE_CHECKING:
    from saefast.data.stream import StreamSource

__all__ = ["Executor", "skip_finished", "harvest_job", "stores_of_job", "source_width",
           "pass_label"]


class Executor(ABC):
    """What trains a sweep's runs (`run_sweep(executor=...)`)."""

    # True: the runs train on this machine's devices, so `run_sweep` checks them before any
    # work (plan.preflight); False: they train elsewhere, and the executor checks them there
    local_devices: bool = True

    @abstractmethod
    def __call__(self, runs: list[RunSpec], out_dir: Path, *, cache_dir: str | Path | None = None,
                 events: Events | None = None, memory_budget: int | None = None,
                 threads: int | None = None) -> list[RunOutcome]:
        """Train every run of `runs` that is not finished in OUT (`out_dir`) yet and write its
        run dir under OUT/runs; return one RunOutcome per run (skipped, done or failed). A run
        that fails is recorded and the others go on. cache_dir: the activation cache
        (default: the user cache dir). events: where progress goes. memory_budget: bytes a
        pass may use (default: what the device has free). threads: the sweep's thread budget
        (`sweep.threads`)."""


def skip_finished(runs: list[RunSpec], out_dir: Path,
                  events: Events) -> tuple[list[RunSpec], list[RunOutcome]]:
    """(runs left to train, a "skipped" outcome per finished run, each told to `events`)."""
    todo, done = plan.pending(runs, out_dir)
    outcomes = [RunOutcome(spec, "skipped", path=path, metrics=info.get("metrics"))
                for spec, path, info in done]
    for o in outcomes:
        events.run_finished(o)
    return todo, outcomes


def harvest_job(job: HarvestJob, cache_dir: str | Path | None, *,
                on_progress: Callable[[int, int], None] | None = None,
                on_wait: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Run one harvest job into the activation cache: {hook: activation store}."""
    from saefast.data import harvest

    return harvest.harvest(job.model, job.hooks, job.corpus, job.tokens,
                           context_length=job.context_length,
                           drop_special_tokens=job.drop_special_tokens, device=job.device,
                           cache_dir=cache_dir, on_progress=on_progress, on_wait=on_wait)


def stores_of_job(todo: list[RunSpec], job: HarvestJob, got: dict[str, Path]) -> dict[str, Path]:
    """group -> activation store, for the cached groups a harvest job served ({hook: store})."""
    return {spec.group: got[spec.config.model.hook] for spec in todo
            if spec.config.data.cache and plan.harvest_key(spec.config) == job.key}


def source_width(source: Path | StreamSource) -> int:
    """d_model of an activation store (read from its meta.json) or of a stream."""
    from saefast.data import store

    return int(store.store_info(source)["d_model"]) if isinstance(source, Path) else source.d


def pass_label(runs_of_pass: list[RunSpec]) -> str:
    """"<group> seeds 1,2,3": how progress names a pass."""
    seeds = ",".join(str(r.config.train.seed) for r in runs_of_pass)
    return f"{runs_of_pass[0].group} seed{'s' if len(runs_of_pass) > 1 else ''} {seeds}"
