// The CUDA kernels' launch API: plain C++ and CUDA runtime types, no torch headers, so the
// kernel files (*.cu) compile with nvcc alone (CI does that on a machine without a CUDA
// torch). The torch glue (<op>.cpp beside them) checks inputs, runs the GEMMs through ATen
// (cuBLAS) and calls these launchers on the current stream.
//
// Conventions: every matrix is row-major and contiguous unless a leading dimension is given;
// `A` is the accumulation type (float, or double for float64 inputs); an index that is out of
// range stops the kernel with a device-side trap (the CUDA analogue of torch's
// "index out of range" assert; checking it on the host would need a sync per call).
// Every launcher returns the launch's cudaError_t.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace saefast {
namespace cuda {

enum class Dtype { kFloat32, kFloat64, kBFloat16, kFloat16 };

// --------------------------------------------------------------------------- select_rows.cu

constexpr int kSelectMaxK = 512;  // larger k: the glue sorts instead (rare; slower)

// Per row r of pre [rows, n] (leading dimension ld), the k best of v = pre[r, j] + bias[j]
// (bias may be null), written sorted to out_vals [rows, k] (relu'd when `relu`) and out_idx
// [rows, k]. Order: larger value first, equal values by smaller index (a strict total
// order, so the result is unique and run-to-run deterministic); NaN counts as -inf.
// pre and bias have the accumulation dtype `acc` (kFloat32 or kFloat64); out_vals has
// `out` (kFloat64 with kFloat64; kFloat32, kBFloat16 or kFloat16 with kFloat32). 1 <= k <=
// kSelectMaxK, k <= n.
cudaError_t select_rows(const void* pre, Dtype acc, int64_t ld, int64_t rows, int64_t n,
                        const void* bias, int64_t k, bool relu, void* out_vals, Dtype out,
                        int64_t* out_idx, cudaStream_t stream);

// --------------------------------------------------------------------------- sparse_rows.cu
// `dtype` is the dtype of table/rows/vec/out (float32, float64, bfloat16 or float16); weights
// have its accumulation type (float, or double for float64).

// out[b] = sum_j w[b, j] * table[idx[b, j]] (+ bias when not null). table [n_latents, d],
// idx and w [B, k], bias [d], out [B, d].
cudaError_t weighted_rows(const void* table, Dtype dtype, const int64_t* idx, const void* w,
                          const void* bias, void* out, int64_t B, int64_t k, int64_t d,
                          int64_t n_latents, cudaStream_t stream);

// out[b, j] = <table[idx[b, j]], vec[b]>. table [n_latents, d], idx [B, k], vec [B, d],
// out [B, k].
cudaError_t gather_dot(const void* table, Dtype dtype, const int64_t* idx, const void* vec,
                       void* out, int64_t B, int64_t k, int64_t d, int64_t n_latents,
                       cudaStream_t stream);

// z[b, idx[b, j]] += w[b, j] for j = 0..k-1 in order (each feature's entries in j order:
// deterministic, and repeated indices add up). z [B, F] and w [B, k] have the accumulation dtype `acc`; z must be
// zero on entry. The dense path of large k (glue.h: use_dense) multiplies z with cuBLAS.
cudaError_t dense_codes(const int64_t* idx, const void* w, Dtype acc, void* z, int64_t B,
                        int64_t k, int64_t F, cudaStream_t stream);

// Entries of the sorted order a block of scatter_by_latent reads.
constexpr int64_t kScatterChunk = 64;

// out[f] = sum over entries e with key e = f of w[e] * rows[e / k], and out_sum[f] = sum of
// those w[e] (when out_sum is not null), in a fixed order: no atomics, deterministic.
// keys [N] are the N = B * k latent ids sorted ascending (stably), perm [N] their positions
// in the flat [B, k] order, off [F + 1] the first sorted position of each latent (off[F] =
// N). out [F, d] and out_sum [F] must be zero on entry (latents without entries stay 0).
// ws [ceil(N / kScatterChunk) * 2 * d] and ws_sum [ceil(N / kScatterChunk) * 2] (A) hold
// the partial sums of latents whose entries span several chunks.
cudaError_t scatter_by_latent(const int64_t* keys, const int64_t* perm, const int64_t* off,
                              const void* w, const void* rows, Dtype dtype, int64_t N,
                              int64_t k, int64_t d, int64_t F, void* out, void* out_sum,
                              void* ws, void* ws_sum, cudaStream_t stream);

}  // namespace cuda
}  // namespace saefast
