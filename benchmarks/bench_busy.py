"""A sweep on a busy CPU (issue 13): the default study alone, beside a CPU hog, beside itself.

    python benchmarks/bench_busy.py [--sections pass,study,reports] [--json out.json]

pass    one pass of 5 seeds of the default study (30,000 tokens, blocks.0 and blocks.3,
        128 and 512 features), from its warm activation store: trained in this process with
        every thread inside each op (`passes.run_pass_here`, how passes ran before) against
        `passes.run_pass` (small dictionaries: seeds over worker processes, 1 thread each).
        The workers start once per group (timed apart: "first run_pass") and stay up for
        the rounds, as they stay up for a whole sweep. Rounds interleaved, medians. Weights
        are checked bitwise equal.
study   `saefast sweep experiments/seed_repro.yaml` as a user runs it (a fresh process and
        a fresh --out each time, one shared activation cache warmed first, so no harvest
        is timed): alone; beside one single-threaded CPU hog (`python -c 'while True:
        pass'`); beside a second identical sweep started at the same moment (each its own
        --out, the same cache); and alone with SAEFAST_SEED_WORKERS=off (every pass in one
        process with intra-op threads, the behaviour before). Alone and off run twice,
        interleaved, before and after the loaded runs (means). Ratios against alone, all in
        this run. On 2 cores a fair share beside one busy core or a second sweep is 2x.
reports the report phase of the default study: its runs (and trained null runs) trained
        once, then `saefast sweep` again in a fresh process on a fresh copy of them (file
        times kept, so nothing is retrained), which computes the 6 reports and the page:
        with the reports side by side in the seed workers (`sweep.analyze`, the default)
        against SAEFAST_SEED_WORKERS=off (one after the other in the sweep's process, how
        they ran before). Interleaved rounds, medians; the two sets of reports are checked
        to agree (every number within 1e-6).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, run_sections  # noqa: E402

STUDY = ROOT / "experiments" / "seed_repro.yaml"


def _sweep_cmd(out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "saefast.cli.main", "sweep", str(STUDY), "--out", str(out),
            "--cache-dir", str(cache)]


def _run(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def _wait(proc: subprocess.Popen, t0: float) -> float:
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"sweep failed:\n{err[-2000:]}")
    return time.perf_counter() - t0


def _warm_cache(cache: Path) -> None:
    from saefast.data import harvest
    from saefast.sweep import plan
    from saefast.sweep.experiment import expand, load_experiment

    for job in plan.harvest_jobs(expand(load_experiment(STUDY))):
        harvest.harvest(job.model, job.hooks, job.corpus, job.tokens, context_length=job.context_length,
                        drop_special_tokens=job.drop_special_tokens, device=job.device, cache_dir=cache)


def study_section(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="saefast-busy-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    try:
        _warm_cache(cache)
        runs: dict[str, list[float]] = {"alone": [], "alone, seed workers off (before)": []}

        def alone_and_off(r: int) -> None:  # interleaved, so that load drifts hit both alike
            t0 = time.perf_counter()
            runs["alone"].append(_wait(_run(_sweep_cmd(work / f"alone{r}", cache)), t0))
            t0 = time.perf_counter()
            runs["alone, seed workers off (before)"].append(_wait(
                _run(_sweep_cmd(work / f"off{r}", cache), {"SAEFAST_SEED_WORKERS": "off"}), t0))

        alone_and_off(0)
        seconds: dict[str, float] = {}

        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            t0 = time.perf_counter()
            seconds["beside one busy core"] = _wait(_run(_sweep_cmd(work / "hog", cache)), t0)
        finally:
            hog.kill()
            hog.wait()

        t0 = time.perf_counter()
        both = [_run(_sweep_cmd(work / f"pair{i}", cache)) for i in (1, 2)]
        pair = [_wait(p, t0) for p in both]
        seconds["beside a second sweep (first)"] = pair[0]
        seconds["beside a second sweep (second)"] = pair[1]
        alone_and_off(1)
        same = _same_weights(work / "alone0", [work / d for d in ("hog", "pair1", "pair2", "off0",
                                                                  "alone1", "off1")])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # the mean of the two alone runs (one before, one after the loaded runs)
    seconds = {k: sum(v) / len(v) for k, v in runs.items()} | seconds
    alone = seconds["alone"]
    rows = [[name, f"{t:.1f} s", f"{t / alone:.2f}x"] for name, t in seconds.items()]
    return {"title": "the default study (30 runs), fresh --out, shared warm cache; time vs alone",
            "columns": ["how", "time", "vs alone"], "rows": rows,
            "results": {"seconds": seconds, "alone_runs_s": runs,
                        "ratios": {k: v / alone for k, v in seconds.items()},
                        "weights_identical": same}}


def reports_section(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="saefast-reports-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    modes = {"reports side by side in the seed workers": {},
             "one after the other (SAEFAST_SEED_WORKERS=off)": {"SAEFAST_SEED_WORKERS": "off"}}
    times: dict[str, list[float]] = {m: [] for m in modes}
    try:
        _warm_cache(cache)
        _wait(_run(_sweep_cmd(work / "trained", cache)), time.perf_counter())
        for r in range(args.rounds):
            for i, (mode, env) in enumerate(modes.items()):
                out = work / f"r{r}-{i}"
                out.mkdir()
                shutil.copytree(work / "trained" / "runs", out / "runs")  # copy2: times kept
                t0 = time.perf_counter()
                times[mode].append(_wait(_run(_sweep_cmd(out, cache), env), t0))
        agree = _reports_agree(work / "r0-0", work / "r0-1")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {m: sorted(t)[len(t) // 2] for m, t in times.items()}
    base = med["one after the other (SAEFAST_SEED_WORKERS=off)"]
    rows = [[m, f"{t:.1f} s", f"{base / t:.2f}x"] for m, t in med.items()]
    return {"title": f"the default study's 6 reports and page, median of {args.rounds} "
                     "interleaved rounds (nothing retrained)",
            "columns": ["how", "time", "speedup"], "rows": rows,
            "results": {"times_s": times, "median_s": med, "reports_agree": agree}}


def _reports_agree(a: Path, b: Path, tol: float = 1e-6) -> bool:
    """Every stored report of sweep folder a equals b's: strings (other than paths) equal,
    numbers within tol (BLAS sums differ by thread count in the last bits)."""
    import json

    def same(x, y) -> bool:
        if isinstance(x, dict):
            return isinstance(y, dict) and all(
                k in ("timings", "inputs_fingerprint") or "seconds" in k or same(x[k], y.get(k))
                for k in x)
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(map(same, x, y))
        if isinstance(x, (int, float)) and not isinstance(x, bool) and isinstance(y, (int, float)):
            return x == y or abs(x - y) <= tol or (x != x and y != y)  # NaN: both
        return x == y

    files = sorted((a / "reports").glob("*/stability.json"))
    return bool(files) and all(
        same(json.loads(f.read_text().replace(str(a), "OUT")),
             json.loads((b / "reports" / f.parent.name / f.name).read_text().replace(str(b), "OUT")))
        for f in files)


def _same_weights(ref: Path, others: list[Path]) -> bool:
    files = sorted((ref / "runs").glob("*/sae_weights.safetensors"))
    return bool(files) and all(
        (o / "runs" / f.parent.name / f.name).read_bytes() == f.read_bytes() for o in others for f in files)


def pass_section(args: argparse.Namespace) -> dict:
    import torch

    from saefast.data import harvest
    from saefast.sweep import passes, plan, seed_pool
    from saefast.sweep.experiment import expand, groups, load_experiment

    work = Path(tempfile.mkdtemp(prefix="saefast-busy-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    runs = [r for r in expand(load_experiment(STUDY)) if r.config.data.tokens == 30000]
    seconds: dict[str, dict[str, list[float]]] = {}
    try:
        for gname, members in groups(runs).items():
            (job,) = plan.harvest_jobs(members)
            store = harvest.harvest(job.model, job.hooks, job.corpus, job.tokens,
                                    context_length=job.context_length, cache_dir=cache)[job.hooks[0]]
            times = seconds.setdefault(gname, {"one process, intra-op threads": [], "run_pass": [],
                                               "first run_pass (workers starting)": []})
            seed_pool.shutdown()
            t0 = time.perf_counter()
            passes.run_pass(members, store, work / f"{gname}-first")
            times["first run_pass (workers starting)"].append(time.perf_counter() - t0)
            for r in range(args.rounds):  # the workers stay up, as they do for a whole sweep
                t0 = time.perf_counter()
                passes.run_pass_here(members, store, work / f"{gname}-here-{r}")
                times["one process, intra-op threads"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                passes.run_pass(members, store, work / f"{gname}-new-{r}")
                times["run_pass"].append(time.perf_counter() - t0)
            seed_pool.shutdown()
            a = sorted((work / f"{gname}-here-0" / "runs").glob("*/sae_weights.safetensors"))
            assert all((work / f"{gname}-new-0" / "runs" / f.parent.name / f.name).read_bytes()
                       == f.read_bytes() for f in a), f"{gname}: weights differ"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows, results = [], {}
    for gname, times in seconds.items():
        old = sorted(times["one process, intra-op threads"])[len(times["run_pass"]) // 2]
        new = sorted(times["run_pass"])[len(times["run_pass"]) // 2]
        first = times["first run_pass (workers starting)"][0]
        rows.append([gname, f"{old:.2f} s", f"{new:.2f} s", f"{old / new:.2f}x", f"{first:.2f} s"])
        results[gname] = {"times_s": times, "median_old_s": old, "median_new_s": new,
                          "speedup": old / new, "first_new_s": first}
    return {"title": f"one pass of 5 seeds, {torch.get_num_threads()} threads, median of "
                     f"{args.rounds} interleaved (workers up, as in a sweep)",
            "columns": ["group", "one process", "run_pass", "speedup", "first run_pass"],
            "rows": rows,
            "results": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="pass,study")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", help="an activation cache to use (default: a fresh one, "
                                            "harvested first and not timed)")
    parser.add_argument("--json", help="write the results here")
    run_sections(parser.parse_args(argv), {"pass": pass_section, "study": study_section,
                                           "reports": reports_section})


if __name__ == "__main__":
    main()
