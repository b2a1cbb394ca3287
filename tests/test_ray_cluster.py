"""A two-node Ray cluster started the README's way ("Sweeps on a Ray cluster"): token
authentication on (Ray's default for `ray start --head` since 2.59), the head's token handed
to the second node and to the driver as RAY_AUTH_TOKEN, and a sweep through `--executor ray
--address HEAD:PORT` whose weights equal the local executor's bit for bit. The head offers no
CPU, so every task runs on the node that joined with the token. Both nodes run on this
machine, each with its own temp dir; only their own processes are stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
SWEEP = ["--model", "tiny", "--hook", "blocks.0.hook_resid_pre", "--tokens", "1500",
         "--features", "16", "--k", "2", "--epochs", "1", "--seeds", "2", "--axis", "sae.k=2,4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, env, timeout=240):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def _stop_nodes(temp_dirs):
    """Kill the processes of these nodes only (`ray stop` would stop every Ray here)."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if any(t in cmd for t in temp_dirs):
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.fixture
def cluster():
    pytest.importorskip("ray")
    pytest.importorskip("psutil")
    if not Path(RAY).exists():
        pytest.skip("the ray command is not installed")
    # short paths: Ray's unix sockets live under the temp dir (a ~107-character limit)
    temps = [tempfile.mkdtemp(prefix="sfray", dir="/tmp") for _ in range(2)]
    port = _free_port()
    head = f"127.0.0.1:{port}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    try:
        _run([RAY, "start", "--head", "--port", str(port), "--num-cpus", "0",
              "--node-ip-address", "127.0.0.1", "--include-dashboard", "false",
              "--temp-dir", temps[0]], env)
        token = _run([RAY, "get-auth-token"], env).strip().splitlines()[-1].strip()
        assert token
        refused = subprocess.run([RAY, "start", "--address", head, "--num-cpus", "1",
                                  "--node-ip-address", "127.0.0.1", "--temp-dir", temps[1]],
                                 env={**env, "RAY_AUTH_MODE": "disabled"}, capture_output=True,
                                 text=True, timeout=240)
        assert refused.returncode != 0 and "InvalidAuthToken" in refused.stdout + refused.stderr
        with_token = {**env, "RAY_AUTH_TOKEN": token}
        _run([RAY, "start", "--address", head, "--num-cpus", "1", "--node-ip-address",
              "127.0.0.1", "--temp-dir", temps[1]], with_token)
        yield head, with_token, env
    finally:
        _stop_nodes(temps)
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def _weights(out: Path) -> dict:
    return {d.name: load_file(str(d / "sae_weights.safetensors"))
            for d in sorted((out / "runs").iterdir()) if not d.name.startswith(".")}


def test_a_second_node_joins_with_the_token_and_runs_the_sweep(cluster, corpus, tmp_path):
    head, with_token, without = cluster
    cli = [sys.executable, "-m", "saefast.cli.main", "sweep", *SWEEP, "--corpus", str(corpus)]
    # a driver without the token is refused, in one line that says how to get it
    refused = subprocess.run([*cli, "--executor", "ray", "--address", head, "--out",
                              str(tmp_path / "refused"), "--cache-dir", str(tmp_path / "c0")],
                             env={k: v for k, v in without.items() if k != "RAY_AUTH_MODE"},
                             capture_output=True, text=True, timeout=240)
    assert refused.returncode != 0 and "RAY_AUTH_TOKEN" in refused.stderr + refused.stdout
    _run([*cli, "--executor", "ray", "--address", head, "--out", str(tmp_path / "ray"),
          "--cache-dir", str(tmp_path / "c1")], with_token)
    _run([*cli, "--out", str(tmp_path / "local"), "--cache-dir", str(tmp_path / "c2")],
         with_token)
    ray_w, local_w = _weights(tmp_path / "ray"), _weights(tmp_path / "local")
    assert sorted(ray_w) == sorted(local_w) and len(ray_w) == 4
    for name in local_w:
        assert all(torch.equal(local_w[name][k], ray_w[name][k]) for k in local_w[name]), name
