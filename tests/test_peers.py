"""Round trips with the real SAELens and sparsify packages (issue 24), run in their own venv:
sae-lens pulls transformer-lens 3.x and saefast needs 4.x, so they never share an
environment. `.ci/run` builds that venv (sae-lens 6.54, eai-sparsify 1.3 beside the CPU torch)
and points SAEFAST_PEERS_PYTHON at its python; tests/peers/peer_roundtrip.py is its side.

- saefast's exports load in each package (sparsify strictly) and encode and decode real-shaped
  activations as saefast's own ops do;
- checkpoints each package saves itself are read by saefast (orientation from the format) and
  matched by `saefast analyze` exactly as SciPy matches their decoders.

Skipped only without that venv: where the registry could not be reached (.ci/run says so in
SAEFAST_PEERS_SKIP), or on a developer's machine that has none.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.optimize import linear_sum_assignment

from saefast import ops
from saefast.runs.artifacts import load_sae
from saefast.runs.export import export_run

from test_export import _run

PEER = os.environ.get("SAEFAST_PEERS_PYTHON")
SCRIPT = Path(__file__).parent / "peers" / "peer_roundtrip.py"
pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(PEER is None, reason=os.environ.get(
        "SAEFAST_PEERS_SKIP", "no peer venv: SAEFAST_PEERS_PYTHON is not set (.ci/run builds "
        "one with sae-lens and eai-sparsify)")),
]


def _peer(*args) -> None:
    done = subprocess.run([PEER, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _acts(n=256, d=16, seed=7) -> np.ndarray:
    g = np.random.default_rng(seed)  # anisotropic, offset: biases and b_dec matter
    return (g.standard_normal((n, d)) * np.linspace(3, 0.3, d) + 1.5).astype(np.float32)


def _saefast_codes(sae, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(dense codes [T, F], reconstruction [T, d]) by saefast's ops."""
    top = ops.topk_encode(x - sae.b_dec, sae.encoder, sae.b_enc, sae.k)
    z = torch.zeros(x.shape[0], sae.n_features).scatter_(1, top.indices, top.values)
    return z.numpy(), ops.sparse_decode(top.values, top.indices, sae.decoder, sae.b_dec).numpy()


def test_exports_load_in_sae_lens_and_sparsify_and_compute_what_saefast_does(tmp_path):
    run = _run(tmp_path / "runs", "L3-f48-k4-s1")
    saelens = export_run(run, tmp_path / "saelens", "sae-lens")
    sparsify = export_run(run, tmp_path / "sparsify", "sparsify")
    acts = tmp_path / "acts.npy"
    np.save(acts, _acts())
    _peer("load", saelens, sparsify, acts, tmp_path / "out.npz")
    got = np.load(tmp_path / "out.npz")
    assert str(got["saelens_class"]) == "TopKSAE"
    z, xhat = _saefast_codes(load_sae(run), torch.from_numpy(np.load(acts)))
    for tool in ("saelens", "sparsify"):
        np.testing.assert_allclose(got[f"z_{tool}"], z, rtol=1e-5, atol=1e-5, err_msg=tool)
        np.testing.assert_allclose(got[f"xhat_{tool}"], xhat, rtol=1e-5, atol=1e-4,
                                   err_msg=tool)


def test_checkpoints_the_packages_save_are_read_and_matched_exactly(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, _acts())
    peers = tmp_path / "peers"
    _peer("write", peers, acts)
    codes = np.load(peers / "codes.npz")
    x = torch.from_numpy(np.load(acts))
    for tool, sub in (("saelens", ""), ("sparsify", "encoder.layer.2")):
        dirs = [peers / f"{tool}-s{s}" / sub for s in (1, 2)]
        for seed, d in zip((1, 2), dirs):
            sae = load_sae(d)
            assert sae.format == tool, (tool, sae.format)
            z, _ = _saefast_codes(sae, x)  # saefast's reading encodes as the package did
            np.testing.assert_allclose(z, codes[f"{tool}-s{seed}"], rtol=1e-5, atol=1e-5)
        out = tmp_path / f"report-{tool}"
        done = subprocess.run([sys.executable, "-m", "saefast.cli.main", "analyze",
                               *map(str, dirs), "--out", str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        pair = json.loads((out / "stability.json").read_text())["pairs"][0]
        name = "sae_weights.safetensors" if tool == "saelens" else "sae.safetensors"
        weights = [load_file(str(d / name)) for d in dirs]
        dec = [w["W_dec"].double() for w in weights]  # [F, d] in both packages
        unit = [m / m.norm(dim=1, keepdim=True) for m in dec]
        cos = (unit[0] @ unit[1].T).numpy()
        rows, cols = linear_sum_assignment(cos, maximize=True)
        assert pair["a_indices"] == rows.tolist() and pair["b_indices"] == cols.tolist()
        np.testing.assert_allclose(pair["all_cosines"], cos[rows, cols], atol=1e-6)


def test_their_saes_on_saefast_ops_give_their_outputs_and_gradients():
    """saefast.integrations.sae_lens / .sparsify inside the peer venv (saefast from this source
    tree on PYTHONPATH: same torch, so its built ops load there): reconstructions, latents and
    every parameter's gradient equal each package's own encode/decode."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run([PEER, str(Path(__file__).parent / "peers" / "peer_ops.py")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.count(" ok ") == 3, done.stdout
