"""Ctrl-C during a sweep whose seeds train in worker processes (sweep/seed_pool.py,
sweep/seed_worker.py): a terminal sends SIGINT to the whole foreground process group, so the
workers get it beside the sweep. The user sees one clean line, not the workers' tracebacks,
no worker is left running, and the same command run again finishes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

INTERRUPTED = "interrupted; finished runs are kept, re-run the command to resume"


def _sweep(corpus, out, cache) -> list[str]:
    # 2 seeds of 1024 x 64 over 3 epochs of 18,000 training tokens: just enough work for
    # seed workers (`threads.plan_pass`), seconds of training on 2 cores
    return [sys.executable, "-m", "saefast.cli.main", "sweep", "--model", "tiny",
            "--hook", "blocks.0.hook_resid_pre", "--corpus", str(corpus), "--features", "1024",
            "--tokens", "20000", "--epochs", "3", "--seeds", "2", "--threads", "2",
            "--no-trained-null", "--out", str(out), "--cache-dir", str(cache)]


def _workers(group: int) -> list[int]:
    """The seed workers in the sweep's process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
            if b"saefast.sweep.seed_worker" in cmd and os.getpgid(int(entry.name)) == group:
                pids.append(int(entry.name))
        except (ValueError, OSError):  # not a process, or one that just exited
            continue
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_ctrl_c_stops_the_workers_quietly_and_the_sweep_resumes(corpus, tmp_path):
    out, cache, log = tmp_path / "out", tmp_path / "cache", tmp_path / "log.txt"
    env = dict(os.environ, SAEFAST_SEED_WORKERS="auto")
    with open(log, "w") as f:
        proc = subprocess.Popen(_sweep(corpus, out, cache), stdout=f, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not _workers(proc.pid):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no seed worker started"
            time.sleep(0.2)
        workers = _workers(proc.pid)
        time.sleep(3)  # importing torch, then training
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert INTERRUPTED in text, text
    assert rc == 130, text
    assert not _workers(proc.pid) and not any(Path(f"/proc/{p}").exists() for p in workers)

    again = subprocess.run(_sweep(corpus, out, cache), capture_output=True, text=True, env=env,
                           check=False, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list((out / "runs").glob("*/sae_weights.safetensors"))) == 2
    assert "Traceback" not in again.stdout + again.stderr
