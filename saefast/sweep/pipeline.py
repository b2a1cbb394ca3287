"""A sweep end to end: train, match, report, summarise (`run_sweep`).

    experiment.expand -> plan.preflight -> the executor (sweep.executor.Executor):
        local.LocalExecutor (default) or ray.executor.RayExecutor; each skips finished
        runs, harvests or streams the activations, and trains every pass with
        passes.run_pass  <- THE seam where a pass is executed
    -> null_runs.train_null_runs (the trained null: each group's recipe on a surrogate, the
       local executor only; the same seam)
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

from saefast.config import NullsConfig
from saefast.fsio import write_json_atomic
from saefast.runs.artifacts import peak_memory_bytes
from saefast.runs.layout import SUMMARY_JSON
from saefast.sweep import null_runs, plan
from saefast.sweep.analyze import analyze_groups
from saefast.sweep.events import Events
from saefast.sweep.executor import Executor
from saefast.sweep.experiment import RunSpec, groups
from saefast.sweep.local import LocalExecutor
from saefast.sweep.summary import summarize

__all__ = ["run_sweep"]


def run_sweep(runs: list[RunSpec], out_dir: str | Path, *, cache_dir: str | Path | None = None,
              events: Events | None = None, analyze: bool = True,
              memory_budget: int | None = None,
              experiment: dict[str, Any] | None = None,
              threads: int | None = None,
              executor: Executor | None = None,
              nulls: NullsConfig | None = None) -> dict[str, Any]:
    """Harvest, train, match and report; returns the sweep summary (also OUT/summary.json,
    and with analyze=True OUT/report.html, the page to share: `report.page.write_html`, written
    after the summary so it never shows an older one). Devices and output paths are checked
    first: nothing is created for a sweep that cannot start. experiment: what the study is
    ({name, description, file}), stored as summary["experiment"]. threads: `--threads`
    (`saefast.sweep.threads`). executor: what trains the runs (default a `LocalExecutor`);
    one whose `local_devices` is False checks the devices where its tasks run. nulls: the
    trained null (default on: `config.NullsConfig`), trained after the real runs by the local
    executor (summary["trained_null"]: per group and kind, trained, reused or skipped)."""
    executor = executor or LocalExecutor()
    nulls = nulls or NullsConfig()
    plan.preflight(runs, out_dir, cache_dir, devices=executor.local_devices)
    events = events or Events()
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    outcomes = executor(runs, out_dir, cache_dir=cache_dir, events=events,
                        memory_budget=memory_budget, threads=threads)
    t_null = t_null_start = time.perf_counter()
    trained_null = _trained_null(executor, runs, out_dir, nulls, events=events,
                                 memory_budget=memory_budget, threads=threads)
    t_null = time.perf_counter() - t_null
    t_reports = time.perf_counter()
    reports = (analyze_groups(runs, out_dir, events=events, nulls=nulls, threads=threads)
               if analyze else {})
    t_reports = time.perf_counter() - t_reports
    summary = summarize(outcomes, reports)
    summary["trained_null"] = {"seconds": t_null, "kinds": list(nulls.kinds()),
                               "groups": trained_null}
    summary["seconds"] = time.perf_counter() - t0
    summary["phases"] = {"runs_s": t_null_start - t0, "trained_null_s": t_null,
                         "reports_s": t_reports, "page_s": None}
    summary["memory"] = {"peak_bytes": peak_memory_bytes(),
                         "estimate_bytes": plan.estimate(runs, memory_budget,
                                                         nulls=nulls)["peak_memory_bytes"]}
    if experiment is not None:
        summary["experiment"] = experiment
    write_json_atomic(out_dir / SUMMARY_JSON, summary)
    if analyze:
        from saefast.report import page  # its plots import matplotlib: only when a page is made

        t_page = time.perf_counter()
        page.write_html(out_dir, summary)
        summary["phases"]["page_s"] = time.perf_counter() - t_page
        summary["memory"]["peak_bytes"] = peak_memory_bytes()
        summary["seconds"] = time.perf_counter() - t0
        write_json_atomic(out_dir / SUMMARY_JSON, summary)  # with the page's time
    return summary


def _trained_null(executor: Executor, runs: list[RunSpec], out_dir: Path, nulls: NullsConfig,
                  **kw) -> dict:
    """The null runs, trained here after the real ones; a remote executor's sweep gets none
    (its reports say so), since they would train on the driver."""
    if isinstance(executor, LocalExecutor):
        return null_runs.train_null_runs(runs, out_dir, nulls, **kw)
    why = {"skipped": True, "reason": "the trained null is trained by the local executor only; "
           "run `saefast analyze` on a group's runs to train it here"}
    return {g: {kind: why for kind in nulls.kinds()} for g in groups(runs)}
