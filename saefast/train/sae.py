"""Top-K sparse autoencoder (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    z     = TopK(relu(W_enc (x - b_dec) + b_enc))     # k non-zeros per token
    x_hat = W_dec^T z + b_dec

Encode and decode go through `saefast.ops` (fused/native where built, pure PyTorch else),
so the backward only touches the k kept latents per token.
"""

from __future__ import annotations

import torch
from torch import nn

from saefast import ops
from saefast.errors import ConfigError


class TopKSAE(nn.Module):
    """One Top-K SAE. Parameters are stored rows-are-features: W_enc [F, d], W_dec [F, d]."""

    def __init__(self, d_in: int, n_features: int, k: int, *, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        if not 1 <= k <= n_features:
            raise ConfigError(f"k must be between 1 and n_features={n_features}, got {k}")
        self.d_in, self.n_features, self.k = d_in, n_features, k
        gen = torch.Generator().manual_seed(seed)
        # Decoder rows: random unit directions. Encoder starts as the decoder's transpose
        # (Gao et al.), which makes every latent fire on inputs near its direction at step 0.
        W_dec = torch.randn(n_features, d_in, generator=gen, dtype=torch.float64)  # [F, d]
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec.to(dtype=dtype, device=device))
        self.W_enc = nn.Parameter(W_dec.clone().to(dtype=dtype, device=device))  # [F, d]
        self.b_enc = nn.Parameter(torch.zeros(n_features, dtype=dtype, device=device))  # [F]
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype, device=device))  # [d]

    # The dtype of the encoder GEMM when it differs from the parameters' (bfloat16 training:
    # the parameters, Adam's state and the decoder stay float32, the master copy), else None.
    matmul_dtype: torch.dtype | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, d] -> (values [B, k], indices [B, k]); values are >= 0, sorted descending."""
        return self.encode_with(x - self.b_dec, self.b_enc, self.k)

    def encode_with(self, x_centered: torch.Tensor, b_enc: torch.Tensor,
                    k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k of relu(W_enc x_centered + b_enc) in the SAE's dtype, through its GEMM dtype."""
        mm = self.matmul_dtype
        if mm is None or mm == self.W_enc.dtype:
            return ops.topk_encode(x_centered, self.W_enc, b_enc, k)
        values, indices = ops.topk_encode(x_centered.to(mm), self.W_enc.to(mm), b_enc.to(mm), k)
        return values.to(self.W_enc.dtype), indices

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """(values [B, k], indices [B, k]) -> x_hat [B, d]."""
        return ops.sparse_decode(values, indices, self.W_dec, self.b_dec)

    def decode_aux(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """sum_j values[:, j] W_dec[indices[:, j]] (no b_dec), in the GEMM dtype: AuxK's
        decode, whose k (~d / 2) makes it a dense product on a GPU."""
        W = self.W_dec if self.matmul_dtype is None else self.W_dec.to(self.matmul_dtype)
        out = ops.sparse_decode(values.to(W.dtype), indices, W, W.new_zeros(W.shape[1]))
        return out.to(self.W_dec.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values, indices = self.encode(x)
        return self.decode(values, indices), values, indices

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Keep decoder rows unit norm, so latent magnitudes live in the activations alone."""
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min_(1e-12))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the gradient component along each decoder row: with unit-norm rows it would
        only change the norm, which normalize_decoder_ undoes anyway (Bricken et al. 2023)."""
        if self.W_dec.grad is None:
            return
        W, G = self.W_dec, self.W_dec.grad  # [F, d]
        # in place, no [F, d] temporaries: these two passes are a visible part of a step
        G.addcmul_(W, torch.linalg.vecdot(G, W).unsqueeze(1), value=-1)
