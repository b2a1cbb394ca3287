"""Pure-PyTorch version of every saefast op: the fallback kernel and the test oracle.

Each op has the signature of its schema (saefast/ops/schemas.inc) and works on any device.
Inputs are assumed valid (saefast.ops checks them). bfloat16 and float16 are computed in
float32 and returned in the input dtype. Memory stays bounded: no [B, F] or [n, m] matrix is
held when F or m is large, and gathered [rows, k, d] temporaries are built in chunks.

The backward helpers are sparse: gradients reach only the kept (row, feature) entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor

TILE_F = 4096  # features per GEMM tile in topk_encode
COSINE_BLOCK_ELEMS = 1 << 24  # largest [rows, m] block of cosines held at once
GATHER_ELEMS = 1 << 22  # largest gathered [rows, k, d] temporary


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


def _row_chunk(k: int, d: int) -> int:
    return max(1, GATHER_ELEMS // max(1, k * d))


def _merge_topk(vals: Tensor, idx: Tensor, new_vals: Tensor, new_idx: Tensor, k: int):
    """Top-k along dim 1 of two (values, indices) candidate sets, sorted descending."""
    cat_vals = torch.cat([vals, new_vals], dim=1)  # [r, k + k']
    cat_idx = torch.cat([idx, new_idx], dim=1)
    top_vals, pos = cat_vals.topk(min(k, cat_vals.shape[1]), dim=1)
    return top_vals, cat_idx.gather(1, pos)


def _weighted_rows(table: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """out[b] = sum_j weights[b, j] * table[indices[b, j]], in the accumulation dtype. [B, d]"""
    acc = _acc_dtype(table.dtype)
    if acc == table.dtype:
        return nnf.embedding_bag(indices, table, per_sample_weights=weights.to(acc), mode="sum")
    step = _row_chunk(indices.shape[1], table.shape[1])
    parts = []
    for b0 in range(0, indices.shape[0], step):
        rows = table[indices[b0:b0 + step]].to(acc)  # [c, k, d]
        w = weights[b0:b0 + step].to(acc).unsqueeze(1)  # [c, 1, k]
        parts.append(torch.bmm(w, rows).squeeze(1))  # [c, d]
    return torch.cat(parts) if parts else table.new_zeros(0, table.shape[1], dtype=acc)


def _gather_dot(table: Tensor, indices: Tensor, vecs: Tensor) -> Tensor:
    """out[b, j] = <table[indices[b, j]], vecs[b]>, in the accumulation dtype. [B, k]"""
    acc = _acc_dtype(table.dtype)
    step = _row_chunk(indices.shape[1], table.shape[1])
    parts = []
    for b0 in range(0, indices.shape[0], step):
        rows = table[indices[b0:b0 + step]].to(acc)  # [c, k, d]
        v = vecs[b0:b0 + step].to(acc).unsqueeze(2)  # [c, d, 1]
        parts.append(torch.bmm(rows, v).squeeze(2))  # [c, k]
    return torch.cat(parts) if parts else indices.new_zeros(indices.shape, dtype=acc)


def _scatter_rows(indices: Tensor, weights: Tensor, rows: Tensor, n_out: int) -> Tensor:
    """out[f] = sum over (b, j) with indices[b, j] == f of weights[b, j] * rows[b]. [n_out, d]

    index_add_ is deterministic on CPU (on CUDA it uses atomics)."""
    acc = _acc_dtype(rows.dtype)
    k, d = indices.shape[1], rows.shape[1]
    out = torch.zeros(n_out, d, dtype=acc, device=rows.device)  # [F, d]
    step = _row_chunk(k, d)
    for b0 in range(0, indices.shape[0], step):
        w = weights[b0:b0 + step].to(acc).unsqueeze(2)  # [c, k, 1]
        r = rows[b0:b0 + step].to(acc).unsqueeze(1)  # [c, 1, d]
        out.index_add_(0, indices[b0:b0 + step].reshape(-1), (w * r).reshape(-1, d))
    return out


def topk_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k of relu(x @ W_enc.T + b_enc) per row, sorted descending.

    x [B, d], W_enc [F, d], b_enc [F] -> (values [B, k], indices [B, k] int64). The GEMM is
    tiled over F (TILE_F features) with a running top-k, so [B, F] is never held."""
    acc = _acc_dtype(x.dtype)
    x_acc = x.to(acc)
    values = indices = None
    for f0 in range(0, W_enc.shape[0], TILE_F):
        w = W_enc[f0:f0 + TILE_F].to(acc)  # [t, d]
        b = b_enc[f0:f0 + TILE_F].to(acc)  # [t]
        pre = torch.addmm(b, x_acc, w.T).relu_()  # [B, t]
        tile_vals, tile_idx = pre.topk(min(k, pre.shape[1]), dim=1)  # [B, k']
        tile_idx = tile_idx + f0
        if values is None:
            values, indices = tile_vals, tile_idx
        else:
            values, indices = _merge_topk(values, indices, tile_vals, tile_idx, k)
    return values.to(x.dtype).contiguous(), indices.contiguous()


def sparse_decode(values: Tensor, indices: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """x_hat [B, d] = b_dec + sum_j values[:, j] * W_dec[indices[:, j]].

    values [B, k], indices [B, k] (int64 or int32), W_dec [F, d], b_dec [d]."""
    out = _weighted_rows(W_dec, indices, values)  # [B, d]
    return (out + b_dec.to(out.dtype)).to(values.dtype)


def cosine_topk(A: Tensor, B: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The k largest cosines of every row of A (over B) and of every row of B (over A).

    A [n, d], B [m, d] -> (row_vals [n, k], row_idx [n, k] into B, col_vals [m, k],
    col_idx [m, k] into A), sorted descending. Rows are L2-normalised (a zero row has cosine
    0 with everything). One pass over blocks of A's rows; [n, m] is never held."""
    acc = _acc_dtype(A.dtype)
    a = nnf.normalize(A.to(acc), dim=1)  # [n, d]
    b_t = nnf.normalize(B.to(acc), dim=1).T  # [d, m]
    n, m = A.shape[0], B.shape[0]
    block = max(1, min(n, COSINE_BLOCK_ELEMS // max(1, m)))
    row_vals, row_idx = [], []
    col_vals = col_idx = None
    for r0 in range(0, n, block):
        sims = a[r0:r0 + block] @ b_t  # [r, m]
        v, i = sims.topk(k, dim=1)  # [r, k]
        row_vals.append(v)
        row_idx.append(i)
        cv, ci = sims.topk(min(k, sims.shape[0]), dim=0)  # [k', m]
        cv, ci = cv.T, ci.T + r0  # [m, k']
        if col_vals is None:
            col_vals, col_idx = cv, ci
        else:
            col_vals, col_idx = _merge_topk(col_vals, col_idx, cv, ci, k)
    return (
        torch.cat(row_vals).to(A.dtype),
        torch.cat(row_idx),
        col_vals.to(A.dtype).contiguous(),
        col_idx.contiguous(),
    )


def topk_encode_backward(
    grad_values: Tensor,
    x: Tensor,
    W_enc: Tensor,
    values: Tensor,
    indices: Tensor,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_x [B, d], grad_W_enc [F, d], grad_b_enc [F]) of topk_encode, nonzero only where a
    value was kept and positive (relu). A gradient whose output_mask entry is False is
    returned empty ([0]), as the schema (saefast/ops/schemas.inc) says."""
    acc = _acc_dtype(values.dtype)
    n_features = W_enc.shape[0]
    g = grad_values.to(acc) * (values > 0)  # [B, k]
    grad_x, grad_w, grad_b = x.new_empty(0), W_enc.new_empty(0), W_enc.new_empty(0)
    if output_mask[0]:
        grad_x = _weighted_rows(W_enc, indices, g).to(x.dtype)  # [B, d]
    if output_mask[1]:
        grad_w = _scatter_rows(indices, g, x, n_features).to(W_enc.dtype)  # [F, d]
    if output_mask[2]:
        grad_b = torch.zeros(n_features, dtype=acc, device=g.device)  # [F]
        grad_b = grad_b.index_add_(0, indices.reshape(-1), g.reshape(-1)).to(W_enc.dtype)
    return grad_x, grad_w, grad_b


def sparse_decode_backward(
    grad_out: Tensor,
    values: Tensor,
    indices: Tensor,
    W_dec: Tensor,
    output_mask: list[bool],
) -> tuple[Tensor, Tensor, Tensor]:
    """(grad_values [B, k], grad_W_dec [F, d], grad_b_dec [d]) of sparse_decode; indices get
    no gradient. A gradient whose output_mask entry is False is returned empty ([0])."""
    grad_values, grad_w, grad_b = values.new_empty(0), W_dec.new_empty(0), W_dec.new_empty(0)
    if output_mask[0]:
        grad_values = _gather_dot(W_dec, indices, grad_out).to(values.dtype)  # [B, k]
    if output_mask[1]:
        grad_w = _scatter_rows(indices, values, grad_out, W_dec.shape[0]).to(W_dec.dtype)  # [F, d]
    if output_mask[2]:
        grad_b = grad_out.sum(0, dtype=_acc_dtype(grad_out.dtype)).to(W_dec.dtype)  # [d]
    return grad_values, grad_w, grad_b
