"""A sweep end to end: train, match, report, summarise (`run_sweep`).

    experiment.expand -> plan.preflight -> the executor (sweep.executor.Executor):
        local.LocalExecutor (default) or ray.executor.RayExecutor; each skips finished
        runs, harvests or streams the activations, and trains every pass with
        passes.run_pass  <- THE seam where a pass is executed
    -> analyze.analyze_groups (report.files.group_report per seed group)
    -> summary.summarize -> OUT/summary.json -> OUT/report.html (report.page.write_html)

Every stage is resumable: finished runs are skipped, activations come from the on-disk
cache, reports are recomputed only when their runs changed. Progress goes through `Events`;
nothing here draws on the screen.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from saefast.fsio import write_json_atomic
from saefast.runs.layout import SUMMARY_JSON
from saefast.sweep import plan
from saefast.sweep.analyze import analyze_groups
from saefast.sweep.events import Events
from saefast.sweep.executor import Executor
from saefast.sweep.experiment import RunSpec
from saefast.sweep.local import LocalExecutor
from saefast.sweep.summary import summarize

__all__ = ["run_sweep"]


def run_sweep(runs: list[RunSpec], out_dir: str | Path, *, cache_dir: str | Path | None = None,
              events: Events | None = None, analyze: bool = True,
              memory_budget: int | None = None,
              experiment: dict[str, Any] | None = None,
              threads: int | None = None,
              executor: Executor | None = None) -> dict[str, Any]:
    """Harvest, train, match and report; returns the sweep summary (also OUT/summary.json,
    and with analyze=True OUT/report.html, the page to share: `report.page.write_html`, written
    after the summary so it never shows an older one). Devices and output paths are checked
    first: nothing is created for a sweep that cannot start. experiment: what the study is
    ({name, description, file}), stored as summary["experiment"]. threads: `--threads`
    (`saefast.sweep.threads`). executor: what trains the runs (default a `LocalExecutor`);
    one whose `local_devices` is False checks the devices where its tasks run."""
    executor = executor or LocalExecutor()
    plan.preflight(runs, out_dir, cache_dir, devices=executor.local_devices)
    events = events or Events()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    outcomes = executor(runs, out_dir, cache_dir=cache_dir, events=events,
                        memory_budget=memory_budget, threads=threads)
    reports = analyze_groups(runs, out_dir, events=events) if analyze else {}
    summary = summarize(outcomes, reports)
    summary["seconds"] = time.perf_counter() - t0
    if experiment is not None:
        summary["experiment"] = experiment
    write_json_atomic(out_dir / SUMMARY_JSON, summary)
    if analyze:
        from saefast.report import page  # its plots import matplotlib: only when a page is made

        page.write_html(out_dir, summary)
    return summary
