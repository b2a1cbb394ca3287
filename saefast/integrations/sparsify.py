"""EleutherAI sparsify's `SparseCoder` (Top-K) on saefast's ops: z = TopK(ReLU(encoder(x -
b_dec))), x_hat = z W_dec + b_dec, as its own `encode` and `decode`."""

from __future__ import annotations

import torch

from saefast import ops
from saefast.errors import ConfigError
from saefast.ops.encode import TopK


def _check(coder) -> None:
    cfg = coder.cfg
    if getattr(cfg, "activation", "topk") != "topk":
        raise ConfigError(f"sparsify coder with activation {cfg.activation!r}: only topk is the "
                          "math saefast's ops compute")
    if getattr(coder, "W_skip", None) is not None or getattr(cfg, "transcode", False):
        raise ConfigError("sparsify coder with a skip connection or transcoding: not the SAE "
                          "saefast's ops compute")
    if coder.W_dec is None:
        raise ConfigError("sparsify coder loaded without its decoder (decoder=False)")


def encode(coder, x: torch.Tensor) -> TopK:
    """The coder's top-k latents of x [B, d_in] (values sorted descending, indices)."""
    _check(coder)
    return ops.topk_encode(x - coder.b_dec, coder.encoder.weight, coder.encoder.bias,
                           int(coder.cfg.k))


def forward(coder, x: torch.Tensor) -> tuple[torch.Tensor, TopK]:
    """(x_hat [B, d_in], the top-k latents): the coder's reconstruction of x."""
    top = encode(coder, x)
    return ops.sparse_decode(top.values, top.indices, coder.W_dec, coder.b_dec), top
