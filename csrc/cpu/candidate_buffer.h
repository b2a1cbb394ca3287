// Running top-k selection of (value, index) pairs, shared by topk_encode and cosine_topk: a
// candidate buffer behind a proven lower bound of the k-th best value (no heap).
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
// few candidates. The threshold tests are vectorised into bit masks (simd_masks.h); only
// the survivors are touched one at a time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <type_traits>

#include "isa.h"
#include "simd_masks.h"

// The float32 group maxima are SAEFAST_ISA_CLONES (isa.h). They only add and compare, so
// every clone gives the same bits.

namespace saefast {

// A candidate: value and index (I = int32_t halves the memory where indices fit).
template <typename T, typename I = int64_t>
struct Cand {
  T v;
  I i;
};

// The order as a function object (inlined by nth_element and sort, unlike a function pointer).
struct Better {
  template <typename T, typename I>
  bool operator()(const Cand<T, I>& a, const Cand<T, I>& b) const {
    return a.v > b.v || (a.v == b.v && a.i < b.i);
  }
};

template <typename T>
constexpr T kNoBound = -std::numeric_limits<T>::infinity();

constexpr int64_t kChunk = 16;             // values a vectorised threshold test
constexpr int64_t kMaxBoundGroups = 1024;  // group_bound's scratch; larger k go without

// Buffer capacity for a top-k: room for k kept plus a few chunks of new candidates, so a
// shrink (O(capacity)) comes at most once every k + 2 * kChunk appends.
inline int64_t candidate_capacity(int64_t k) { return 2 * k + 2 * kChunk; }

// Keeps the best k of c[0, n) in c[0, k) (unsorted) and returns the k-th best value, the
// new threshold; with n <= k nothing is dropped and there is no bound.
template <typename T, typename I>
inline T shrink_to_k(Cand<T, I>* c, int64_t& n, int64_t k) {
  if (n <= k) return kNoBound<T>;
  std::nth_element(c, c + k - 1, c + n, Better());
  n = k;
  return c[k - 1].v;
}

// Sorts the best min(n, k) of c[0, n) into c[0, ...), best first; returns how many.
template <typename T, typename I>
inline int64_t best_sorted(Cand<T, I>* c, int64_t n, int64_t k) {
  shrink_to_k(c, n, k);
  std::sort(c, c + n, Better());
  return n;
}

// One row's running top-k over caller-owned storage c[capacity].
template <typename T>
struct CandidateBuffer {
  Cand<T>* c;
  int64_t k, cap;
  int64_t n = 0;
  T thr = kNoBound<T>;

  CandidateBuffer(Cand<T>* storage, int64_t k_, int64_t cap_) : c(storage), k(k_), cap(cap_) {}

  void raise(T bound) { thr = std::max(thr, bound); }
  void make_room(int64_t need) {
    if (cap - n < need) raise(shrink_to_k(c, n, k));
  }
};

namespace scan {

constexpr int64_t kPiece = 1024;  // values a mask pass (masks on the stack)

template <bool kShift, typename T>
SAEFAST_ALWAYS_INLINE T value(const T* row, const T* shift, int64_t j) {
  return kShift ? row[j] + shift[j] : row[j];
}

// The values of a mask's set bits (chunk at j), appended without branches: every survivor
// is written, and counted only while it still passes thr (which a shrink may have raised).
template <bool kShift, typename T>
inline void append_survivors(const T* row, const T* shift, int64_t j, uint32_t m, int64_t offset,
                             CandidateBuffer<T>& buf) {
  buf.make_room(kChunk);
  for (; m; m &= m - 1) {
    const int64_t q = j + masks::lowest_bit(m);
    const T v = value<kShift>(row, shift, q);
    buf.c[buf.n] = {v, offset + q};
    buf.n += v >= buf.thr;
  }
}

// Appends (row[j] + shift[j], offset + j) for j < len to buf unless below its threshold.
template <bool kShift, typename T>
void offer(const T* row, const T* shift, int64_t len, int64_t offset, CandidateBuffer<T>& buf) {
  uint16_t m[kPiece / kChunk];
  for (int64_t p0 = 0; p0 < len; p0 += kPiece) {
    const int64_t piece = std::min(kPiece, len - p0), chunks = piece / kChunk;
    const T thr = buf.thr;
    masks::ge_masks(row + p0, kShift ? shift + p0 : nullptr, &thr, false, chunks, m);
    for (int64_t c = 0; c < chunks; ++c) {
      if (m[c]) append_survivors<kShift>(row, shift, p0 + c * kChunk, m[c], offset, buf);
    }
    for (int64_t j = p0 + chunks * kChunk; j < p0 + piece; ++j) {
      const T v = value<kShift>(row, shift, j);
      if (v >= buf.thr) {
        buf.make_room(1);
        buf.c[buf.n++] = {v, offset + j};
      }
    }
  }
}

// The largest t (to within 1/256 of the values' range) with at least k of vals[0, g) >= t:
// a bisection on the value, each step one vectorisable count, instead of a (branchy)
// selection. Needs g >= k.
template <typename T>
SAEFAST_ALWAYS_INLINE T kth_largest_lower(const T* vals, int64_t g, int64_t k) {
  // min and max lane by lane (vectorises; a plain float min reduction does not)
  T lo16[kChunk], hi16[kChunk];
  for (int64_t q = 0; q < kChunk; ++q) lo16[q] = hi16[q] = vals[q < g ? q : 0];
  int64_t j = 0;
  for (; j + kChunk <= g; j += kChunk) {
    for (int64_t q = 0; q < kChunk; ++q) {
      lo16[q] = vals[j + q] < lo16[q] ? vals[j + q] : lo16[q];
      hi16[q] = vals[j + q] > hi16[q] ? vals[j + q] : hi16[q];
    }
  }
  for (int64_t q = 0; j + q < g; ++q) {
    lo16[q] = vals[j + q] < lo16[q] ? vals[j + q] : lo16[q];
    hi16[q] = vals[j + q] > hi16[q] ? vals[j + q] : hi16[q];
  }
  T lo = lo16[0], hi = hi16[0];
  for (int64_t q = 1; q < kChunk; ++q) {
    lo = lo16[q] < lo ? lo16[q] : lo;
    hi = hi16[q] > hi ? hi16[q] : hi;
  }
  for (int step = 0; step < 8 && lo < hi; ++step) {
    const T mid = lo + (hi - lo) / 2;
    int32_t count = 0;
    for (int64_t q = 0; q < g; ++q) count += vals[q] >= mid;
    if (count >= k) {
      lo = mid;  // at least k values >= mid: still a lower bound
    } else {
      hi = mid;
    }
  }
  return lo;
}

// A lower bound of the k-th largest of row[j] + shift[j], j < len: split the values into g
// groups (j mod g; about 4k of them, a multiple of kChunk so the maxima vectorise); the g
// group maxima are distinct values, so any t with k of them >= t bounds the k-th largest of
// all from below. With 4k groups the bound is close: a tile's top k rarely share a group.
template <bool kShift, typename T>
SAEFAST_ALWAYS_INLINE T group_bound(const T* row, const T* shift, int64_t len, int64_t k) {
  const int64_t g = std::min(len, (4 * k + kChunk - 1) / kChunk * kChunk);
  if (g < k || g > kMaxBoundGroups) return kNoBound<T>;
  T gmax[kMaxBoundGroups];
  for (int64_t q = 0; q < g; ++q) gmax[q] = value<kShift>(row, shift, q);
  int64_t j = g;
  for (; j + g <= len; j += g) {
    for (int64_t q = 0; q < g; ++q) {
      const T v = value<kShift>(row, shift, j + q);
      gmax[q] = v > gmax[q] ? v : gmax[q];
    }
  }
  for (int64_t q = 0; j + q < len; ++q) {
    const T v = value<kShift>(row, shift, j + q);
    gmax[q] = v > gmax[q] ? v : gmax[q];
  }
  return kth_largest_lower(gmax, g, k);
}

namespace {  // internal linkage: each file gets its own clones and resolver
SAEFAST_ISA_CLONES float group_bound_f32(const float* row, const float* shift, int64_t len,
                                          int64_t k) {
  return shift ? group_bound<true>(row, shift, len, k) : group_bound<false>(row, shift, len, k);
}
}  // namespace

template <typename T>
inline T bound(const T* row, const T* shift, int64_t len, int64_t k) {
  if constexpr (std::is_same_v<T, float>) {
    return group_bound_f32(row, shift, len, k);
  } else {
    return shift ? group_bound<true>(row, shift, len, k) : group_bound<false>(row, shift, len, k);
  }
}

}  // namespace scan

// Offers row[j] + shift[j] (shift may be null) with index offset + j, j < len, to buf, first
// raising a still unbounded threshold from these values' group maxima.
template <typename T>
inline void offer_row(const T* row, const T* shift, int64_t len, int64_t offset, CandidateBuffer<T>& buf) {
  if (buf.thr == kNoBound<T>) buf.raise(scan::bound(row, shift, len, buf.k));
  if (shift) {
    scan::offer<true>(row, shift, len, offset, buf);
  } else {
    scan::offer<false>(row, shift, len, offset, buf);
  }
}

}  // namespace saefast
