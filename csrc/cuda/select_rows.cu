// Top-k per row of a matrix in GPU memory: the selection half of topk_encode and
// cosine_topk on CUDA (the GEMM half is cuBLAS, called from the glue).
//
// One block per row, in two reads of the row:
//   1. Bound: each thread keeps the maxima of 4 disjoint groups of the row's values (1,024
//      groups a row). The k-th largest group maximum tau is a lower bound of the row's k-th
//      best value (k distinct elements reach it), so nothing below tau can be kept.
//   2. Candidates: values >= tau go to a shared buffer (typically ~k-2k of them), which one
//      bitonic sort orders by (value desc, index asc); the first k are the answer.
// A strict total order makes the kept set unique: the result does not depend on the order in
// which threads append candidates. A row with fewer than k finite values (AuxK masks all but
// the dead latents with a -inf bias) keeps its finite ones, then the -inf ones by index, found
// in one ordered scan, so masking costs no slow path. If more candidates than the buffer holds reach tau (mass
// ties), the row is selected exactly in k rounds of a block-wide "next best" instead.
// The same order as the CPU kernels (csrc/cpu/candidate_buffer.h), so with equal values they
// keep the same indices.

#include <climits>

#include "types.cuh"

namespace saefast {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroupsPerThread = 4;
constexpr int kGroups = kThreads * kGroupsPerThread;  // >= kSelectMaxK, so tau exists
constexpr int kCap = 2048;                            // candidate buffer, a power of two
static_assert(kCap >= kGroups && kGroups >= kSelectMaxK, "buffer sizes");

template <typename A>
__device__ __forceinline__ A key_of(A v) {
  return v != v ? neg_inf<A>() : v;  // NaN ranks last
}

template <typename A>
__device__ __forceinline__ bool better(A ka, int ia, A kb, int ib) {
  return ka > kb || (ka == kb && ia < ib);
}

template <typename A>
__device__ __forceinline__ A load_key(const A* __restrict__ row, const A* __restrict__ bias,
                                      int j) {
  A v = row[j];
  if (bias != nullptr) v += bias[j];
  return key_of(v);
}

template <typename A>
__device__ __forceinline__ A amax(A a, A b) { return a > b ? a : b; }

// Sorts s[0, n) descending; n a power of two; all threads of the block call it.
template <typename A>
__device__ void sort_keys_desc(A* s, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int lo = 2 * stride * (i / stride) + (i % stride), hi = lo + stride;
        const A a = s[lo], b = s[hi];
        if ((lo & size) == 0 ? b > a : a > b) {
          s[lo] = b;
          s[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

// Sorts the pairs (key[i], idx[i]), i < n, best first; n a power of two.
template <typename A>
__device__ void sort_pairs_desc(A* key, int* idx, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int lo = 2 * stride * (i / stride) + (i % stride), hi = lo + stride;
        const A ka = key[lo], kb = key[hi];
        const int ia = idx[lo], ib = idx[hi];
        if ((lo & size) == 0 ? better(kb, ib, ka, ia) : better(ka, ia, kb, ib)) {
          key[lo] = kb;
          key[hi] = ka;
          idx[lo] = ib;
          idx[hi] = ia;
        }
      }
      __syncthreads();
    }
  }
}

template <typename A, typename O>
__device__ __forceinline__ void write_one(O* vals, int64_t* idx, int q, A v, int i, bool relu) {
  vals[q] = from_acc<O>(relu && !(v > A(0)) ? A(0) : v);
  idx[q] = i;
}

// The exact slow path: k rounds, each a block-wide search for the best value worse than the
// previous round's. Uses key[0, kThreads) and idx[0, kThreads) as scratch.
template <typename A, typename O>
__device__ void select_by_rounds(const A* __restrict__ row, const A* __restrict__ bias, int n,
                                 int k, bool relu, A* key, int* idx, O* out_vals,
                                 int64_t* out_idx) {
  A prev_k = -neg_inf<A>();
  int prev_i = -1;
  for (int q = 0; q < k; ++q) {
    A best_k = neg_inf<A>();
    int best_i = INT_MAX;  // "none": every element beats it
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
      const A v = load_key(row, bias, j);
      if (better(prev_k, prev_i, v, j) && better(v, j, best_k, best_i)) {
        best_k = v;
        best_i = j;
      }
    }
    key[threadIdx.x] = best_k;
    idx[threadIdx.x] = best_i;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s && better(key[threadIdx.x + s], idx[threadIdx.x + s], key[threadIdx.x],
                                    idx[threadIdx.x])) {
        key[threadIdx.x] = key[threadIdx.x + s];
        idx[threadIdx.x] = idx[threadIdx.x + s];
      }
      __syncthreads();
    }
    prev_k = key[0];
    prev_i = idx[0];
    if (threadIdx.x == 0) write_one(out_vals, out_idx, q, prev_k, prev_i, relu);
    __syncthreads();  // key/idx are overwritten next round
  }
}

// Writes slots [kept, k) with the -inf values of the row in index order (the next ones in
// the order once the finite values are taken). One ordered pass in chunks of kThreads: a
// block-wide prefix count (warp ballots) gives each -inf value its slot. Uses idx[0, 32).
template <typename A, typename O>
__device__ void fill_with_neg_inf(const A* __restrict__ row, const A* __restrict__ bias, int n,
                                  int k, int kept, bool relu, int* scratch, O* out_vals,
                                  int64_t* out_idx) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  int filled = kept;  // the same in every thread
  for (int base = 0; base < n && filled < k; base += blockDim.x) {
    const int j = base + threadIdx.x;
    const bool hit = j < n && !(load_key(row, bias, j) > neg_inf<A>());
    const unsigned ballot = __ballot_sync(0xffffffffu, hit);
    __syncthreads();  // scratch is free
    if (lane == 0) scratch[warp] = __popc(ballot);
    __syncthreads();
    int before = 0, total = 0;
    for (int w = 0; w < warps; ++w) {
      before += w < warp ? scratch[w] : 0;
      total += scratch[w];
    }
    const int slot = filled + before + __popc(ballot & ((1u << lane) - 1u));
    if (hit && slot < k) write_one(out_vals, out_idx, slot, neg_inf<A>(), j, relu);
    filled += total;
  }
}

template <typename A, typename O>
__global__ void __launch_bounds__(kThreads)
select_rows_kernel(const A* __restrict__ pre, int64_t ld, int n, const A* __restrict__ bias,
                   int k, bool relu, O* __restrict__ out_vals, int64_t* __restrict__ out_idx) {
  extern __shared__ __align__(16) unsigned char smem[];
  A* key = reinterpret_cast<A*>(smem);               // [kCap]; first the group maxima
  int* idx = reinterpret_cast<int*>(key + kCap);     // [kCap]
  __shared__ int count;
  const int t = threadIdx.x;
  const A* row = pre + static_cast<int64_t>(blockIdx.x) * ld;
  O* vals_out = out_vals + static_cast<int64_t>(blockIdx.x) * k;
  int64_t* idx_out = out_idx + static_cast<int64_t>(blockIdx.x) * k;

  // 1. the bound tau from group maxima (element j is in group (j % kThreads, j / kThreads % 4))
  A g0 = neg_inf<A>(), g1 = g0, g2 = g0, g3 = g0;
  int j = t;
  for (; j + 3 * kThreads < n; j += 4 * kThreads) {
    g0 = amax(g0, load_key(row, bias, j));
    g1 = amax(g1, load_key(row, bias, j + kThreads));
    g2 = amax(g2, load_key(row, bias, j + 2 * kThreads));
    g3 = amax(g3, load_key(row, bias, j + 3 * kThreads));
  }
  if (j < n) g0 = amax(g0, load_key(row, bias, j));
  if (j + kThreads < n) g1 = amax(g1, load_key(row, bias, j + kThreads));
  if (j + 2 * kThreads < n) g2 = amax(g2, load_key(row, bias, j + 2 * kThreads));
  key[kGroupsPerThread * t] = g0;
  key[kGroupsPerThread * t + 1] = g1;
  key[kGroupsPerThread * t + 2] = g2;
  key[kGroupsPerThread * t + 3] = g3;
  if (t == 0) count = 0;
  __syncthreads();
  sort_keys_desc(key, kGroups);
  // k groups' maxima are >= tau; if tau is -inf (fewer than k groups hold a finite value),
  // the finite values are the candidates and -inf ones fill up after them (step 3)
  const A tau = key[k - 1];
  const bool finite_only = !(tau > neg_inf<A>());
  __syncthreads();

  // 2. candidates >= tau (at least k of them unless finite_only)
  for (j = t; j < n; j += kThreads) {
    const A v = load_key(row, bias, j);
    if (finite_only ? v > neg_inf<A>() : v >= tau) {
      const int p = atomicAdd(&count, 1);
      if (p < kCap) {
        key[p] = v;
        idx[p] = j;
      }
    }
  }
  __syncthreads();
  const int c = count;
  if (c > kCap) {
    select_by_rounds(row, bias, n, k, relu, key, idx, vals_out, idx_out);
    return;
  }
  int m = 1;
  while (m < c) m <<= 1;
  for (int p = c + t; p < m; p += kThreads) {
    key[p] = neg_inf<A>();
    idx[p] = INT_MAX;  // after every real candidate, -inf ones included
  }
  __syncthreads();
  sort_pairs_desc(key, idx, m);
  const int kept = c < k ? c : k;
  for (int q = t; q < kept; q += kThreads) write_one(vals_out, idx_out, q, key[q], idx[q], relu);
  if (kept < k) fill_with_neg_inf(row, bias, n, k, kept, relu, idx, vals_out, idx_out);
}

template <typename A, typename O>
cudaError_t launch(const void* pre, int64_t ld, int64_t rows, int64_t n, const void* bias,
                   int64_t k, bool relu, void* out_vals, int64_t* out_idx, cudaStream_t stream) {
  const size_t smem = kCap * (sizeof(A) + sizeof(int));
  auto kernel = select_rows_kernel<A, O>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  kernel<<<grid_size(rows), kThreads, smem, stream>>>(
      static_cast<const A*>(pre), ld, static_cast<int>(n), static_cast<const A*>(bias),
      static_cast<int>(k), relu, static_cast<O*>(out_vals), out_idx);
  return cudaGetLastError();
}

}  // namespace

cudaError_t select_rows(const void* pre, Dtype acc, int64_t ld, int64_t rows, int64_t n,
                        const void* bias, int64_t k, bool relu, void* out_vals, Dtype out,
                        int64_t* out_idx, cudaStream_t stream) {
  if (k < 1 || k > kSelectMaxK || k > n || n > INT_MAX) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  if (acc == Dtype::kFloat64) {
    if (out != Dtype::kFloat64) return cudaErrorInvalidValue;
    return launch<double, double>(pre, ld, rows, n, bias, k, relu, out_vals, out_idx, stream);
  }
  if (acc != Dtype::kFloat32) return cudaErrorInvalidValue;
  if (out == Dtype::kFloat32)
    return launch<float, float>(pre, ld, rows, n, bias, k, relu, out_vals, out_idx, stream);
  if (out == Dtype::kBFloat16)
    return launch<float, __nv_bfloat16>(pre, ld, rows, n, bias, k, relu, out_vals, out_idx,
                                        stream);
  if (out == Dtype::kFloat16)
    return launch<float, __half>(pre, ld, rows, n, bias, k, relu, out_vals, out_idx, stream);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace saefast
