// The sparse row kernels of topk_encode's and sparse_decode's forward and backward on CUDA
// (csrc/cpu/sparse_rows.h on the CPU):
//   weighted_rows      out[b] = sum_j w[b, j] table[idx[b, j]] (+ bias)   a block per row b
//   gather_dot         out[b, j] = <table[idx[b, j]], vec[b]>             a warp per (b, j)
//   scatter_by_latent  out[f] = sum_{e: key e = f} w[e] rows[e / k]       grouped by latent
// scatter_by_latent is deterministic without atomics: the entries are sorted by latent (the
// glue sorts them stably), cut into chunks of kScatterChunk, and each chunk's runs of one
// latent are summed in order. A latent whose entries all lie in one chunk is written by that
// chunk; one spanning several chunks (a latent that fires often) gets its chunks' partial
// sums, each chunk writing at most two (its first run and its last), added in chunk order by
// a second kernel. So a hot latent is spread over many blocks instead of one slow one.

#include "types.cuh"

namespace saefast {
namespace cuda {
namespace {

constexpr int kRowThreads = 256;

template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
weighted_rows_kernel(const T* __restrict__ table, const int64_t* __restrict__ idx,
                     const A* __restrict__ w, const T* __restrict__ bias, T* __restrict__ out,
                     int k, int d, int64_t n_latents) {
  const int64_t b = blockIdx.x;
  const int64_t* row_idx = idx + b * k;
  const A* row_w = w + b * k;
  for (int j = threadIdx.x; j < k; j += blockDim.x) check_index(row_idx[j], n_latents, "sparse rows");
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    A acc = 0;
    for (int j = 0; j < k; ++j) acc += row_w[j] * to_acc<A>(table[row_idx[j] * d + c]);
    if (bias != nullptr) acc += to_acc<A>(bias[c]);
    out[b * d + c] = from_acc<T>(acc);
  }
}

template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
gather_dot_kernel(const T* __restrict__ table, const int64_t* __restrict__ idx,
                  const T* __restrict__ vec, T* __restrict__ out, int k, int d,
                  int64_t n_latents) {
  const int64_t b = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const T* v = vec + b * d;
  for (int j = warp; j < k; j += warps) {
    const int64_t f = idx[b * k + j];
    check_index(f, n_latents, "sparse rows");
    const T* r = table + f * d;
    A acc = 0;
    for (int c = lane; c < d; c += 32) acc += to_acc<A>(r[c]) * to_acc<A>(v[c]);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (lane == 0) out[b * k + j] = from_acc<T>(acc);
  }
}

// One block a chunk of the sorted entries [c * kScatterChunk, ...).
template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
scatter_chunks_kernel(const int64_t* __restrict__ keys, const int64_t* __restrict__ perm,
                      const int64_t* __restrict__ off, const A* __restrict__ w,
                      const T* __restrict__ rows, int64_t N, int k, int d, int64_t F,
                      T* __restrict__ out, T* __restrict__ out_sum, A* __restrict__ ws,
                      A* __restrict__ ws_sum) {
  __shared__ int64_t s_key[kScatterChunk];
  __shared__ int64_t s_row[kScatterChunk];
  __shared__ A s_w[kScatterChunk];
  const int64_t c = blockIdx.x;
  const int64_t p0 = c * kScatterChunk;
  const int n = static_cast<int>(N - p0 < kScatterChunk ? N - p0 : kScatterChunk);
  for (int e = threadIdx.x; e < n; e += blockDim.x) {
    const int64_t q = perm[p0 + e];
    s_key[e] = keys[p0 + e];
    s_row[e] = q / k;
    s_w[e] = w[q];
    check_index(s_key[e], F, "scatter_by_latent");
  }
  __syncthreads();
  int run = 0;
  for (int start = 0; start < n; ++run) {
    const int64_t f = s_key[start];
    int end = start + 1;
    while (end < n && s_key[end] == f) ++end;
    // all of f's entries in this chunk: the chunk owns out[f]; else its first or last run
    const bool whole = off[f] >= p0 && off[f + 1] <= p0 + n;
    const int64_t slot = 2 * c + (run == 0 ? 0 : 1);
    for (int col = threadIdx.x; col < d; col += blockDim.x) {
      A acc = 0;
      for (int e = start; e < end; ++e) acc += s_w[e] * to_acc<A>(rows[s_row[e] * d + col]);
      if (whole) {
        out[f * d + col] = from_acc<T>(acc);
      } else {
        ws[slot * d + col] = acc;
      }
    }
    if (out_sum != nullptr && threadIdx.x == 0) {
      A acc = 0;
      for (int e = start; e < end; ++e) acc += s_w[e];
      if (whole) {
        out_sum[f] = from_acc<T>(acc);
      } else {
        ws_sum[slot] = acc;
      }
    }
    start = end;
  }
}

// One block a latent: the latents spanning chunks add their chunks' partial sums in order.
template <typename T, typename A>
__global__ void __launch_bounds__(kRowThreads)
scatter_spanning_kernel(const int64_t* __restrict__ keys, const int64_t* __restrict__ off,
                        int d, const A* __restrict__ ws, const A* __restrict__ ws_sum,
                        T* __restrict__ out, T* __restrict__ out_sum) {
  const int64_t f = blockIdx.x;
  const int64_t s = off[f], e = off[f + 1];
  if (e <= s) return;
  const int64_t c0 = s / kScatterChunk, c1 = (e - 1) / kScatterChunk;
  if (c0 == c1) return;  // written whole by its chunk
  // in each chunk, f's run is the chunk's first (slot 0) or, in the first chunk, its last
  for (int col = threadIdx.x; col < d; col += blockDim.x) {
    A acc = 0;
    for (int64_t c = c0; c <= c1; ++c)
      acc += ws[(2 * c + (keys[c * kScatterChunk] == f ? 0 : 1)) * d + col];
    out[f * d + col] = from_acc<T>(acc);
  }
  if (out_sum != nullptr && threadIdx.x == 0) {
    A acc = 0;
    for (int64_t c = c0; c <= c1; ++c) acc += ws_sum[2 * c + (keys[c * kScatterChunk] == f ? 0 : 1)];
    out_sum[f] = from_acc<T>(acc);
  }
}

// A block a row; thread t owns the features f with f % 128 == t and adds their
// entries in j order: parallel, yet deterministic when a row repeats an index.
constexpr int kCodesChunk = 1024;

template <typename A>
__global__ void __launch_bounds__(128)
dense_codes_kernel(const int64_t* __restrict__ idx, const A* __restrict__ w, A* __restrict__ z,
                   int k, int64_t F) {
  __shared__ int64_t s_i[kCodesChunk];
  __shared__ A s_w[kCodesChunk];
  const int64_t b = blockIdx.x;
  A* row = z + b * F;
  for (int j0 = 0; j0 < k; j0 += kCodesChunk) {
    const int n = k - j0 < kCodesChunk ? k - j0 : kCodesChunk;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      s_i[j] = idx[b * k + j0 + j];
      s_w[j] = w[b * k + j0 + j];
      check_index(s_i[j], F, "dense_codes");
    }
    __syncthreads();
    const int mine = threadIdx.x, mask = blockDim.x - 1;  // blockDim.x is a power of two
    for (int j = 0; j < n; ++j) {
      const int64_t f = s_i[j];
      if ((static_cast<int>(f) & mask) == mine) row[f] += s_w[j];
    }
    __syncthreads();
  }
}

}  // namespace

cudaError_t dense_codes(const int64_t* idx, const void* w, Dtype acc, void* z, int64_t B,
                        int64_t k, int64_t F, cudaStream_t stream) {
  if (B == 0 || k == 0) return cudaSuccess;
  if (acc == Dtype::kFloat64) {
    dense_codes_kernel<double><<<grid_size(B), 128, 0, stream>>>(
        idx, static_cast<const double*>(w), static_cast<double*>(z), static_cast<int>(k), F);
  } else if (acc == Dtype::kFloat32) {
    dense_codes_kernel<float><<<grid_size(B), 128, 0, stream>>>(
        idx, static_cast<const float*>(w), static_cast<float*>(z), static_cast<int>(k), F);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t weighted_rows(const void* table, Dtype dtype, const int64_t* idx, const void* w,
                          const void* bias, void* out, int64_t B, int64_t k, int64_t d,
                          int64_t n_latents, cudaStream_t stream) {
  if (B == 0 || d == 0) return cudaSuccess;
  return with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    weighted_rows_kernel<T, A><<<grid_size(B), kRowThreads, 0, stream>>>(
        static_cast<const T*>(table), idx, static_cast<const A*>(w), static_cast<const T*>(bias),
        static_cast<T*>(out), static_cast<int>(k), static_cast<int>(d), n_latents);
    return cudaGetLastError();
  });
}

cudaError_t gather_dot(const void* table, Dtype dtype, const int64_t* idx, const void* vec,
                       void* out, int64_t B, int64_t k, int64_t d, int64_t n_latents,
                       cudaStream_t stream) {
  if (B == 0 || k == 0) return cudaSuccess;
  return with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    gather_dot_kernel<T, A><<<grid_size(B), kRowThreads, 0, stream>>>(
        static_cast<const T*>(table), idx, static_cast<const T*>(vec), static_cast<T*>(out),
        static_cast<int>(k), static_cast<int>(d), n_latents);
    return cudaGetLastError();
  });
}

cudaError_t scatter_by_latent(const int64_t* keys, const int64_t* perm, const int64_t* off,
                              const void* w, const void* rows, Dtype dtype, int64_t N,
                              int64_t k, int64_t d, int64_t F, void* out, void* out_sum,
                              void* ws, void* ws_sum, cudaStream_t stream) {
  if (N == 0 || F == 0) return cudaSuccess;
  const int64_t chunks = (N + kScatterChunk - 1) / kScatterChunk;
  return with_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename AccOf<T>::type;
    scatter_chunks_kernel<T, A><<<grid_size(chunks), kRowThreads, 0, stream>>>(
        keys, perm, off, static_cast<const A*>(w), static_cast<const T*>(rows), N,
        static_cast<int>(k), static_cast<int>(d), F, static_cast<T*>(out),
        static_cast<T*>(out_sum), static_cast<A*>(ws), static_cast<A*>(ws_sum));
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    scatter_spanning_kernel<T, A><<<grid_size(F), kRowThreads, 0, stream>>>(
        keys, off, static_cast<int>(d), static_cast<const A*>(ws),
        static_cast<const A*>(ws_sum), static_cast<T*>(out), static_cast<T*>(out_sum));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace saefast
