// Running top-k selection of (value, index) pairs, shared by topk_encode and cosine_topk.
//
// Order: a pair is better when its value is larger, or equal with a smaller index. That is
// a strict total order, so the kept set is unique whatever order the pairs arrive in or how
// the work is split between threads: results are deterministic.
//
// Instead of a heap (a sift per accepted pair), candidates are appended to a buffer behind a
// threshold `thr` that is a proven lower bound of the k-th best value: a value below it has
// at least k strictly better ones and can never be kept, so dropping it is exact. When the
// buffer is full, one nth_element keeps the best k and raises thr to the k-th of them. The
// first bound of a row comes from group maxima (group_bound), so even its first tile appends
// few candidates. Tests on whole chunks of 16 values are vectorised; survivors are appended
// without branches.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

// The float32 scans are compiled for AVX-512, AVX2 and baseline x86-64, picked at load time
// (as in sparse_rows.h). They only add and compare, so every clone gives the same bits.
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define SAEFAST_SCAN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SAEFAST_SCAN_CLONES
#endif

namespace saefast {

template <typename T>
struct Cand {
  T v;
  int64_t i;
};

template <typename T>
inline bool better(const Cand<T>& a, const Cand<T>& b) {
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}

template <typename T>
constexpr T kNoBound = -std::numeric_limits<T>::infinity();

constexpr int64_t kChunk = 16;        // values a vectorised threshold test
constexpr int64_t kMaxBoundGroups = 256;  // group_bound's scratch; larger k go without

// Buffer capacity for a top-k: room for k kept plus a few chunks of new candidates, so a
// shrink (O(capacity)) comes at most once every k + 2 * kChunk appends.
inline int64_t topk_capacity(int64_t k) { return 2 * k + 2 * kChunk; }

// Keeps the best k of c[0, n) in c[0, k) (unsorted) and returns the k-th best value, the
// new threshold; with n <= k nothing is dropped and there is no bound.
template <typename T>
inline T shrink_to_k(Cand<T>* c, int64_t& n, int64_t k) {
  if (n <= k) return kNoBound<T>;
  std::nth_element(c, c + k - 1, c + n, better<T>);
  n = k;
  return c[k - 1].v;
}

// Sorts the best min(n, k) of c[0, n) into c[0, ...), best first; returns how many.
template <typename T>
inline int64_t best_sorted(Cand<T>* c, int64_t n, int64_t k) {
  shrink_to_k(c, n, k);
  std::sort(c, c + n, better<T>);
  return n;
}

// One row's running top-k over caller-owned storage c[capacity].
template <typename T>
struct TopKBuffer {
  Cand<T>* c;
  int64_t k, cap;
  int64_t n = 0;
  T thr = kNoBound<T>;

  TopKBuffer(Cand<T>* storage, int64_t k_, int64_t cap_) : c(storage), k(k_), cap(cap_) {}

  void raise(T bound) { thr = std::max(thr, bound); }
  void make_room(int64_t need) {
    if (cap - n < need) raise(shrink_to_k(c, n, k));
  }
};

namespace scan {

// Appends (row[j] + shift[j], offset + j) for j < len to buf unless below its threshold.
template <bool kShift, typename T>
inline void offer(const T* row, const T* shift, int64_t len, int64_t offset, TopKBuffer<T>& buf) {
  int64_t j = 0;
  for (; j + kChunk <= len; j += kChunk) {
    const T thr = buf.thr;
    T v[kChunk];
    int any = 0;
    for (int64_t q = 0; q < kChunk; ++q) {
      v[q] = kShift ? row[j + q] + shift[j + q] : row[j + q];
      any |= v[q] >= thr;
    }
    if (!any) continue;
    buf.make_room(kChunk);
    for (int64_t q = 0; q < kChunk; ++q) {  // branch-free: write, then count if it passed
      buf.c[buf.n] = {v[q], offset + j + q};
      buf.n += v[q] >= thr;
    }
  }
  for (; j < len; ++j) {
    const T v = kShift ? row[j] + shift[j] : row[j];
    if (v >= buf.thr) {
      buf.make_room(1);
      buf.c[buf.n++] = {v, offset + j};
    }
  }
}

// A lower bound of the k-th largest of row[j] + shift[j], j < len: split the values into
// g >= k groups (j mod g, g a multiple of kChunk so the maxima vectorise); the g group maxima
// are g >= k distinct values, so the k-th largest is at least their minimum.
template <bool kShift, typename T>
inline T group_bound(const T* row, const T* shift, int64_t len, int64_t k) {
  const int64_t g = (k + kChunk - 1) / kChunk * kChunk;
  if (g > kMaxBoundGroups || len < g) return kNoBound<T>;
  T gmax[kMaxBoundGroups];
  for (int64_t q = 0; q < g; ++q) gmax[q] = kShift ? row[q] + shift[q] : row[q];
  int64_t j = g;
  for (; j + g <= len; j += g) {
    for (int64_t q = 0; q < g; ++q) {
      const T v = kShift ? row[j + q] + shift[j + q] : row[j + q];
      gmax[q] = v > gmax[q] ? v : gmax[q];
    }
  }
  for (int64_t q = 0; j + q < len; ++q) {
    const T v = kShift ? row[j + q] + shift[j + q] : row[j + q];
    gmax[q] = v > gmax[q] ? v : gmax[q];
  }
  T bound = gmax[0];
  for (int64_t q = 1; q < g; ++q) bound = gmax[q] < bound ? gmax[q] : bound;
  return bound;
}

// Offers one tile row to its buffer, first raising a still unbounded threshold from the
// tile's own values.
template <bool kShift, typename T>
inline void offer_tile_row(const T* row, const T* shift, int64_t len, int64_t offset,
                           TopKBuffer<T>& buf) {
  if (buf.thr == kNoBound<T>) buf.raise(group_bound<kShift>(row, shift, len, buf.k));
  offer<kShift>(row, shift, len, offset, buf);
}

namespace {  // internal linkage: each file gets its own clones and resolver
SAEFAST_SCAN_CLONES void offer_tile_row_f32(const float* row, const float* shift, int64_t len,
                                            int64_t offset, TopKBuffer<float>& buf) {
  if (shift) {
    offer_tile_row<true>(row, shift, len, offset, buf);
  } else {
    offer_tile_row<false>(row, shift, len, offset, buf);
  }
}
}  // namespace

}  // namespace scan

// Offers row[j] + shift[j] (shift may be null) with index offset + j, j < len, to buf.
template <typename T>
inline void offer_row(const T* row, const T* shift, int64_t len, int64_t offset, TopKBuffer<T>& buf) {
  if constexpr (std::is_same_v<T, float>) {
    scan::offer_tile_row_f32(row, shift, len, offset, buf);
  } else if (shift) {
    scan::offer_tile_row<true>(row, shift, len, offset, buf);
  } else {
    scan::offer_tile_row<false>(row, shift, len, offset, buf);
  }
}

}  // namespace saefast
