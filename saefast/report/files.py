"""A stability report directory: the one module that writes (and re-reads) its files.

    REPORT_DIR/
      stability.json                    the report (`assemble.compute_analysis`), plus
                                        `settings`, `files` and, from group_report, the
                                        caller's `extra` keys and `inputs_fingerprint`;
                                        written LAST, so its presence means "finished"
      stability_arrays.safetensors      its lists of >= 4,096 numbers (`report.arrays`:
                                        large dictionaries), read back by load_report
      feature_recurrence.csv            one row per matched feature (`stability.recurrence_rows`)
      feature_recurrence_live_only.csv  live_only=True
      pair_heatmap.png, cosine_histogram.png,            plots=True (figures: `saefast.report.plots`)
      seed_count_curve.png
      live_only_pair_heatmap.png, live_only_cosine_histogram.png, live_only_seed_count_curve.png

Entry points:

    analyze_runs(run_dirs, out_dir, *, threshold, top_k, live_only, solver, plots, baseline,
                 progress, acts) -> report         compute and write, always
    group_report(run_dirs, report_dir, *, threshold, top_k, live_only, solver, extra,
                 on_start, acts, ...) -> report    what a sweep calls per seed group: reuse the
                                                   stored report while its inputs are unchanged

    redraw(report_dir) -> [png paths]              re-plot from a stored stability.json
    write_recurrence_csv(report, path), write_plots(report, out_dir)

With baseline=True (the default) the report also gets summary["nulls"]: the isotropic,
covariance and activation nulls with the excess over each; `acts` is the activation store the
runs trained on (None: the isotropic and dictionary-covariance nulls only, and the report
says why). Where the nulls' data comes from is resolved here (`report.nulls.resolve`: part
of the reuse settings).

Every file is written atomically through `saefast.fsio`. The report itself is assembled in
`saefast.report.assemble`; nothing here computes a statistic.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable

from saefast.config import NullsConfig
from saefast.errors import ConfigError, RunDirError
from saefast.fsio import (
    atomic_open,
    atomic_path,
    check_output_dir,
    read_json,
    write_json_atomic,
)
from saefast.match.cache import MatchingCache
from saefast.report import arrays as report_arrays
from saefast.report import missing
from saefast.report import nulls as report_nulls
from saefast.report import plots as _plots
from saefast.report import trained_null as report_trained
from saefast.report.assemble import StepCallback, compute_analysis
from saefast.report.inputs import as_list
from saefast.runs.artifacts import WEIGHTS
from saefast.stats.stability import (
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    Progress,
    check_args,
    recurrence_rows,
)

STABILITY_JSON = "stability.json"
RECURRENCE_CSV = "feature_recurrence.csv"
RECURRENCE_CSV_LIVE = "feature_recurrence_live_only.csv"
HEATMAP_PNG = "pair_heatmap.png"
HISTOGRAM_PNG = "cosine_histogram.png"
SEED_CURVE_PNG = "seed_count_curve.png"
# in `settings`: a report stored by an older version is recomputed (2: evidence.by_null,
# 3: equivalence, 4: one isotropic null, so summary.baseline is summary.nulls' isotropic one,
# 5: PW-MCC beside the median; activation r leaves out features that never fire,
# 6: the dictionary-covariance null, 7: summary.subspace and the spectrum-matched null, 8: the
# bulk-matched share and the headline, 9: the encoder and activation views' floors
# (stats.view_nulls) and the attribution check's interval, 10: the trained null,
# 11: report.missing and the verdict's 0.10 share)
EVIDENCE_VERSION = 11
LIVE_ONLY_PREFIX = "live_only_"
RECURRENCE_COLUMNS = ["run", "feature_index", "n_recurs", "recurs_in", "best_cosine"]

# keys a report computes itself; `extra` may not overwrite them
_OWN_KEYS = {"pairs", "summary", "live_only", "settings", "files", "inputs_fingerprint",
             report_arrays.KEY}


# ---------------------------------------------------------------------------- single files


def write_recurrence_csv(report: dict, path: str | Path) -> Path:
    """Write recurrence_rows(report) as CSV (recurs_in joined with ';'), atomically."""
    path = Path(path)
    with atomic_open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RECURRENCE_COLUMNS)
        for r in recurrence_rows(report):
            w.writerow([r["run"], r["feature_index"], r["n_recurs"], ";".join(r["recurs_in"]),
                        repr(r["best_cosine"])])
    return path


def _save_figure(fig, path: Path) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:  # matplotlib reads the extension
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        _plots.close(fig)
    return path


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """Draw every figure of a report (and of its "live_only" report, prefixed live_only_)
    into out_dir as pair_heatmap.png and cosine_histogram.png; returns the paths written.
    A figure that cannot be drawn is left out, recorded under summary.missing."""
    out_dir = Path(out_dir)
    paths = []
    for rep, prefix in ((report, ""), (report.get("live_only"), LIVE_ONLY_PREFIX)):
        if rep and rep.get("pairs"):
            for name, draw in ((HEATMAP_PNG, _plots.pair_heatmap),
                               (HISTOGRAM_PNG, _plots.cosine_histogram),
                               (SEED_CURVE_PNG, _plots.seed_count_curve)):
                fig = missing.guarded(report, f"figure {prefix}{name}", lambda: draw(rep))
                if fig is not None:  # seed_count_curve: None for reports without evidence
                    paths.append(_save_figure(fig, out_dir / f"{prefix}{name}"))
    return paths


# ---------------------------------------------------------------------------- whole reports


def _settings(*, threshold, top_k, live_only, solver, plots, baseline,
              nulls: report_nulls.NullSource | None = None,
              spectrum_null: bool = False,
              trained: list[report_trained.TrainedSource] = ()) -> dict[str, Any]:
    """What the caller asked for (stored as report["settings"]; a stored report is reused only
    for the same settings). `nulls`: the null settings and data (None without a baseline);
    `trained`: the trained null's runs (`report.trained_null.settings`)."""
    return {"threshold": float(threshold), "top_k": int(top_k), "live_only": bool(live_only),
            "solver": str(solver), "plots": bool(plots), "baseline": bool(baseline),
            "nulls": report_nulls.settings(nulls) if baseline and nulls is not None else None,
            "spectrum_null": bool(spectrum_null),
            "trained_null": report_trained.settings(list(trained)),
            "evidence": EVIDENCE_VERSION}


def _write(report: dict, out_dir: Path, *, plots: bool, stamp: dict[str, Any]) -> dict:
    """Write the CSVs and plots of `report`, then stability.json (with `files` and `stamp`
    added) last, so a killed write leaves no stability.json claiming to be complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [RECURRENCE_CSV]
    write_recurrence_csv(report, out_dir / RECURRENCE_CSV)
    if report.get("live_only") is not None:
        write_recurrence_csv(report["live_only"], out_dir / RECURRENCE_CSV_LIVE)
        files.append(RECURRENCE_CSV_LIVE)
    if plots:
        files += [p.name for p in write_plots(report, out_dir)]
    files.append(STABILITY_JSON)
    report["files"] = files
    report.update(stamp)
    missing.scrub(report)  # a value that could not be computed is None, its path listed
    tree, arrays = report_arrays.split(report)  # long lists: beside, in binary
    entry = report_arrays.write(out_dir, arrays)
    if entry is not None:
        tree[report_arrays.KEY] = entry
        tree["files"] = report["files"] = files[:-1] + [report_arrays.ARRAYS_FILE, STABILITY_JSON]
    write_json_atomic(out_dir / STABILITY_JSON, tree)
    return report


def _with_files_step(on_step: StepCallback | None):
    """(on_step for compute_analysis, remembering the step count; a call announcing the last
    step, "files", which is this module's)."""
    if on_step is None:
        return None, lambda: None
    count = [0]

    def step(name: str, index: int, total: int) -> None:
        count[0] = total
        on_step(name, index, total)

    return step, lambda: on_step("files", count[0] - 1, count[0])


def analyze_runs(run_dirs, out_dir, *, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                 live_only=False, solver="auto", plots=True, baseline=True,
                 progress: Progress | None = None, acts=None, ablation: dict | None = None,
                 spectrum_null: bool = False,
                 trained_null: NullsConfig | None = NullsConfig(),
                 on_step: StepCallback | None = None) -> dict:
    """Compute the stability report of run_dirs and write it to out_dir.

    Writes feature_recurrence.csv, pair_heatmap.png and cosine_histogram.png (plots=True),
    then stability.json last (so its presence means the analysis finished). With
    live_only=True the live-only report is also computed and stored in the same JSON under
    the key "live_only", with feature_recurrence_live_only.csv and live_only_*.png beside.
    Every argument and run is checked before out_dir is created. Returns the report
    (report["files"] lists what was written, relative to out_dir; report["settings"] holds
    the arguments). acts: the activation store the runs trained on, for the data-shaped nulls
    and the held-out tokens. ablation: {tokens, model, hook, corpus} for summary.ablation;
    spectrum_null: also the spectrum-matched null (`assemble.compute_analysis`).
    trained_null: the trained null's settings (default on: the null runs found beside
    the runs, trained before by a sweep or `saefast analyze`; None: no trained null).
    on_step(name, index, total): as each step starts (`assemble.report_steps`).
    """
    check_output_dir(out_dir, "output folder")
    run_dirs = as_list(run_dirs)
    source = report_nulls.resolve(run_dirs, acts) if baseline else None
    trained = report_trained.resolve(run_dirs, trained_null) if baseline else []
    step, files_step = _with_files_step(on_step)
    report = compute_analysis(run_dirs, threshold=threshold, top_k=top_k, live_only=live_only,
                              solver=solver, baseline=baseline, progress=progress, nulls=source,
                              ablation=ablation, spectrum_null=spectrum_null,
                              trained=trained, on_step=step)
    report["settings"] = _settings(threshold=threshold, top_k=top_k, live_only=live_only,
                                   solver=solver, plots=plots, baseline=baseline, nulls=source,
                                   spectrum_null=spectrum_null, trained=trained)
    files_step()
    return _write(report, Path(out_dir), plots=plots, stamp={})


def inputs_fingerprint(run_dirs: Iterable[str | Path]) -> str:
    """16 hex digits naming the inputs of a report: each run's directory name and the size
    and mtime (ns) of its weights file, in sorted path order. Unchanged fingerprint, unchanged
    weights (a retrained run gets a new mtime)."""
    h = hashlib.sha256()
    for d in sorted(Path(p) for p in run_dirs):
        try:
            st = (d / WEIGHTS).stat()
        except OSError:
            raise RunDirError(f"{d}: missing {WEIGHTS}") from None
        h.update(f"{d.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _stored(report_dir: Path, fingerprint: str, settings: dict) -> dict | None:
    """The stored report when it is whole and was made from the same inputs and settings."""
    try:
        old = read_json(report_dir / STABILITY_JSON)
    except (OSError, ValueError):  # missing or corrupt: recompute
        return None
    if not isinstance(old, dict) or old.get("inputs_fingerprint") != fingerprint:
        return None
    if "settings" in old:
        same = old["settings"] == settings
    else:
        s = old.get("summary") or {}  # written before `settings` existed: what it records
        same = (s.get("threshold") == settings["threshold"]
                and s.get("top_k") == settings["top_k"]
                and ("live_only" in old) == settings["live_only"])
    if not same:
        return None
    try:
        return report_arrays.join(old, report_dir)
    except RunDirError:  # its side file is missing, damaged or another report's: recompute
        return None


def _identity(run_dirs, *, threshold, top_k, live_only, solver, plots, baseline, acts,
              trained_null: NullsConfig | None):
    """(inputs fingerprint, null source, trained null's runs, settings): what decides whether
    a stored report is reused."""
    source = report_nulls.resolve(run_dirs, acts) if baseline else None
    trained = report_trained.resolve(run_dirs, trained_null) if baseline else []
    return inputs_fingerprint(run_dirs), source, trained, _settings(
        threshold=threshold, top_k=top_k, live_only=live_only, solver=solver, plots=plots,
        baseline=baseline, nulls=source, trained=trained)


def stored_report(run_dirs, report_dir, *, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                  live_only=False, solver="auto", plots: bool = True, baseline: bool = True,
                  acts=None, trained_null: NullsConfig | None = NullsConfig()) -> dict | None:
    """The report `group_report` would return as it is, without computing anything; None
    when it would recompute."""
    run_dirs = as_list(run_dirs)
    fingerprint, _, _, settings = _identity(run_dirs, threshold=threshold, top_k=top_k,
                                            live_only=live_only, solver=solver, plots=plots,
                                            baseline=baseline, acts=acts,
                                            trained_null=trained_null)
    return _stored(Path(report_dir), fingerprint, settings)


def group_report(run_dirs, report_dir, *, threshold=DEFAULT_THRESHOLD, top_k=DEFAULT_TOP_K,
                 live_only=False, solver="auto", extra: dict[str, Any] | None = None,
                 on_start: Callable[[], None] | None = None, plots: bool = True,
                 baseline: bool = True, progress: Progress | None = None,
                 acts=None, matchings: MatchingCache | None = None,
                 trained_null: NullsConfig | None = NullsConfig(),
                 on_step: StepCallback | None = None) -> dict:
    """The report of one group of runs (a sweep's seed group) in report_dir, reused when it can be.

    Returns the stored report_dir/stability.json as is when its `inputs_fingerprint`
    (`inputs_fingerprint(run_dirs)`: names, sizes, mtimes of the runs' weights) and its
    `settings` (threshold, top_k, live_only, solver, plots, baseline, and the nulls' settings
    and data: `report_nulls.settings`, e.g. another `acts` store) are unchanged. Otherwise
    calls on_start() (when given), recomputes like `analyze_runs`, stamps the `extra` keys
    (e.g. {"group": name}) and then `inputs_fingerprint` into the report, and writes
    stability.json LAST, so a killed analysis is redone next time. A missing or corrupt stored
    report is simply recomputed. `extra` may not use the report's own keys. `matchings`: the
    sweep's cache of pair matchings (`match.cache`; a remote executor fills it while runs
    train), read before matching and filled with what is matched here. `trained_null`: the
    trained null's settings (its null runs, trained before, are part of the reuse settings).
    on_step(name, index, total): as each step of the report starts (`assemble.report_steps`).
    """
    check_args(threshold, top_k)
    extra = dict(extra or {})
    clash = sorted(set(extra) & _OWN_KEYS)
    if clash:
        raise ConfigError(f"group_report: extra may not set the report's own keys {clash}")
    report_dir = Path(report_dir)
    run_dirs = as_list(run_dirs)
    fingerprint, source, trained, settings = _identity(
        run_dirs, threshold=threshold, top_k=top_k, live_only=live_only, solver=solver,
        plots=plots, baseline=baseline, acts=acts, trained_null=trained_null)
    old = _stored(report_dir, fingerprint, settings)
    if old is not None:
        return old
    if on_start is not None:
        on_start()
    step, files_step = _with_files_step(on_step)
    report = compute_analysis(run_dirs, threshold=threshold, top_k=top_k, live_only=live_only,
                              solver=solver, baseline=baseline, progress=progress, nulls=source,
                              matchings=matchings, trained=trained,
                              on_step=step)
    report["settings"] = settings
    files_step()
    return _write(report, report_dir, plots=plots,
                  stamp={**extra, "inputs_fingerprint": fingerprint})


# ---------------------------------------------------------------------------- re-reading


def load_report(report_dir: str | Path) -> dict:
    """report_dir/stability.json; RunDirError (one line) when it is missing or corrupt."""
    path = Path(report_dir) / STABILITY_JSON
    if not path.is_file():
        raise RunDirError(f"{report_dir}: no {STABILITY_JSON}; is this a report folder?")
    report = read_json(path, error=RunDirError)  # corrupt or unreadable: one line naming it
    if not isinstance(report, dict) or "pairs" not in report or "summary" not in report:
        raise RunDirError(f"{path}: not a stability report (needs 'pairs' and 'summary')")
    return report_arrays.join(report, report_dir)  # its long lists, as numpy arrays


def redraw(report_dir: str | Path) -> list[Path]:
    """Re-plot every figure of the stored report_dir/stability.json into report_dir (for
    `saefast report`); stability.json itself is left as it is. Returns the PNG paths."""
    return write_plots(load_report(report_dir), report_dir)


# ---------------------------------------------------------------------------- a sweep's page
