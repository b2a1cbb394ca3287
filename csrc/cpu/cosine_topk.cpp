// cosine_topk on the CPU: the k largest cosines of every row of A and of every row of B, in
// one blockwise pass over the cosine matrix (op contract: saefast/ops/cosine.py).
//
// Rows are L2-normalised once (in the accumulation type). The shared driver gemm_select.h
// walks blocks of A's rows (one column group: all of B) in tiles: sims = A_block @ B_tile.T,
// every value offered to its row's running top-k (candidate_buffer.h); the policy below also
// offers it to its column's. A row block belongs to one thread, so row buffers are private;
// each thread keeps its own column buffers, merged at the end. A thread's first block bounds
// its columns' thresholds from group maxima before any value is offered.
// Memory: O((n + threads * m) * k) for the buffers plus [rows a block, kGemmTile] a thread;
// [n, m] is never held. The kept set is unique (ties go to the smaller index), so the result
// does not depend on the number of threads.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <memory>
#include <vector>

#include "candidate_buffer.h"
#include "checks.h"
#include "gemm_select.h"
#include "unit_rows.h"

namespace saefast {
namespace {

// One worker's column top-k over all m columns: candidates [m, cap], their counts [m] and
// each column's threshold [m] (contiguous, so a tile row is tested against it in one pass).
// Every worker holds one for all m columns, so it is kept small: int32 row indices and room
// for k + 2 chunks (a shrink every ~32 pushes costs little next to the pushes themselves).
template <typename A>
struct ColumnPart {
  using C = Cand<A, int32_t>;
  int64_t k, cap;
  std::vector<C> cand;
  std::vector<int64_t> n;
  std::vector<A> thr;

  ColumnPart(int64_t m, int64_t k_) : k(k_), cap(k_ + 2 * kChunk), cand(m * cap), n(m, 0),
                                      thr(m, kNoBound<A>) {}

  void push(int64_t col, A v, int64_t i) {
    C* c = &cand[col * cap];
    if (n[col] == cap) thr[col] = std::max(thr[col], shrink_to_k(c, n[col], k));
    c[n[col]++] = {v, static_cast<int32_t>(i)};
  }
};

namespace colscan {

// Offers a tile row's values srow[q] (row index i) to columns col0 + q, q < w.
template <typename A>
void offer(const A* srow, int64_t w, int64_t col0, int64_t i, ColumnPart<A>& part) {
  const A* t = part.thr.data() + col0;
  uint16_t m[kGemmTile / kChunk];
  const int64_t chunks = w / kChunk;
  masks::ge_masks(srow, static_cast<const A*>(nullptr), t, true, chunks, m);
  for (int64_t c = 0; c < chunks; ++c) {
    for (uint32_t bits = m[c]; bits; bits &= bits - 1) {
      const int64_t q = c * kChunk + masks::lowest_bit(bits);
      part.push(col0 + q, srow[q], i);
    }
  }
  for (int64_t q = chunks * kChunk; q < w; ++q) {
    if (srow[q] >= t[q]) part.push(col0 + q, srow[q], i);
  }
}

// Raises the thresholds of columns col0 + q, q < w, from a tile s [rows, w] with rows >= k:
// the rows split into g = min(4k, rows) groups (r mod g); a column's g group maxima are
// distinct values, so a t with k of them >= t bounds its k-th best from below (found per
// column by bisection, as scan::kth_largest_lower, vectorised across the columns).
// scratch: [g + 4, w].
template <typename A>
SAEFAST_ALWAYS_INLINE void raise_bounds(const A* s, int64_t rows, int64_t w, int64_t k,
                                        A* scratch, A* t) {
  const int64_t g = std::min(4 * k, rows);
  A* gmax = scratch;  // [g, w]
  A *lo = scratch + g * w, *hi = lo + w, *mid = hi + w, *count = mid + w;
  std::copy(s, s + g * w, gmax);
  for (int64_t r = g; r < rows; ++r) {
    A* gm = gmax + (r % g) * w;
    const A* srow = s + r * w;
    for (int64_t q = 0; q < w; ++q) gm[q] = srow[q] > gm[q] ? srow[q] : gm[q];
  }
  std::copy(gmax, gmax + w, lo);
  std::copy(gmax, gmax + w, hi);
  for (int64_t r = 1; r < g; ++r) {
    const A* gm = gmax + r * w;
    for (int64_t q = 0; q < w; ++q) {
      lo[q] = gm[q] < lo[q] ? gm[q] : lo[q];
      hi[q] = gm[q] > hi[q] ? gm[q] : hi[q];
    }
  }
  for (int step = 0; step < 8; ++step) {
    for (int64_t q = 0; q < w; ++q) {
      mid[q] = lo[q] + (hi[q] - lo[q]) / 2;
      count[q] = 0;
    }
    for (int64_t r = 0; r < g; ++r) {
      const A* gm = gmax + r * w;
      for (int64_t q = 0; q < w; ++q) count[q] += gm[q] >= mid[q] ? A(1) : A(0);
    }
    for (int64_t q = 0; q < w; ++q) {
      const bool enough = count[q] >= A(k);  // at least k maxima >= mid: still a bound
      lo[q] = enough ? mid[q] : lo[q];
      hi[q] = enough ? hi[q] : mid[q];
    }
  }
  for (int64_t q = 0; q < w; ++q) t[q] = lo[q] > t[q] ? lo[q] : t[q];
}

namespace {  // internal linkage: this file's own clones and resolver
SAEFAST_ISA_CLONES void raise_bounds_f32(const float* s, int64_t rows, int64_t w, int64_t k,
                                          float* scratch, float* t) {
  raise_bounds(s, rows, w, k, scratch, t);
}
}  // namespace

// The column side of one tile: bounds first while the part has none yet, then every row.
template <typename A>
void tile(const A* s, int64_t rows, int64_t w, int64_t col0, int64_t r0, bool fresh, A* scratch,
          ColumnPart<A>& part) {
  if (fresh && rows >= part.k) {
    if constexpr (std::is_same_v<A, float>) {
      raise_bounds_f32(s, rows, w, part.k, scratch, part.thr.data() + col0);
    } else {
      raise_bounds(s, rows, w, part.k, scratch, part.thr.data() + col0);
    }
  }
  for (int64_t r = 0; r < rows; ++r) offer(s + r * w, w, col0, r0 + r, part);
}

}  // namespace colscan


// The gemm_select policy: no shift; each tile's values also go to the worker's column part;
// a finished row is written at once.
template <typename S, typename A>
struct CosineSelect {
  struct Extra {
    ColumnPart<A>* cols;
    bool fresh;            // no column bounds yet
    std::vector<A> gmax;   // [min(4k, rows) + 4, tile], column bounds scratch
  };
  int64_t m, k, rb;
  S* row_vals;
  int64_t* row_idx;
  std::vector<std::unique_ptr<ColumnPart<A>>> part;  // one a worker
  std::atomic<int64_t> next_part{0};

  Extra make_extra() {
    const int64_t p = next_part.fetch_add(1);
    part[p] = std::make_unique<ColumnPart<A>>(m, k);
    const int64_t tile = std::min(kGemmTile, m);
    return Extra{part[p].get(), true,
                 std::vector<A>(rb >= k ? (std::min(4 * k, rb) + 4) * tile : 0)};
  }
  const A* shift(int64_t) const { return nullptr; }
  void tile(Extra& ex, const A* s, int64_t rows, int64_t w, int64_t r0, int64_t c0) {
    colscan::tile(s, rows, w, c0, r0, ex.fresh, ex.gmax.data(), *ex.cols);
  }
  void block_done(Extra& ex) { ex.fresh = false; }
  void row_done(int64_t r, int64_t, CandidateBuffer<A>& buf) {
    best_sorted(buf.c, buf.n, k);
    for (int64_t j = 0; j < k; ++j) {
      row_vals[r * k + j] = static_cast<S>(buf.c[j].v);
      row_idx[r * k + j] = buf.c[j].i;
    }
  }

  // the parts' column candidates: the best k of their union, sorted
  void merge_columns(S* col_vals, int64_t* col_idx) {
    at::parallel_for(0, m, grain_for(static_cast<int64_t>(part.size()) * (k + 2 * kChunk), 256), [&](int64_t c0, int64_t c1) {
      std::vector<Cand<A, int32_t>> all(part.size() * (k + 2 * kChunk));
      for (int64_t c = c0; c < c1; ++c) {
        int64_t cnt = 0;
        for (const auto& pp : part) {
          if (!pp) continue;
          const Cand<A, int32_t>* src = &pp->cand[c * pp->cap];
          cnt = std::copy(src, src + pp->n[c], all.begin() + cnt) - all.begin();
        }
        best_sorted(all.data(), cnt, k);
        for (int64_t j = 0; j < k; ++j) {
          col_vals[c * k + j] = static_cast<S>(all[j].v);
          col_idx[c * k + j] = all[j].i;
        }
      }
    });
  }
};

template <typename S, typename A>
void cosine_topk_impl(const at::Tensor& a, const at::Tensor& b, int64_t k, S* row_vals,
                      int64_t* row_idx, S* col_vals, int64_t* col_idx) {
  const int64_t n = a.size(0), m = b.size(0);
  const GemmSelectPlan plan(n, m, /*want_groups=*/1);
  // one column part a worker; parallel_items runs at most min(threads, items) workers
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), plan.blocks.count));
  CosineSelect<S, A> sel{m, k, plan.blocks.max_size(), row_vals, row_idx,
                         std::vector<std::unique_ptr<ColumnPart<A>>>(parts)};
  gemm_select<A>(a, b, k, plan, sel);
  sel.merge_columns(col_vals, col_idx);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cosine_topk_cpu(const at::Tensor& A,
                                                                          const at::Tensor& B,
                                                                          int64_t k) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // kernels run on plain tensors
  const char* op = "cosine_topk";
  check_matrix(op, "A", A, "[n, d]");
  check_matrix(op, "B", B, "[m, d]");
  TORCH_CHECK_VALUE(A.size(1) == B.size(1), "saefast.cosine_topk: A and B must have the same d, got A ",
                    shape_str(A), " and B ", shape_str(B));
  check_same_float(op, {{"A", &A}, {"B", &B}});
  check_cpu(op, {{"A", &A}, {"B", &B}});
  const int64_t n = A.size(0), m = B.size(0);
  check_k(op, k, std::min(n, m), "min(n, m)");
  TORCH_CHECK_VALUE(n <= std::numeric_limits<int32_t>::max(),
                    "saefast.cosine_topk: A may have at most 2^31 - 1 rows, got ", n);
  const at::ScalarType acc = at::toOpMathType(A.scalar_type());
  const at::Tensor a = normalized_rows(A, acc), b = normalized_rows(B, acc);
  at::Tensor row_vals = at::empty({n, k}, A.options());                       // [n, k]
  at::Tensor row_idx = at::empty({n, k}, A.options().dtype(at::kLong));       // [n, k] into B
  at::Tensor col_vals = at::empty({m, k}, A.options());                       // [m, k]
  at::Tensor col_idx = at::empty({m, k}, A.options().dtype(at::kLong));       // [m, k] into A
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, A.scalar_type(), "cosine_topk_cpu", [&] {
    using S = scalar_t;
    cosine_topk_impl<S, at::opmath_type<S>>(a, b, k, row_vals.data_ptr<S>(), row_idx.data_ptr<int64_t>(),
                             col_vals.data_ptr<S>(), col_idx.data_ptr<int64_t>());
  });
  return {row_vals, row_idx, col_vals, col_idx};
}

}  // namespace
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CPU, m) {
  m.impl("cosine_topk", &saefast::cosine_topk_cpu);
}
