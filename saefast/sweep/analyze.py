"""A sweep's report step: each seed group's report (`report.files.group_report`), from the
run dirs that exist, with the pair matchings in the sweep's cache.

A report whose runs are unchanged is reused, not recomputed (`report_is_current` says so
beforehand, so the Ray executor skips matching such a group); matchings a remote executor
computed while the runs trained are read from `matching_cache`, not matched again.
"""

from __future__ import annotations

from pathlib import Path

from saefast.config import NullsConfig
from saefast.runs import layout
from saefast.sweep.events import Events
from saefast.sweep.experiment import RunSpec, groups

__all__ = ["analyze_groups", "report_is_current", "matching_cache"]


def analyze_groups(runs: list[RunSpec], out_dir: Path, *, events: Events | None = None,
                   nulls: NullsConfig | None = None) -> dict[str, dict]:
    """Match every pair within each seed group (reports.group_report reuses a report whose
    runs are unchanged), with the nulls of the activation store the runs name in run.json.
    Pair matchings go through the sweep's cache (`matching_cache`): the ones a remote
    executor computed while runs trained are read, not matched again. nulls: the trained
    null's settings (default on): its null runs, trained before, are matched like the pairs."""
    from saefast.report import files as reports

    events = events or Events()
    out: dict[str, dict] = {}
    for gname, members in groups(runs).items():
        args = _report_args(members, Path(out_dir), nulls)
        if args is None:
            continue
        dirs, report_dir, settings = args
        out[gname] = reports.group_report(
            dirs, report_dir, **settings, extra={"group": gname},
            on_start=lambda g=gname: events.report_started(g), matchings=matching_cache(out_dir))
    return out


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
