"""sweep/ray/ (executor, driver, tasks): the Ray executor (issue 15) on a local Ray instance
(2 CPUs, loopback only): the same reports and bitwise the same weights as the local
executor, a killed task retried, a failing pass reported while the rest finish, a restarted
driver resuming, and Ray absent said in one line. Without Ray: the pair tasks' matchings
are every matching a report makes, and the probe."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saefast.cli.main import main
from saefast.sweep.events import Events
from saefast.sweep.experiment import Experiment, expand

HOOK = "blocks.0.hook_resid_pre"


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the wrapped runners below
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def _args(corpus, out, cache, *extra):
    return ["sweep", "--model", "tiny", "--hook", HOOK, "--corpus", str(corpus), "--tokens", "1500",
            "--features", "16", "--k", "2", "--epochs", "2", "--seeds", "3",
            "--axis", "sae.k=2,4", "--out", str(out), "--cache-dir", str(cache), *extra]


def _runs(corpus, seeds=(1, 2, 3)):
    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "data.corpus": str(corpus),
                           "data.tokens": 1500, "sae.n_features": 16, "train.epochs": 2})
    return expand(exp, axes=[("sae.k", [2, 4]), ("train.seed", list(seeds))])


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {d.name: load_file(str(d / "sae_weights.safetensors"))
            for d in sorted((out / "runs").iterdir()) if not d.name.startswith(".")}


def _comparable(obj, out: Path):
    """A report without what differs between two sweeps of the same study: timings, and
    its own output folder in paths."""
    if isinstance(obj, dict):
        return {k: _comparable(v, out) for k, v in obj.items()
                if k not in ("timings", "seconds", "inputs_fingerprint")}
    if isinstance(obj, list):
        return [_comparable(v, out) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(out), "OUT")
    return obj


def test_address_needs_the_ray_executor(capsys, tmp_path, corpus):
    assert main(_args(corpus, tmp_path / "out", tmp_path / "cache", "--address", "auto")) == 2
    assert capsys.readouterr().err.strip() == "error: --address needs --executor ray"


def test_ray_absent_is_one_line_telling_how_to_install(monkeypatch, capsys, tmp_path, corpus):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(_args(corpus, tmp_path / "out", tmp_path / "cache", "--executor", "ray"))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == "error: --executor ray needs Ray: pip install 'saefast[ray]'"
    assert not (tmp_path / "out").exists()


def test_ray_sweep_gives_the_local_sweeps_weights_and_reports(ray_local, corpus, tmp_path,
                                                              monkeypatch, capsys):
    from saefast.match import cache as match_cache

    cache = tmp_path / "cache"
    assert main(_args(corpus, tmp_path / "local", cache)) == 0
    # the report step of the Ray sweep only reads the matchings its pair tasks left
    monkeypatch.setattr(match_cache, "match_decoders", _no_matching)
    assert main(_args(corpus, tmp_path / "ray", cache, "--executor", "ray")) == 0
    printed = capsys.readouterr().out
    assert "Ray cluster" in printed and "pair batches" in printed
    local, remote = _weights(tmp_path / "local"), _weights(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len(local) == 6
    for name in local:
        for key in local[name]:
            assert torch.equal(local[name][key], remote[name][key]), (name, key)
    for group in ("L0-f16-k2-t1500", "L0-f16-k4-t1500"):
        a, b = (json.loads((tmp_path / o / "reports" / group / "stability.json").read_text())
                for o in ("local", "ray"))
        assert _comparable(a, tmp_path / "local") == _comparable(b, tmp_path / "ray")
    sa, sb = (json.loads((tmp_path / o / "summary.json").read_text()) for o in ("local", "ray"))
    assert _comparable(sa["groups"], tmp_path / "local") == _comparable(sb["groups"], tmp_path / "ray")
    # 2 groups x 3 pairs x (decoder, encoder) matchings from the pair tasks, and the
    # activation-correlation matching the driver's report adds (it needs the held-out rows)
    assert len(list((tmp_path / "ray" / "reports" / ".matchings").glob("*.npz"))) == 2 * 3 * 3


def _no_matching(*args, **kwargs):
    raise AssertionError("the report matched a pair the Ray executor should have matched")


class _DieHalfWay(Events):
    """The pass's step events (the only ones a pass emits), but the worker is killed outright
    half-way through its steps, once in the whole sweep (the marker file says it happened)."""

    def __init__(self, events, marker: Path):
        self.events, self.marker = events, marker

    def run_step(self, step, total, stats):
        if step >= total // 2 and not self.marker.exists():
            self.marker.write_text(f"killed at step {step} of {total}")
            os._exit(1)
        self.events.run_step(step, total, stats)


def _crash_once(runs, data, out_dir, *, marker: str, events=None, **kwargs):
    """passes.run_pass, whose first pass of the sweep dies half-way through training."""
    from saefast.sweep.passes import run_pass

    with open(Path(marker).with_suffix(".log"), "a") as f:
        f.write(f"{runs[0].group}\n")
    return run_pass(runs, data, out_dir, events=_DieHalfWay(events, Path(marker)), **kwargs)


def test_a_task_killed_mid_way_is_retried(ray_local, corpus, tmp_path):
    from saefast.sweep import run_sweep
    from saefast.sweep.ray.executor import RayExecutor

    marker = tmp_path / "crash"
    runner = functools.partial(_crash_once, marker=str(marker))
    summary = run_sweep(_runs(corpus, seeds=(1, 2)), tmp_path / "out", cache_dir=tmp_path / "cache",
                        analyze=False, executor=RayExecutor(retries=1, run_pass=runner))
    assert summary["runs"]["done"] == 4 and not summary["runs"]["failed"]
    tries = marker.with_suffix(".log").read_text().split()
    assert marker.exists() and len(tries) == 3  # two passes, one of them tried twice


def _fail_k4(runs, data, out_dir, **kwargs):
    from saefast.sweep.passes import run_pass

    if runs[0].config.sae.k == 4:
        raise ValueError("this pass always fails")
    return run_pass(runs, data, out_dir, **kwargs)


def test_a_pass_that_keeps_failing_is_reported_and_the_rest_finish(ray_local, corpus, tmp_path):
    from saefast.sweep import run_sweep
    from saefast.sweep.ray.executor import RayExecutor

    summary = run_sweep(_runs(corpus, seeds=(1, 2)), tmp_path / "out", cache_dir=tmp_path / "cache",
                        executor=RayExecutor(retries=1, run_pass=_fail_k4))
    failed = summary["runs"]["failed"]
    assert summary["runs"]["done"] == 2
    assert sorted(f["name"] for f in failed) == ["L0-f16-k4-t1500-s1", "L0-f16-k4-t1500-s2"]
    assert all("this pass always fails" in f["error"] for f in failed)
    assert (tmp_path / "out" / "reports" / "L0-f16-k2-t1500" / "stability.json").is_file()


class _StopAfterFirstRun(Events):
    """A driver that dies (Ctrl-C) as soon as one run has finished."""

    def run_finished(self, outcome):
        if outcome.status == "done":
            raise KeyboardInterrupt


def test_a_restarted_driver_resumes_without_redoing_finished_runs(ray_local, corpus, tmp_path):
    from saefast.sweep import run_sweep
    from saefast.sweep.ray.executor import RayExecutor

    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "data.corpus": str(corpus),
                           "data.tokens": 1500, "sae.n_features": 16, "train.epochs": 2})
    runs = expand(exp, axes=[("sae.k", [2, 3, 4, 5]), ("train.seed", [1, 2])])  # 4 passes
    out = tmp_path / "out"

    def mtimes():
        return {d.name: (d / "sae_weights.safetensors").stat().st_mtime_ns
                for d in (out / "runs").iterdir() if not d.name.startswith(".")}

    # a driver killed after one group: its runs exist, the others' do not
    first = [r for r in runs if r.config.sae.k == 2]
    run_sweep(first, out, cache_dir=tmp_path / "cache", analyze=False, executor=RayExecutor())
    # a driver interrupted mid-sweep (Ctrl-C after its next finished pass): the outstanding
    # tasks are cancelled, as when a driver dies
    with pytest.raises(KeyboardInterrupt):
        run_sweep(runs, out, cache_dir=tmp_path / "cache", events=_StopAfterFirstRun(),
                  executor=RayExecutor())
    before = mtimes()
    assert {r.name for r in first} < set(before)
    summary = run_sweep(runs, out, cache_dir=tmp_path / "cache", executor=RayExecutor())
    assert summary["runs"]["skipped"] == len(before)
    assert summary["runs"]["done"] == len(runs) - len(before) and not summary["runs"]["failed"]
    after = mtimes()
    assert len(after) == len(runs)
    assert all(after[name] == mtime for name, mtime in before.items())  # untouched
    # once more: every run done and every report current, so no task at all
    seen = _Progress()
    again = run_sweep(runs, out, cache_dir=tmp_path / "cache", events=seen, executor=RayExecutor())
    assert again["runs"]["skipped"] == len(runs)
    assert not seen.progress or (seen.progress[-1].passes["done"] == 0
                                 and seen.progress[-1].pairs["done"] == 0)
    assert mtimes() == after


class _Progress(Events):
    def __init__(self):
        self.progress = []

    def cluster_progress(self, progress):
        self.progress.append(progress)


def test_a_streamed_group_opens_its_stream_in_the_task(ray_local, corpus, tmp_path):
    """data.cache false: no store; the task runs the model itself (the driver loads none)."""
    from saefast.sweep import run_sweep
    from saefast.sweep.ray.executor import RayExecutor

    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "data.corpus": str(corpus),
                           "data.tokens": 1500, "data.cache": False, "sae.n_features": 16,
                           "sae.k": 2, "train.epochs": 1})
    runs = expand(exp, axes=[("train.seed", [1, 2])])
    for out, executor in (("local", None), ("ray", RayExecutor())):
        summary = run_sweep(runs, tmp_path / out, cache_dir=tmp_path / "cache", analyze=False,
                            executor=executor)
        assert summary["runs"]["done"] == 2
    assert not (tmp_path / "cache" / "activations").exists()
    local, remote = _weights(tmp_path / "local"), _weights(tmp_path / "ray")
    assert sorted(local) == sorted(remote) and len(local) == 2
    for name in local:
        assert all(torch.equal(local[name][k], remote[name][k]) for k in local[name]), name


def test_info_says_whether_ray_is_installed(capsys):
    assert main(["info"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--executor ray" in out


def test_the_probe_names_what_a_node_cannot_see(tmp_path):
    from saefast.sweep.ray.tasks import probe

    seen, stale = tmp_path / "seen", tmp_path / "stale"
    seen.write_text("token")
    stale.write_text("older")
    assert probe([str(seen), str(stale), str(tmp_path / "missing")], "token") == \
        [str(stale), str(tmp_path / "missing")]


@pytest.mark.parametrize("live_only", [False, True])
def test_pair_tasks_make_every_matching_the_report_reads(corpus, tmp_path, monkeypatch, live_only):
    """tasks.match_pairs (what a pair task runs, here without Ray) leaves in the sweep's
    cache every matching the group report then makes (plan.report_matchings, live-only
    included): the report matches nothing itself."""
    from saefast.match import cache as match_cache
    from saefast.sweep import run_sweep, threads
    from saefast.sweep.analyze import analyze_groups, matching_cache
    from saefast.sweep.ray.tasks import match_pairs

    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "data.corpus": str(corpus),
                           "data.tokens": 1500, "sae.n_features": 16, "sae.k": 2,
                           "train.epochs": 1, "match.live_only": live_only})
    runs = expand(exp, axes=[("train.seed", [1, 2])])
    out = tmp_path / "out"
    run_sweep(runs, out, cache_dir=tmp_path / "cache", analyze=False)
    a, b = (str(out / "runs" / r.name) for r in runs)
    folder = matching_cache(out).folder
    with threads.torch_threads(torch.get_num_threads()):  # a task sets torch's threads
        assert match_pairs([(a, b)], str(folder), match=runs[0].config.match, threads=1) == []
    assert len(list(folder.glob("*.npz"))) == (3 if live_only else 2)
    monkeypatch.setattr(match_cache, "match_decoders", _no_matching)
    (report,) = analyze_groups(runs, out).values()
    assert report["summary"]["n_pairs"] == 1 and ("live_only" in report) == live_only
