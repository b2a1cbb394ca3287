"""The public saefast ops, `torch.ops.saefast.*` with documented results.

    topk_encode(x, W_enc, b_enc, k) -> TopK(values, indices)         encode.py
    sparse_decode(values, indices, W_dec, b_dec) -> x_hat             decode.py
    cosine_topk(A, B, k) -> CosineTopK(row_vals, row_idx, col_vals, col_idx)   cosine.py

Each op's module holds its whole Python side (input check, wrapper, reference kernel, fake
kernel, autograd); library.py says how the schemas get defined with or without the native
build; reference.py is the pure-PyTorch kernels (fallback on every device, test oracle);
native.py loads the C++ library and reports `build_info()`.

Light to import: torch only (no transformer_lens, matplotlib or scipy).
"""

from __future__ import annotations

from saefast.ops.cosine import CosineTopK, cosine_topk
from saefast.ops.decode import sparse_decode
from saefast.ops.encode import TopK, topk_encode
from saefast.ops.library import NATIVE, SCHEMAS, read_schemas
from saefast.ops.native import build_info

__all__ = ["topk_encode", "sparse_decode", "cosine_topk", "TopK", "CosineTopK", "SCHEMAS",
           "NATIVE", "read_schemas", "build_info"]
