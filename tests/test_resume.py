"""Resuming an interrupted training (saefast/train/resume.py): in process, and as `saefast
sweep` killed with SIGKILL mid-training; either way it ends with the same weights."""

import os
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from saefast.train.trainer import train_saes

from train_samples import SAE, acts, assert_same, cfg, weights


def sweep_cmd(corpus, out, cache, *extra):
    return [sys.executable, "-m", "saefast.cli.main", "sweep", "--model", "tiny",
            "--hook", "blocks.0.hook_resid_pre", "--corpus", str(corpus), "--tokens", "3000",
            "--features", "128", "--k", "4", "--epochs", "20", "--seeds", "2",
            "--axis", "train.shuffle_buffer=1000", "--axis", "train.checkpoint_every=1500",
            "--axis", "train.batch_size=64", "--out", str(out), "--cache-dir", str(cache), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [(), ("--stream",)], ids=["cache", "stream"])
def test_kill_minus_9_then_resume_gives_the_same_weights(tmp_path, extra):
    from pydoc_data.topics import topics

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(topics[k] for k in sorted(topics)[:60]))
    cache = tmp_path / "cache"
    env = {**os.environ, "COLUMNS": "200"}
    reference = subprocess.run(sweep_cmd(corpus, tmp_path / "ref", cache, *extra), env=env,
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr

    proc = subprocess.Popen(sweep_cmd(corpus, tmp_path / "out", cache, *extra), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "out" / "runs" / ".checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(ckpts.glob("*/ckpt-*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "out" / "runs").glob("*/run.json")), "nothing is written mid-way"

    resumed = subprocess.run(sweep_cmd(corpus, tmp_path / "out", cache, *extra), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    for seed in (1, 2):
        name = f"L0-f128-k4-t3000-b64-buf1000-s{seed}"
        a = load_file(tmp_path / "ref" / "runs" / name / "sae_weights.safetensors")
        b = load_file(tmp_path / "out" / "runs" / name / "sae_weights.safetensors")
        for key in a:
            assert (a[key] == b[key]).all(), (name, key)
    assert not ckpts.exists() or not any(ckpts.iterdir()), "checkpoints are removed when done"


def test_resume_after_a_kill_gives_identical_weights(tmp_path):
    x = acts()
    uninterrupted = train_saes(x, None, SAE, cfg(), [1, 2])
    ckpt = tmp_path / "ckpt"
    assert train_saes(x, None, SAE, cfg(), [1, 2], checkpoint_dir=ckpt, stop_after_steps=40) == []
    assert len(list(ckpt.glob("ckpt-*.pt"))) >= 1
    resumed = train_saes(x, None, SAE, cfg(), [1, 2], checkpoint_dir=ckpt)
    for a, b in zip(uninterrupted, resumed):
        assert_same(weights(a), weights(b))
