"""sweep/threads.py, sweep/passes.py's run_pass, sweep/seed_pool.py and sweep/seed_worker.py
(issue 13): the thread budget and where a pass's seeds run, which never changes a seed's
weights; progress of parallel seeds reaches Events; a failing worker raises; two sweeps on
one cold cache share it (the store's write lock, data/store.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from saefast.config import SAEConfig, TrainConfig
from saefast.errors import ConfigError
from saefast.sweep import passes, threads
from saefast.sweep.events import Events
from saefast.sweep.experiment import Experiment, expand
from saefast.train.trainer import train_saes

HOOK = "blocks.0.hook_resid_pre"


def test_small_dictionaries_go_to_workers_large_ones_and_streams_stay():
    small = dict(steps=10_000, batch_size=256, threads=2)
    assert threads.plan_pass(5, 128, 384, **small) == threads.PassPlan(2, 1)
    assert threads.plan_pass(5, 128, 384, **{**small, "threads": 4}) == threads.PassPlan(4, 1)
    assert threads.plan_pass(3, 128, 384, **{**small, "threads": 8}) == threads.PassPlan(3, 2)
    assert threads.plan_pass(1, 128, 384, **small) == threads.PassPlan(1, 1)  # one seed: here
    assert threads.plan_pass(5, 128, 384, **{**small, "steps": 4}) == threads.PassPlan(1, 1)
    assert threads.plan_pass(5, 16384, 768, **small) == threads.PassPlan(1, 2)
    assert threads.plan_pass(5, 128, 384, cached=False, **small) == threads.PassPlan(1, 2)
    assert threads.plan_pass(5, 128, 384, device="cuda", **small) == threads.PassPlan(1, 2)
    assert threads.plan_pass(5, 128, 384, **{**small, "threads": 1}) == threads.PassPlan(1, 1)


def test_thread_budget_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.configured() == 3 and threads.configured(1) == 1
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(ConfigError, match="SAEFAST_THREADS"):
        threads.configured()
    with pytest.raises(ConfigError, match=">= 1"):
        threads.configured(0)


def test_split_is_contiguous_and_balanced():
    assert threads.split([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert threads.split([1, 2], 4) == [[1], [2]]


def _weights(results):
    return [r.sae.state_dict() for r in results]


def test_a_seed_is_the_same_alone_in_a_group_and_with_1_or_2_threads():
    x = torch.randn(3000, 64, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    cfg = TrainConfig(epochs=2, batch_size=128)
    runs = {}
    for n_threads in (1, 2):
        with threads.torch_threads(n_threads):
            runs[n_threads, "group"] = _weights(train_saes(x[:2500], x[2500:], SAEConfig(96, 4), cfg, [1, 2, 3]))
            runs[n_threads, "alone"] = _weights(train_saes(x[:2500], x[2500:], SAEConfig(96, 4), cfg, [2]))
    reference = runs[1, "alone"][0]
    for key, w in runs.items():
        got = w[1] if key[1] == "group" else w[0]
        for name, value in reference.items():
            assert torch.equal(got[name], value), (key, name)


def _runs(corpus, seeds, tmp_cache):
    exp = Experiment(base={"model.name": "tiny", "model.hook": HOOK, "model.context_length": 32,
                           "data.corpus": str(corpus), "data.tokens": 2000, "sae.n_features": 48,
                           "sae.k": 4, "train.epochs": 2, "train.batch_size": 64},
                     grid={"train.seed": seeds})
    return expand(exp)


def _run_weights(out, runs):
    return {r.name: load_file(str(out / "runs" / r.name / "sae_weights.safetensors")) for r in runs}


class _Steps(Events):
    def __init__(self):
        self.steps, self.evaluated = [], []

    def run_step(self, step, total, stats):
        self.steps.append((step, total, stats))

    def run_evaluation(self, done, total):
        self.evaluated.append((done, total))


def test_seeds_in_worker_processes_equal_the_seeds_trained_here(corpus, tmp_path, monkeypatch):
    from saefast.data.harvest import harvest

    monkeypatch.setenv("SAEFAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(threads, "MIN_PARALLEL_WORK", 0)  # this tiny pass would stay here
    store = harvest("tiny", [HOOK], str(corpus), 2000, context_length=32)[HOOK]
    runs = _runs(corpus, [1, 2, 3], tmp_path)
    events = _Steps()
    parallel = passes.run_pass(runs, store, tmp_path / "par", events=events, threads=2)
    assert [o.status for o in parallel] == ["done"] * 3
    assert [o.spec.name for o in parallel] == [r.name for r in runs]
    info = json.loads((tmp_path / "par" / "runs" / runs[0].name / "run.json").read_text())
    assert info["timings"]["seeds_trained_together"] == 2  # seeds 1, 2 in one worker; 3 in the other
    with threads.torch_threads(2):
        passes.run_pass_here(runs, store, tmp_path / "here")
    passes.run_pass(runs[1:2], store, tmp_path / "alone", threads=1)
    par, here, alone = (_run_weights(tmp_path / d, runs) if d != "alone" else
                        _run_weights(tmp_path / d, runs[1:2]) for d in ("par", "here", "alone"))
    for name in par:
        for key in par[name]:
            assert torch.equal(par[name][key], here[name][key]), (name, key)
    for key in alone[runs[1].name]:
        assert torch.equal(alone[runs[1].name][key], par[runs[1].name][key]), key
    # progress of the parallel seeds reached the parent's Events, every seed in it
    assert events.steps, "no step progress from the workers"
    step, total, stats = events.steps[-1]
    assert step == total and set(stats["per_seed"]) == {1, 2, 3}
    # and so did the firing-count pass after training: from 0 to every training token
    train_tokens = info["tokens"]["train"]
    assert events.evaluated[0] == (0, train_tokens) and events.evaluated[-1] == (train_tokens,) * 2
    assert not (tmp_path / "par" / "runs" / ".checkpoints").exists() or not any(
        (tmp_path / "par" / "runs" / ".checkpoints").iterdir())


def test_progress_of_parts_merges_to_the_slowest_step():
    from saefast.sweep.seed_pool import merged_stats

    step, total, stats = merged_stats({
        0: (10, 20, {"per_seed": {1: {"loss": 1.0, "dead": 0.0}}, "tokens_per_second": 100.0}),
        1: (7, 20, {"per_seed": {2: {"loss": 3.0, "dead": 0.5}}, "tokens_per_second": 50.0})})
    assert (step, total) == (7, 20)
    assert stats["loss"] == 2.0 and stats["dead"] == 0.25 and set(stats["per_seed"]) == {1, 2}


def _sweep_cmd(corpus, out, cache):
    return [sys.executable, "-m", "saefast.cli.main", "sweep", "--model", "tiny", "--hook", HOOK,
            "--corpus", str(corpus), "--tokens", "1500", "--features", "16", "--k", "2",
            "--epochs", "2", "--seeds", "2", "--out", str(out), "--cache-dir", str(cache)]


def test_two_sweeps_on_one_cold_cache_both_finish_with_the_results_of_one(corpus, tmp_path):
    from saefast.data.store import load_activations

    env = {**os.environ, "COLUMNS": "200"}
    procs = [subprocess.Popen(_sweep_cmd(corpus, tmp_path / f"out{i}", tmp_path / "shared"), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (1, 2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    alone = subprocess.run(_sweep_cmd(corpus, tmp_path / "alone", tmp_path / "own"), env=env,
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    names = sorted(p.name for p in (tmp_path / "alone" / "runs").iterdir() if not p.name.startswith("."))
    assert len(names) == 2
    for out in ("out1", "out2"):
        for name in names:
            a = load_file(str(tmp_path / out / "runs" / name / "sae_weights.safetensors"))
            b = load_file(str(tmp_path / "alone" / "runs" / name / "sae_weights.safetensors"))
            assert all(torch.equal(a[k], b[k]) for k in b), (out, name)
    (shared,) = (tmp_path / "shared" / "activations").iterdir()
    (own,) = (tmp_path / "own" / "activations").iterdir()
    assert torch.equal(load_activations(shared), load_activations(own))
    meta = json.loads((shared / "meta.json").read_text())
    assert meta["n_tokens"] == json.loads((own / "meta.json").read_text())["n_tokens"]
    assert not [p for p in shared.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_a_second_writer_waits_for_the_lock_and_says_so(tmp_path):
    import threading

    from saefast.data.store import write_lock

    store = tmp_path / "store"
    said, order = [], []

    def second():
        with write_lock([store], said.append):
            order.append("second")

    with write_lock([store]):
        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)
        order.append("first done")
    t.join(5)
    assert order == ["first done", "second"]
    assert said == [f"waiting for another saefast process writing {store}"]


def test_an_error_in_a_worker_is_raised_in_the_sweep_not_a_hang(corpus, tmp_path):
    from saefast.sweep import seed_pool

    runs = _runs(corpus, [1, 2], tmp_path)
    with pytest.raises(seed_pool.WorkerFailed, match="in a worker process failed: .*"):
        seed_pool.run_parts([runs[:1], runs[1:]], tmp_path / "no-store", tmp_path / "out",
                            events=Events(), memory_budget=2**30, threads=1)
    seed_pool.shutdown()


def test_cli_info_shows_the_threads_and_sweep_refuses_zero(capsys, tmp_path):
    from saefast.cli.main import main

    with threads.torch_threads(torch.get_num_threads()):  # the CLI sets them process-wide
        assert main(["info", "--threads", "3"]) == 0
        out = capsys.readouterr().out
        assert "torch_intra_op_threads" in out and "3 worker processes x 1 thread(s)" in out
        assert main(["sweep", "--threads", "0", "--out", str(tmp_path / "o")]) == 2
    assert "threads must be >= 1, got 0" in capsys.readouterr().err


def _report_text(path, out_dir):
    """A stored report with what may differ between two sweep folders left out: the folder's
    own path, timings and the inputs' fingerprint (file times)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if k not in ("timings", "inputs_fingerprint") and "seconds" not in k}
        return [strip(v) for v in x] if isinstance(x, list) else x

    return strip(json.loads(path.read_text().replace(str(out_dir), "OUT")))


def test_reports_in_the_seed_workers_equal_the_reports_made_here(corpus, tmp_path, monkeypatch):
    import shutil

    from saefast.cli.main import main
    from saefast.sweep import analyze, seed_pool

    monkeypatch.setenv("SAEFAST_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(analyze, "PARALLEL_WORK", 0)  # these tiny reports would stay here
    calls = []
    real_map = seed_pool.map_calls
    monkeypatch.setattr(seed_pool, "map_calls",
                        lambda c, **kw: calls.append([a[2][0] for a in c]) or real_map(c, **kw))
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "name": "two groups",
        "base": {"model": {"name": "tiny", "hook": HOOK},
                 "data": {"corpus": str(corpus), "tokens": 800},
                 "sae": {"n_features": 16, "k": 2}, "train": {"epochs": 2}},
        "grid": {"sae.n_features": [16, 24], "train.seed": "1..3"}}))
    par = tmp_path / "par"
    assert main(["sweep", str(exp), "--out", str(par), "--threads", "2"]) == 0
    assert len(calls) == 1 and len(calls[0]) == 2  # both groups' reports, in the workers
    assert "f24" in calls[0][0]  # the larger first
    here = tmp_path / "here"
    here.mkdir()
    shutil.copytree(par / "runs", here / "runs")  # the same runs (file times kept)
    monkeypatch.setenv(threads.WORKERS_ENV, "off")
    assert main(["sweep", str(exp), "--out", str(here), "--threads", "2"]) == 0
    assert len(calls) == 1  # this time in the sweep's process
    reports = sorted(p.relative_to(par) for p in (par / "reports").glob("*/stability.json"))
    assert len(reports) == 2
    for rel in reports:
        assert _report_text(par / rel, par) == _report_text(here / rel, here), rel
    seed_pool.shutdown()


def test_a_report_error_in_a_worker_is_raised_as_itself(tmp_path):
    from saefast.errors import RunDirError
    from saefast.sweep import seed_pool

    missing = tmp_path / "no-run"
    call = ("saefast.report.assemble", "compute_analysis", ([missing, missing],))
    with pytest.raises(RunDirError, match="no-run"):
        seed_pool.map_calls([call, call], workers=2, threads=1)
    seed_pool.shutdown()


def test_a_report_worker_that_dies_leaves_the_reports_to_the_sweep(monkeypatch, tmp_path):
    """A worker dying in the report phase (out of memory, killed) does not lose the sweep:
    the reports are made in the sweep's process instead, and it says so."""
    from saefast.sweep import analyze, seed_pool

    said = []

    class Said(Events):
        def message(self, text):
            said.append(text)

    def dies(calls, **kw):
        raise seed_pool.WorkerFailed("the worker process exited (code -9)")

    monkeypatch.setattr(seed_pool, "map_calls", dies)
    monkeypatch.setattr(analyze, "PARALLEL_WORK", 0)
    jobs = {"g1": (16, [], tmp_path, {}), "g2": (16, [], tmp_path, {})}
    assert analyze._in_workers(jobs, tmp_path, Said(), threads=2) == {}
    assert said and "made here instead" in said[0] and "code -9" in said[0]
