"""The trained null's runs: each seed group's recipe trained on a surrogate sample of its
store (planned by `runs.trained_null.plan`, from the group's finished run dirs), through
the same seam as real runs (`passes.run_pass`: seed workers, checkpoints, resume).

    train_null_runs(runs, OUT, nulls)    a sweep's groups, after their real runs
    train_for_dirs(run_dirs, nulls)      one group's run dirs (`saefast analyze`)

A null run that is already whole in its folder is reused (`plan.pending`, like real runs),
so a second sweep or a report trains nothing; a killed pass resumes from its checkpoints.
Every group's outcome is a record: {kind: {trained, reused, seconds} or {skipped, reason}}.
"""

from __future__ import annotations

import time
from pathlib import Path

from saefast.config import NullsConfig, from_dict
from saefast.errors import OutputError
from saefast.fsio import check_output_dir
from saefast.runs import layout
from saefast.runs import trained_null as plans
from saefast.sweep import plan as sweep_plan
from saefast.sweep.events import Events
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.passes import run_pass

__all__ = ["train_null_runs", "train_for_dirs", "null_specs"]


def null_specs(null: plans.NullPlan) -> list[RunSpec]:
    """One RunSpec per null seed: the group's recipe with that seed, named s<seed>."""
    return [RunSpec(null.run_name(s), null.group, from_dict(null.config_of(s)))
            for s in null.seeds]


def train_for_dirs(run_dirs: list[Path], nulls: NullsConfig, *, events: Events | None = None,
                   memory_budget: int | None = None, threads: int | None = None) -> dict:
    """Train (or reuse) the null runs of one seed group's run dirs, for each kind `nulls`
    asks for: {kind: {trained, reused, seconds, folder} or {skipped: True, reason}}."""
    events = events or Events()
    out: dict[str, dict] = {}
    for kind in nulls.kinds():
        null = plans.plan(run_dirs, kind)
        if isinstance(null, str):
            out[kind] = {"skipped": True, "reason": null}
            continue
        specs = null_specs(null)
        todo, done = sweep_plan.pending(specs, null.folder)
        if todo:
            try:  # runs in a folder we may not write (analyze of someone's runs): skip, say so
                check_output_dir(null.folder, "the trained null's folder")
            except OutputError as e:
                out[kind] = {"skipped": True, "reason": str(e)}
                continue
        t0 = time.perf_counter()
        passes = sweep_plan.seed_passes(todo, {null.group: null.sample.d}, memory_budget)
        for i, runs_of_pass in enumerate(passes):
            seeds = ",".join(str(r.config.train.seed) for r in runs_of_pass)
            events.pass_started(f"{null.group} trained null ({kind}) seeds {seeds}",
                                len(runs_of_pass), i, len(passes))
            for outcome in run_pass(runs_of_pass, null.sample, null.folder, events=events,
                                    memory_budget=memory_budget, threads=threads):
                if outcome.status == "failed":
                    events.run_finished(outcome)
        out[kind] = {"trained": len(todo), "reused": len(done),
                     "seconds": time.perf_counter() - t0, "folder": str(null.folder)}
    return out


def train_null_runs(runs: list[RunSpec], out_dir: Path, nulls: NullsConfig, *,
                    events: Events | None = None, memory_budget: int | None = None,
                    threads: int | None = None) -> dict:
    """The null runs of every seed group of a sweep whose real runs are finished in OUT:
    {group: train_for_dirs' record}. Nothing when `nulls` turns the trained null off."""
    from saefast.runs.artifacts import is_complete_run

    if not nulls.kinds():
        return {}
    out = {}
    for gname, members in groups(runs).items():
        dirs = [d for d in (layout.run_dir(out_dir, r.name) for r in members) if is_complete_run(d)]
        out[gname] = train_for_dirs(dirs, nulls, events=events, memory_budget=memory_budget,
                                    threads=threads)
    return out
