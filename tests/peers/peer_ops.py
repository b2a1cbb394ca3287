"""Run inside the peer venv with the saefast source tree on PYTHONPATH (tests/test_peers.py):
SAELens's TopKTrainingSAE and sparsify's SparseCoder, each through its own encode/decode and
through saefast.integrations on saefast's ops; the reconstructions, latents and every
parameter's gradient of the same MSE loss must agree. Prints one line per SAE; exits 1 on a
mismatch."""

import sys

import torch

from saefast.integrations import sae_lens as sl_ops
from saefast.integrations import sparsify as sp_ops

D, F, K, B = 24, 96, 6, 64


def _compare(name, own, ours, params) -> bool:
    """own/ours: (x_hat, dense latents); params: name -> parameter. Gradients of the MSE."""
    grads = []
    for out in (own, ours):
        for p in params.values():
            p.grad = None
        ((out[0] - X) ** 2).sum().backward()
        grads.append({k: p.grad.clone() for k, p in params.items()})
    ok = torch.allclose(own[0], ours[0], atol=1e-4, rtol=1e-4) and \
        torch.allclose(own[1], ours[1], atol=1e-5, rtol=1e-5)
    worst = {k: float((grads[0][k] - grads[1][k]).abs().max()) for k in params}
    ok = ok and all(torch.allclose(grads[0][k], grads[1][k], atol=1e-3, rtol=1e-4) for k in params)
    print(name, "ok" if ok else "MISMATCH", "max |grad diff|", worst)
    return ok


def _dense(values, indices):
    return torch.zeros(B, F).scatter(1, indices, values)


def saelens() -> bool:
    """TopKTrainingSAE (rescale_acts_by_decoder_norm on, its default) and TopKSAE (off)."""
    from sae_lens import TopKSAE, TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig

    ok = True
    for seed, sae in enumerate([TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=F, k=K)),
                                TopKSAE(TopKSAEConfig(d_in=D, d_sae=F, k=K))]):
        g = torch.Generator().manual_seed(1 + seed)
        with torch.no_grad():
            for p in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        z = sae.encode(X)
        own = (sae.decode(z), z)
        x_hat, top = sl_ops.forward(sae, X)
        ok &= _compare(f"sae_lens.{type(sae).__name__} (rescale_acts_by_decoder_norm="
                       f"{sae.cfg.rescale_acts_by_decoder_norm})", own,
                       (x_hat, _dense(top.values, top.indices)),
                       {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec,
                        "b_dec": sae.b_dec})
    return ok


def sparsify() -> bool:
    from sparsify import SparseCoder, SparseCoderConfig

    coder = SparseCoder(D, SparseCoderConfig(num_latents=F, k=K), device="cpu")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in (coder.encoder.weight, coder.encoder.bias, coder.W_dec, coder.b_dec):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    enc = coder.encode(X)
    own = (coder.decode(enc.top_acts, enc.top_indices), _dense(enc.top_acts, enc.top_indices))
    x_hat, top = sp_ops.forward(coder, X)
    return _compare("sparsify.SparseCoder", own, (x_hat, _dense(top.values, top.indices)),
                    {"encoder.weight": coder.encoder.weight, "encoder.bias": coder.encoder.bias,
                     "W_dec": coder.W_dec, "b_dec": coder.b_dec})


X = torch.randn(B, D, generator=torch.Generator().manual_seed(0)) * 2 + 0.5

if __name__ == "__main__":
    sys.exit(0 if all([saelens(), sparsify()]) else 1)
