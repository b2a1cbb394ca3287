"""A sweep's report step: each seed group's report (`report.files.group_report`), from the
run dirs that exist, with the pair matchings in the sweep's cache.

A report whose runs are unchanged is reused, not recomputed (`report_is_current` says so
beforehand, so the Ray executor skips matching such a group); matchings a remote executor
computed while the runs trained are read from `matching_cache`, not matched again.

Reports are single-threaded work for the most part (the exact matchings of the null draws,
Python between them), so a sweep with several groups to report computes them side by side in
the seed workers (`seed_pool.map_calls`, one thread each), largest first, when they are small
enough to sit in memory together and there is work enough to pay for the workers. A report is
the same computed there or here (each group's draws are seeded by its own shapes) up to the
last bits of the larger matrix products, whose sums BLAS splits by its thread count: on the
default study the largest difference was 1.5e-8, no count or verdict changed.
"""

from __future__ import annotations

from pathlib import Path

from saefast.config import NullsConfig
from saefast.runs import layout
from saefast.sweep.events import Events
from saefast.sweep.experiment import RunSpec, groups

__all__ = ["analyze_groups", "report_is_current", "matching_cache"]

# Reports run side by side only when every one to compute has at most this many features (a
# 16,384-feature report holds GiBs: one at a time) and their work (`report_work`) adds up to
# this at least (one 256-feature group's: below it, starting the workers costs more)
PARALLEL_MAX_FEATURES = 4096
PARALLEL_WORK = 10**7


def analyze_groups(runs: list[RunSpec], out_dir: Path, *, events: Events | None = None,
                   nulls: NullsConfig | None = None,
                   threads: int | None = None) -> dict[str, dict]:
    """Match every pair within each seed group (reports.group_report reuses a report whose
    runs are unchanged), with the nulls of the activation store the runs name in run.json.
    Pair matchings go through the sweep's cache (`matching_cache`): the ones a remote
    executor computed while runs trained are read, not matched again. nulls: the trained
    null's settings (default on): its null runs, trained before, are matched like the pairs.
    threads: the sweep's thread budget (`sweep.threads`): how many groups report at once."""
    from saefast.report import files as reports

    events = events or Events()
    jobs, stored = {}, {}
    for gname, members in groups(runs).items():
        args = _report_args(members, Path(out_dir), nulls)
        if args is not None:
            jobs[gname] = (members[0].config.sae.n_features, *args)
            stored[gname] = reports.stored_report(*args[:2], **args[2])  # reused as it is
    done = _in_workers({g: j for g, j in jobs.items() if stored[g] is None}, Path(out_dir),
                       events, threads)
    out: dict[str, dict] = {}
    for gname, (_, dirs, report_dir, settings) in jobs.items():
        out[gname] = stored[gname] or done.get(gname) or reports.group_report(
            dirs, report_dir, **settings, extra={"group": gname},
            on_start=lambda g=gname: events.report_started(g), matchings=matching_cache(out_dir),
            on_step=lambda step, i, n, g=gname: events.report_step(g, step, i, n),
            progress=lambda i, n, _pair, g=gname: events.report_pair(g, i, n))
    return out


def report_work(n_features: int) -> int:
    """A group report's work, roughly: its matched null draws (`report_null_size` pooled
    cosines, each one row of an n x n assignment)."""
    from saefast.stats.null_model import report_null_size

    return report_null_size(n_features, n_features) * n_features


def _in_workers(jobs: dict, out_dir: Path, events: Events, threads: int | None) -> dict:
    """The reports to compute (`jobs`: none stored), side by side in the seed workers when
    that pays (module docstring); {group: report} of those computed there, {} when none is."""
    from saefast.sweep import seed_pool
    from saefast.sweep import threads as sweep_threads

    todo = list(jobs)
    budget = sweep_threads.configured(threads)
    workers = min(budget, len(todo))
    small = all(jobs[g][0] <= PARALLEL_MAX_FEATURES for g in todo)
    if (sweep_threads.workers_off() or workers < 2 or not small
            or sum(report_work(jobs[g][0]) for g in todo) < PARALLEL_WORK):
        return {}
    todo.sort(key=lambda g: (report_work(jobs[g][0]) * len(jobs[g][1]) ** 2), reverse=True)
    calls = [(__name__, "report_task", (g, *jobs[g][1:], str(out_dir))) for g in todo]
    try:
        results = seed_pool.map_calls(calls, workers=workers, threads=max(1, budget // workers),
                                      on_start=lambda i: events.report_started(todo[i]))
    except seed_pool.WorkerFailed as e:  # a worker died (memory?): the rest are made here;
        events.message(f"reports in worker processes failed, made here instead: {e}")
        return {}  # the reports the workers finished are stored and reused
    return dict(zip(todo, results))


def report_task(group: str, dirs: list[Path], report_dir: Path, settings: dict,
                out_dir: str) -> dict:
    """One group's report, in a seed worker (`_in_workers`)."""
    from saefast.report import files as reports

    return reports.group_report(dirs, report_dir, **settings, extra={"group": group},
                                matchings=matching_cache(Path(out_dir)))


def _report_args(members: list[RunSpec], out_dir: Path,
                 nulls: NullsConfig | None = None) -> tuple[list[Path], Path, dict] | None:
    """(run dirs, report dir, settings) of a seed group's report; None below two runs."""
    from saefast.report import nulls as report_nulls
    from saefast.runs.artifacts import is_complete_run

    dirs = [d for d in (layout.run_dir(out_dir, r.name) for r in members) if is_complete_run(d)]
    if len(dirs) < 2:
        return None
    mc = members[0].config.match
    return dirs, layout.report_dir(out_dir, members[0].group), dict(
        threshold=mc.threshold, top_k=mc.top_k, live_only=mc.live_only, solver=mc.solver,
        acts=report_nulls.store_of_runs(dirs),  # the store the runs trained on
        trained_null=nulls or NullsConfig())


def report_is_current(members: list[RunSpec], out_dir: Path,
                      nulls: NullsConfig | None = None) -> bool:
    """Whether `analyze_groups` would reuse this group's stored report as it is."""
    from saefast.report import files as reports

    args = _report_args(members, Path(out_dir), nulls)
    if args is None:
        return False
    dirs, report_dir, settings = args
    return reports.stored_report(dirs, report_dir, **settings) is not None


def matching_cache(out_dir: Path):
    """OUT/reports/.matchings: the sweep's pair matchings (`match.cache`)."""
    from saefast.match.cache import FOLDER, MatchingCache

    return MatchingCache(layout.reports_dir(out_dir) / FOLDER)
