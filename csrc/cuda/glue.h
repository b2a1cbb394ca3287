// What the CUDA ops' torch glue shares: device checks, the Dtype of a tensor, the current
// stream, a launch check and the latent-sorted scatter (sort + offsets + kernels).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#include <string>

#include "../cpu/checks.h"
#include "kernels.h"

namespace saefast {
namespace cuda {

// A CUDA kernel runs when the dispatcher picked CUDA; every input must be on that one device.
inline void check_cuda(const char* op, NamedTensors tensors) {
  const at::Device first = tensors.begin()->second->device();
  bool ok = true;
  std::string got;
  for (const auto& [name, t] : tensors) {
    ok = ok && t->device() == first;
    got += (got.empty() ? "" : ", ") + std::string(name) + " on " + t->device().str();
  }
  TORCH_CHECK_VALUE(ok && first.is_cuda(), "saefast.", op,
                    ": all inputs must be on one device; got ", got);
}

inline Dtype dtype_of(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return Dtype::kFloat32;
    case at::kDouble: return Dtype::kFloat64;
    case at::kBFloat16: return Dtype::kBFloat16;
    case at::kHalf: return Dtype::kFloat16;
    default: TORCH_CHECK_TYPE(false, "saefast: unsupported dtype ", dtype_name(s));
  }
}

inline at::ScalarType acc_type(at::ScalarType s) { return s == at::kDouble ? at::kDouble : at::kFloat; }

// bfloat16 and float16: stored in 16 bits, multiplied on tensor cores into float32
inline bool is_16bit(at::ScalarType s) { return s == at::kBFloat16 || s == at::kHalf; }

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline void check_launch(cudaError_t err) { C10_CUDA_CHECK(err); }

// out[f] = sum over (b, j) with idx[b, j] = f of w[b, j] * rows[b]; and, when `want_sum`,
// sums[f] = sum of those w[b, j]. idx [B, k] int64, w [B, k] in the accumulation type, rows
// [B, d] contiguous. Returns (out [F, d], sums [F] or undefined), both rows' dtype.
inline std::pair<at::Tensor, at::Tensor> scatter_rows(const at::Tensor& idx, const at::Tensor& w,
                                                      const at::Tensor& rows, int64_t F,
                                                      bool want_sum) {
  const int64_t k = idx.size(1), d = rows.size(1), N = idx.numel();
  at::Tensor out = at::zeros({F, d}, rows.options());
  at::Tensor sums = want_sum ? at::zeros({F}, rows.options()) : at::Tensor();
  if (N == 0) return {out, sums};
  // stable: equal latents keep their (b, j) order, so every sum runs in one fixed order
  auto [keys, perm] = at::sort(idx.reshape({-1}), /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor off = at::searchsorted(keys, at::arange(F + 1, idx.options()));  // [F + 1]
  const int64_t chunks = (N + kScatterChunk - 1) / kScatterChunk;
  const auto acc = w.options();
  at::Tensor ws = at::empty({chunks * 2, d}, acc);
  at::Tensor ws_sum = want_sum ? at::empty({chunks * 2}, acc) : at::Tensor();
  check_launch(scatter_by_latent(
      keys.data_ptr<int64_t>(), perm.data_ptr<int64_t>(), off.data_ptr<int64_t>(), w.data_ptr(),
      rows.data_ptr(), dtype_of(rows.scalar_type()), N, k, d, F, out.data_ptr(),
      want_sum ? sums.data_ptr() : nullptr, ws.data_ptr(), want_sum ? ws_sum.data_ptr() : nullptr,
      stream()));
  return {out, sums};
}

// Whether the sparse products of a [B, k] code with an [F, d] matrix (decode, and both
// backwards) run as dense GEMMs on [B, F] codes instead of gathers: the gathers move k * d
// values a row, the GEMMs do F * d multiply-adds a row on tensor cores, which on an H100 wins
// from k ~ 128 (AuxK's k = d / 2) when they may use them (bfloat16, float16 at the same
// tensor-core rate, or TF32 allowed), and from k = 512 in strict float32
// (benchmarks/bench_cuda.py, section decode; measured in bfloat16, not float16).
inline bool use_dense(int64_t k, at::ScalarType dtype) {
  const bool tensor_cores = is_16bit(dtype) ||
                            (dtype == at::kFloat && at::globalContext().allowTF32CuBLAS());
  return k >= 512 || (k >= 128 && tensor_cores);
}

// a @ b into the accumulation type: bfloat16 or float16 operands multiply on tensor cores into
// float32, the others in `dtype` itself.
inline at::Tensor mm_acc(const at::Tensor& a, const at::Tensor& b, at::ScalarType dtype) {
  if (is_16bit(dtype)) return at::mm(a.to(dtype), b.to(dtype), at::kFloat);
  return at::mm(a.to(dtype), b.to(dtype));
}

// The dense codes z [r, F] (accumulation type) of rows [r0, r0 + r) of (idx, w).
inline at::Tensor dense_codes_block(const at::Tensor& idx, const at::Tensor& w, int64_t r0,
                                    int64_t r, int64_t F) {
  at::Tensor z = at::zeros({r, F}, w.options());
  check_launch(dense_codes(idx.narrow(0, r0, r).data_ptr<int64_t>(), w.narrow(0, r0, r).data_ptr(),
                           dtype_of(w.scalar_type()), z.data_ptr(), r, idx.size(1), F, stream()));
  return z;
}

// Largest [rows, n] block of GEMM output a selection holds at once (elements).
constexpr int64_t kBlockElems = int64_t{1} << 26;

inline int64_t row_block(int64_t rows, int64_t n) {
  return std::max<int64_t>(1, std::min<int64_t>(rows, kBlockElems / std::max<int64_t>(1, n)));
}

// pre [r, n] (accumulation type) = a [r, d] @ b [n, d].T, through cuBLAS (TF32 where
// torch.backends.cuda.matmul.allow_tf32 allows it); bfloat16 and float16 inputs accumulate and
// store in float32 (mm's out_dtype), so the selection ranks unrounded values.
inline void gemm_nt(at::Tensor& pre, const at::Tensor& a, const at::Tensor& b) {
  if (is_16bit(a.scalar_type())) {
    at::mm_out(pre, a, b.t(), at::kFloat);
  } else {
    at::mm_out(pre, a, b.t());
  }
}

// Top-k (value desc, index asc) of every row of a @ b.T (+ bias), blockwise over a's rows.
// a [R, d], b [n, d] (same dtype), bias [n] in the accumulation type or undefined; writes
// vals [R, k] (vals' dtype) and idx [R, k].
inline void gemm_select(const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                        int64_t k, bool relu, at::Tensor& vals, at::Tensor& idx) {
  const int64_t R = a.size(0), n = b.size(0);
  if (R == 0) return;
  const at::ScalarType acc = acc_type(a.scalar_type());
  const int64_t block = row_block(R, n);
  at::Tensor pre = at::empty({block, n}, a.options().dtype(acc));
  for (int64_t r0 = 0; r0 < R; r0 += block) {
    const int64_t r = std::min(block, R - r0);
    at::Tensor p = pre.narrow(0, 0, r);
    gemm_nt(p, a.narrow(0, r0, r), b);
    if (k <= kSelectMaxK) {
      check_launch(select_rows(p.data_ptr(), dtype_of(acc), n, r, n,
                               bias.defined() ? bias.data_ptr() : nullptr, k, relu,
                               vals.narrow(0, r0, r).data_ptr(), dtype_of(vals.scalar_type()),
                               idx.narrow(0, r0, r).data_ptr<int64_t>(), stream()));
    } else {  // large k: a stable sort gives the same order (ties by smaller index)
      at::Tensor v = bias.defined() ? p + bias : p;
      v = at::where(at::isnan(v), -std::numeric_limits<double>::infinity(), v);
      auto [sv, si] = at::sort(v, /*stable=*/true, /*dim=*/1, /*descending=*/true);
      sv = sv.narrow(1, 0, k);
      if (relu) sv = sv.clamp_min(0);
      vals.narrow(0, r0, r).copy_(sv);
      idx.narrow(0, r0, r).copy_(si.narrow(1, 0, k));
    }
  }
}

}  // namespace cuda
}  // namespace saefast
