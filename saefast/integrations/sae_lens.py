"""SAELens's Top-K SAE (`TopKSAE`, `TopKTrainingSAE`) on saefast's ops: z = TopK(ReLU(
(x - b_dec) W_enc + b_enc)), x_hat = z W_dec + b_dec, as its own `encode` and `decode` (SAELens
takes the top k, then the ReLU: the same latents). With `rescale_acts_by_decoder_norm` (on by
default in TopKTrainingSAE) SAELens scales the pre-activations by each decoder row's norm n
and decodes z / n: here the encoder rows and bias are scaled by n and the decoder rows divided
by it, inside autograd, which is the same function of the same parameters."""

from __future__ import annotations

import torch

from saefast import ops
from saefast.errors import ConfigError
from saefast.ops.encode import TopK


def _check(sae) -> None:
    cfg = sae.cfg
    if getattr(cfg, "architecture", lambda: "topk")() != "topk":
        raise ConfigError(f"SAELens SAE of architecture {cfg.architecture()!r}: only topk is "
                          "the math saefast's ops compute")
    if getattr(cfg, "normalize_activations", "none") != "none":
        raise ConfigError("SAELens SAE with normalize_activations="
                          f"{cfg.normalize_activations!r}: normalise x yourself, or use SAELens")
    if getattr(cfg, "reshape_activations", "none") != "none":
        raise ConfigError("SAELens SAE with reshape_activations: pass x as [B, d_in]")


def _rescaled(sae) -> bool:
    return bool(getattr(sae.cfg, "rescale_acts_by_decoder_norm", False))


def encode(sae, x: torch.Tensor) -> TopK:
    """The SAE's top-k latents of x [B, d_in] (values sorted descending, indices)."""
    _check(sae)
    x_in = x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x
    W, b = sae.W_enc.T, sae.b_enc  # [F, d_in], [F]
    if _rescaled(sae):
        n = sae.W_dec.norm(dim=-1)  # [F]
        W, b = W * n[:, None], b * n
    return ops.topk_encode(x_in, W, b, int(sae.cfg.k))


def forward(sae, x: torch.Tensor) -> tuple[torch.Tensor, TopK]:
    """(x_hat [B, d_in], the top-k latents): the SAE's reconstruction of x."""
    top = encode(sae, x)
    W_dec = sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True) if _rescaled(sae) else sae.W_dec
    return ops.sparse_decode(top.values, top.indices, W_dec, sae.b_dec), top
