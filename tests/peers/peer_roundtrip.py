"""Run inside the peer venv (sae-lens and eai-sparsify, no saefast): the other side of
tests/test_peers.py. Only the packages' public API.

    python peer_roundtrip.py load SAELENS_DIR SPARSIFY_DIR ACTS.npy OUT.npz
        load saefast's exports with sae_lens.SAE.load_from_disk and
        sparsify.SparseCoder.load_from_disk (strict), encode and decode ACTS with each
    python peer_roundtrip.py write OUT_DIR ACTS.npy
        OUT_DIR/saelens-s{1,2} (TopKSAE.save_model) and OUT_DIR/sparsify-s{1,2}/<hookpoint>
        (SparseCoder.save_to_disk) with seeded random weights, and OUT_DIR/codes.npz: each
        one's own encoding of ACTS (dense [T, F])
"""

import sys
from pathlib import Path

import numpy as np
import torch

D, F, K = 16, 48, 4
HOOKPOINT = "encoder.layer.2"


def _dense(acts: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(acts.shape[0], n).scatter_(1, idx.long(), acts.float())


def load(saelens_dir: str, sparsify_dir: str, acts: str, out: str) -> None:
    from sae_lens import SAE
    from sparsify import SparseCoder

    x = torch.from_numpy(np.load(acts)).float()
    sl = SAE.load_from_disk(saelens_dir, device="cpu")
    with torch.no_grad():
        z_sl = sl.encode(x)
        xh_sl = sl.decode(z_sl)
    sp = SparseCoder.load_from_disk(sparsify_dir, device="cpu")  # strict state-dict load
    with torch.no_grad():
        enc = sp.encode(x)
        z_sp = _dense(enc.top_acts, enc.top_indices, sp.num_latents)
        xh_sp = sp.decode(enc.top_acts, enc.top_indices)
    np.savez(out, z_saelens=z_sl.numpy(), xhat_saelens=xh_sl.numpy(), z_sparsify=z_sp.numpy(),
             xhat_sparsify=xh_sp.numpy(), saelens_class=type(sl).__name__)


def write(out_dir: str, acts: str) -> None:
    from sae_lens import TopKSAE, TopKSAEConfig
    from sparsify import SparseCoder, SparseCoderConfig

    out = Path(out_dir)
    x = torch.from_numpy(np.load(acts)).float()
    codes = {}
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        sl = TopKSAE(TopKSAEConfig(d_in=D, d_sae=F, k=K))
        with torch.no_grad():
            sl.W_enc.copy_(torch.randn(D, F, generator=g))
            sl.b_enc.copy_(torch.randn(F, generator=g) * 0.1)
            sl.W_dec.copy_(torch.randn(F, D, generator=g))
            sl.b_dec.copy_(torch.randn(D, generator=g) * 0.1)
            codes[f"saelens-s{seed}"] = sl.encode(x).numpy()
        sl.save_model(out / f"saelens-s{seed}")

        sp = SparseCoder(D, SparseCoderConfig(num_latents=F, k=K), device="cpu")
        with torch.no_grad():
            sp.encoder.weight.copy_(torch.randn(F, D, generator=g))
            sp.encoder.bias.copy_(torch.randn(F, generator=g) * 0.1)
            sp.W_dec.copy_(torch.randn(F, D, generator=g))
            sp.b_dec.copy_(torch.randn(D, generator=g) * 0.1)
            enc = sp.encode(x)
            codes[f"sparsify-s{seed}"] = _dense(enc.top_acts, enc.top_indices, F).numpy()
        sp.save_to_disk(out / f"sparsify-s{seed}" / HOOKPOINT)
    np.savez(out / "codes.npz", **codes)


if __name__ == "__main__":
    {"load": load, "write": write}[sys.argv[1]](*sys.argv[2:])
