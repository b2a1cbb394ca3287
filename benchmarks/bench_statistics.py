"""What the statistics of a report cost next to training: the default study's reports with no
statistics, with the evidence under the isotropic null only, and under all three nulls.

    python benchmarks/bench_statistics.py [--out DIR] [--rounds 2] [--json out.json]

The study (experiments/seed_repro.yaml: 30 runs in 6 groups, MiniLM, 2 layers x 3 sizes x
5 seeds) is trained once into --out (reused when it is already there). Then, round after
round, each variant recomputes every group's report (full + live-only) in a fresh process
(the nulls are memoised per process, so a warm process would hide their cost):

  none       reports without a baseline: matching, pooled statistics, recurrence, plots
  isotropic  + the three nulls' summaries and the evidence judged against the isotropic null
  all        + the evidence judged against the covariance and activation nulls too (default)

Reported: the median seconds of each variant, the ratio to `none`, and what each adds over
`none` as a share of the study's first run (harvest, training and its reports, timed here
when --out is new).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, print_table, write_json  # noqa: E402

STUDY = ROOT / "experiments" / "seed_repro.yaml"

# one variant's reports in this (fresh) process; prints the seconds the reports took
_RUNNER = """
import sys, time
from pathlib import Path
from saefast.report import files as reports
from saefast.stats import null_summary
from saefast.sweep import analyze, experiment
variant, out, study = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
runs = experiment.expand(experiment.load_experiment(study))
if variant == "none":
    real = reports.group_report
    reports.group_report = lambda *a, **k: real(*a, **{**k, "baseline": False})
elif variant == "isotropic":
    null_summary.null_models = lambda *a, **k: []
t0 = time.perf_counter()
analyze.analyze_groups(runs, out)
print(time.perf_counter() - t0)
"""


def _train(out: Path, cache: Path) -> float | None:
    """Seconds of the study's first run (harvest, training, its reports), None if reused."""
    if (out / "summary.json").is_file():
        return None
    t0 = time.perf_counter()
    cli = "import sys; from saefast.cli.main import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", cli, "sweep", str(STUDY), "--out", str(out),
                    "--cache-dir", str(cache)], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t0


def _reports(variant: str, out: Path) -> float:
    shutil.rmtree(out / "reports", ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", _RUNNER, variant, str(out), str(STUDY)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="the study's output folder (trained once; default: a temp dir)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    out = Path(args.out) if args.out else tmp / "out"
    study_s = _train(out, tmp / "cache")
    variants = ("none", "isotropic", "all")
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v in variants:
            times[v].append(_reports(v, out))
    med = {v: sorted(ts)[len(ts) // 2] for v, ts in times.items()}
    rows = [[v, f"{med[v]:.1f}", f"{med[v] / med['none']:.2f}x",
             "-" if study_s is None else f"{(med[v] - med['none']) / study_s:.0%}"]
            for v in variants]
    title = "default study reports" + ("" if study_s is None else
                                       f" (the study's first run: {study_s:.0f} s)")
    print_table(title, ["variant", "reports s", "vs none", "added / first run"], rows)
    write_json(args.json, {"machine": machine(), "study_first_run_s": study_s,
                           "report_seconds": times, "median_s": med})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
