// Row gathers and latent-grouped scatters over k indices a row: the sparse parts of the
// Top-K SAE forward and backward (sparse_decode, and topk_encode's backward).
//
// S is the storage type (float, double, BFloat16, Half), A the accumulation type
// (at::opmath_type<S>: float for both 16-bit types), W the type of the per-entry weights.
// Raw, contiguous pointers; callers check shapes.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

// The float32 inner loops are SAEFAST_ISA_CLONES (isa.h). No FMA is enabled in any clone and
// sums use 16 fixed lanes, so every clone gives the same bits.
#include "isa.h"
#include "parallel.h"

namespace saefast {
namespace {

// acc[c] += w * row[c] for c < d
SAEFAST_ISA_CLONES void axpy_f32(float* __restrict acc, float w, const float* __restrict row,
                             int64_t d) {
  for (int64_t c = 0; c < d; ++c) acc[c] += w * row[c];
}

// <a, b> over d entries, as 16 lane sums added in a fixed order
SAEFAST_ISA_CLONES float dot_f32(const float* __restrict a, const float* __restrict b, int64_t d) {
  float lanes[16] = {0};
  int64_t c = 0;
  for (; c + 16 <= d; c += 16) {
    for (int q = 0; q < 16; ++q) lanes[q] += a[c + q] * b[c + q];
  }
  for (int q = 0; c < d; ++c, ++q) lanes[q] += a[c] * b[c];
  float s = 0;
  for (int q = 0; q < 16; ++q) s += lanes[q];
  return s;
}

}  // namespace

// acc[c] += w * row[c], widening row to A
template <typename S, typename A>
inline void axpy(A* acc, A w, const S* row, int64_t d) {
  if constexpr (std::is_same_v<S, float> && std::is_same_v<A, float>) {
    axpy_f32(acc, w, row, d);
  } else {
    for (int64_t c = 0; c < d; ++c) acc[c] += w * static_cast<A>(row[c]);
  }
}

template <typename S, typename A>
inline A dot(const S* row, const A* v, int64_t d) {
  if constexpr (std::is_same_v<S, float> && std::is_same_v<A, float>) {
    return dot_f32(row, v, d);
  } else {
    A s = 0;
    for (int64_t c = 0; c < d; ++c) s += static_cast<A>(row[c]) * v[c];
    return s;
  }
}

// out[b] = bias + sum_j w[b, j] * table[idx[b, j]]  for b < B.    out [B, d]
template <typename S, typename A, typename W>
void gather_weighted_rows(const S* table, const int64_t* idx, const W* w, const S* bias,
                          S* out, int64_t B, int64_t k, int64_t d) {
  at::parallel_for(0, B, grain_for(k * d, 16), [&](int64_t b0, int64_t b1) {
    std::vector<A> acc(d);  // [d]
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t c = 0; c < d; ++c) acc[c] = bias ? static_cast<A>(bias[c]) : A(0);
      for (int64_t j = 0; j < k; ++j) {
        const A wj = static_cast<A>(w[b * k + j]);
        if (wj == A(0)) continue;
        axpy<S, A>(acc.data(), wj, table + idx[b * k + j] * d, d);
      }
      S* o = out + b * d;
      for (int64_t c = 0; c < d; ++c) o[c] = static_cast<S>(acc[c]);
    }
  });
}

// out[b, j] = <table[idx[b, j]], vecs[b]>  for b < B, j < k.    out [B, k]
template <typename S, typename A>
void gather_dot(const S* table, const int64_t* idx, const S* vecs, S* out, int64_t B, int64_t k,
                int64_t d) {
  at::parallel_for(0, B, grain_for(k * d, 16), [&](int64_t b0, int64_t b1) {
    std::vector<A> v(d);  // [d]
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t c = 0; c < d; ++c) v[c] = static_cast<A>(vecs[b * d + c]);
      for (int64_t j = 0; j < k; ++j) {
        out[b * k + j] = static_cast<S>(dot<S, A>(table + idx[b * k + j] * d, v.data(), d));
      }
    }
  });
}

// The B*k entries (b, j) grouped by latent idx[b, j], as a counting sort: the entries of
// latent f are order[start[f] : start[f + 1]], in increasing (b, j). Deterministic.
struct LatentBuckets {
  std::vector<int64_t> start;  // [F + 1]
  std::vector<int64_t> order;  // [B * k] flat entry ids b * k + j

  LatentBuckets(const int64_t* idx, int64_t n_entries, int64_t n_latents)
      : start(n_latents + 1, 0), order(n_entries) {
    for (int64_t e = 0; e < n_entries; ++e) ++start[idx[e] + 1];
    for (int64_t f = 0; f < n_latents; ++f) start[f + 1] += start[f];
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t e = 0; e < n_entries; ++e) order[fill[idx[e]]++] = e;
  }

  // Splits [0, F) into `parts` latent ranges of about equal work (entries + latents), so a
  // latent that fires often does not leave one thread with most of the work.
  std::vector<int64_t> balanced_bounds(int64_t parts) const {
    const int64_t n_latents = static_cast<int64_t>(start.size()) - 1;
    const int64_t total = start.back() + n_latents;
    std::vector<int64_t> bounds{0};
    for (int64_t p = 1; p < parts; ++p) {
      const int64_t target = total * p / parts;
      // first f with start[f] + f >= target (monotone in f)
      int64_t lo = bounds.back(), hi = n_latents;
      while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (start[mid] + mid < target) lo = mid + 1; else hi = mid;
      }
      bounds.push_back(lo);
    }
    bounds.push_back(n_latents);
    return bounds;
  }
};

// out[f] = sum over entries e = (b, j) of latent f of w[e] * rows[b], for every f < F (zero
// rows where a latent has no entry); bias_out[f] (if not null) = sum of those w[e].
// Each thread owns a range of latents and writes only its rows: no atomics.
template <typename S, typename A, typename W>
void scatter_rows_by_latent(const LatentBuckets& buckets, const W* w, const S* rows, int64_t k,
                            int64_t d, S* out, S* bias_out) {
  const int64_t n_latents = static_cast<int64_t>(buckets.start.size()) - 1;
  const int64_t work = (static_cast<int64_t>(buckets.order.size()) + n_latents) * d;
  const int64_t threads = threads_for(work);  // 1: one part, run on this thread
  const int64_t parts = threads == 1 ? 1 : std::max<int64_t>(1, std::min<int64_t>(n_latents, 8 * threads));
  const std::vector<int64_t> bounds = buckets.balanced_bounds(parts);
  at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
    std::vector<A> acc(d);  // [d]
    for (int64_t f = bounds[p0]; f < bounds[p1]; ++f) {
      std::fill(acc.begin(), acc.end(), A(0));
      A wsum = 0;
      for (int64_t s = buckets.start[f]; s < buckets.start[f + 1]; ++s) {
        const int64_t e = buckets.order[s];
        const A we = static_cast<A>(w[e]);
        wsum += we;
        if (we == A(0)) continue;
        axpy<S, A>(acc.data(), we, rows + (e / k) * d, d);
      }
      S* o = out + f * d;
      for (int64_t c = 0; c < d; ++c) o[c] = static_cast<S>(acc[c]);
      if (bias_out) bias_out[f] = static_cast<S>(wsum);
    }
  });
}

}  // namespace saefast
