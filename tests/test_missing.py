"""No statistic can crash a report (saefast.report.missing): a step that fails, or a value
that is not finite, is recorded as missing with its reason, and the rest is written."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from saefast.errors import ConfigError
from saefast.report import files as reports
from saefast.report import missing

from planted_runs import make_run


@pytest.fixture
def lenient(monkeypatch):
    """The guard as users meet it (the suite runs with SAEFAST_STRICT=1)."""
    monkeypatch.delenv(missing.STRICT_ENV, raising=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root, f"s{i}", seed=i)[0] for i in range(1, 4)]


def test_guard_records_the_error_and_goes_on(lenient):
    report = {"summary": {}}
    assert missing.guarded(report, "subspace", lambda: 1 / 0) is None
    assert missing.guarded(report, "nulls", lambda: 7) == 7
    assert report["summary"]["missing"] == {"subspace": "ZeroDivisionError: division by zero"}
    (line,) = missing.warnings(report, "g1")
    assert line.startswith("g1: the subspace step could not be computed (ZeroDivisionError")


def test_guard_lets_user_errors_and_strict_mode_through(lenient, monkeypatch):
    def bad_config():
        raise ConfigError("k must be <= n_features")

    with pytest.raises(ConfigError):
        missing.guarded({}, "ablation", bad_config)
    monkeypatch.setenv(missing.STRICT_ENV, "1")
    with pytest.raises(ZeroDivisionError):
        missing.guarded({}, "subspace", lambda: 1 / 0)


def test_scrub_empties_non_finite_values_and_lists_them():
    report = {"summary": {"a": float("nan"), "b": [1.0, np.float32("inf")], "c": "ok"},
              "pairs": [{"gap_bound": np.float64("nan"), "x": np.array([1.0, np.nan])}]}
    missing.scrub(report)
    assert report["summary"]["a"] is None and report["summary"]["b"] == [1.0, None]
    assert report["pairs"][0]["x"] == [1.0, None]
    assert report["summary"]["missing"]["non_finite"] == [
        "summary.a", "summary.b[1]", "pairs[0].gap_bound", "pairs[0].x[1]"]
    json.dumps(report, allow_nan=False)  # strict JSON now takes it
    (line,) = missing.warnings(report, "g")
    assert "4 value(s) could not be computed" in line and "and 1 more" in line


def test_a_failing_step_leaves_the_rest_of_the_report(runs, tmp_path, lenient, monkeypatch):
    from saefast.stats import subspace

    def broken(*a, **k):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(subspace, "subspace_block", broken)
    rep = reports.analyze_runs(runs, tmp_path / "r", plots=True)
    on_disk = json.loads((tmp_path / "r" / "stability.json").read_text())
    assert on_disk["summary"]["missing"] == {"subspace": "LinAlgError: SVD did not converge"}
    assert "subspace" not in on_disk["summary"]
    # the steps after the failed one ran: the agreement of the views, the figures
    assert "agreement" in on_disk["summary"]["equivalence"]
    assert "pair_heatmap.png" in rep["files"] and (tmp_path / "r" / "pair_heatmap.png").is_file()


def test_a_nan_statistic_is_written_as_missing(runs, tmp_path, lenient, monkeypatch):
    """The crash a 16K-feature sweep met: an uncertified correlation matching's NaN gap
    bound reached the strict JSON writer. Any NaN a statistic returns now lands as null,
    its path listed (here the views' agreement returns one)."""
    from saefast.stats import agreement

    real = agreement.agreement
    monkeypatch.setattr(agreement, "agreement",
                        lambda pairs, n: dict(real(pairs, n), gap_bound=float("nan")))
    reports.analyze_runs(runs, tmp_path / "r", plots=False)
    on_disk = json.loads((tmp_path / "r" / "stability.json").read_text())
    assert on_disk["summary"]["missing"] == {
        "non_finite": ["summary.equivalence.agreement.gap_bound"]}
    assert on_disk["summary"]["equivalence"]["agreement"]["gap_bound"] is None


def test_cli_prints_the_missing_step_and_exits_zero(runs, tmp_path):
    """Through `saefast analyze` (a child process without SAEFAST_STRICT), with a step
    broken in a sitecustomize the child imports."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "from saefast.stats import agreement\n"
        "def broken(*a, **k):\n    raise RuntimeError('no views to compare')\n"
        "agreement.agreement = broken\n")
    import os

    env = {k: v for k, v in os.environ.items() if k != missing.STRICT_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env.get("PYTHONPATH", "")])
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "saefast.cli.main", "analyze", *map(str, runs),
                           "--out", str(out)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "the agreement step could not be computed (RuntimeError: no views to compare)" \
        in " ".join(proc.stderr.split())
    saved = json.loads((out / "stability.json").read_text())
    assert saved["summary"]["missing"]["agreement"].startswith("RuntimeError")
    assert not math.isnan(saved["summary"]["global_median"])


def test_each_step_is_announced_in_order_then_the_files(runs, tmp_path):
    """The progress a report gives (`on_step`): every step of `report_steps`, in order, with
    its index and the count, "files" last; through a sweep's rich events without error."""
    from rich.console import Console

    from saefast.cli.tables import RichEvents
    from saefast.report.assemble import report_steps

    seen = []
    events = RichEvents(Console(file=open(tmp_path / "out.txt", "w"), force_terminal=True))
    events.report_started("g")

    def step(name, index, total):
        seen.append((name, index, total))
        events.report_step("g", name, index, total)

    reports.analyze_runs(runs, tmp_path / "r", plots=False, live_only=True, on_step=step,
                         progress=lambda i, n, _p: events.report_pair("g", i, n))
    events.close()
    # no run has a dead feature: the live-only step is left out
    names = report_steps(live=False, spectrum=False, nulls=True, baseline=True, ablation=False)
    assert [s[0] for s in seen] == names and names[-1] == "files"
    assert [s[1] for s in seen] == list(range(len(names)))
    assert {s[2] for s in seen} == {len(names)}
