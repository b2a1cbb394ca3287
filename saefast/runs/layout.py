"""The layout of a sweep's output folder OUT, named once:

    OUT/runs/<run>/                one SAE per folder (`runs.artifacts`)
    OUT/runs/.checkpoints/<pass>/  a pass's checkpoints while it trains (`train.checkpoints`)
    OUT/runs/.null_data/           streamed runs' null data (`data.stream_nulls`)
    OUT/runs/.null/<kind>-<key>/   a seed group's trained null: its own runs/ (and runs/.checkpoints/)
                                   of SAEs trained on a surrogate sample (`runs.trained_null`)
    OUT/reports/<group>/           a group's report (`report.files`)
    OUT/reports/.matchings/        pair matchings by content (`match.cache`)
    OUT/summary.json, OUT/report.html

Folders that start with a dot are not runs or reports of their own.
"""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = "runs"
REPORTS_DIR = "reports"
SUMMARY_JSON = "summary.json"
HTML_REPORT = "report.html"
CHECKPOINTS_DIR = ".checkpoints"
NULL_RUNS_DIR = ".null"


def runs_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / RUNS_DIR


def reports_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / REPORTS_DIR


def run_dir(out_dir: str | Path, run_name: str) -> Path:
    return runs_dir(out_dir) / run_name


def report_dir(out_dir: str | Path, group: str) -> Path:
    return reports_dir(out_dir) / group


def checkpoints_dir(out_dir: str | Path, pass_name: str) -> Path:
    return runs_dir(out_dir) / CHECKPOINTS_DIR / pass_name


def null_runs_dir(runs_parent: str | Path) -> Path:
    """Where the trained null runs of the runs in `runs_parent` (a sweep's OUT/runs) live."""
    return Path(runs_parent) / NULL_RUNS_DIR


def summary_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / SUMMARY_JSON


def html_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / HTML_REPORT
