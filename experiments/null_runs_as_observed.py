"""A calibration check on a study's own recipe: report a group's trained-null runs (the same
recipe, seeds and inits trained on Gaussian surrogate activations with the data's mean and
covariance: nothing sparse to find) as if they were real runs, and print the share beyond
chance they get against the dictionary null. A share near 0 there means the real group's
share is not what training on structureless data of that covariance gives.

    python experiments/null_runs_as_observed.py OUT [KIND-KEY]

OUT: a sweep's output folder; KIND-KEY: a folder under OUT/runs/.null/ (default: each one).
Matchings are read from and kept in OUT/reports/.matchings (the report matched these pairs).
"""

import sys
import time
from pathlib import Path

from saefast.match.cache import MatchingCache
from saefast.report.assemble import compute_analysis


def main(out: str, key: str | None = None) -> int:
    folders = sorted(p for p in (Path(out) / "runs" / ".null").glob(key or "*") if p.is_dir())
    if not folders:
        print(f"no trained-null folders under {out}/runs/.null")
        return 1
    for folder in folders:
        runs = sorted((folder / "runs").glob("s*"))
        t0 = time.perf_counter()
        rep = compute_analysis(runs, matchings=MatchingCache(Path(out) / "reports" / ".matchings"))
        head = rep["summary"]["evidence"]["headline"]
        share = head.get("share") or {}
        ci = "[" + ", ".join(f"{x:+.3f}" for x in share.get("ci") or []) + "]"
        print(f"{folder.name}: {len(runs)} null runs as observed, median matched cosine "
              f"{rep['summary']['global_median']:.3f}; share beyond the {head.get('null')} null "
              f"{share.get('estimate', float('nan')):+.3f} {ci} "
              f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
