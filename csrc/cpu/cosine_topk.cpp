// cosine_topk on the CPU: the k largest cosines of every row of A and of every row of B, in
// one blockwise pass over the cosine matrix (DESIGN.md, "Ops").
//
// Rows are L2-normalised once (in the accumulation type). Threads take blocks of A's rows
// (dynamically); for each block, the rows of B are walked in tiles: sims = A_block @ B_tile.T
// (single-threaded BLAS, result in cache), then every value is offered to its row's running
// top-k and to its column's. A row block belongs to one thread, so row heaps are private;
// each thread keeps its own column heaps, merged at the end. Memory: O((n + threads * m) * k)
// for the heaps plus [rows a block, kTileM] a thread; [n, m] is never held. The kept set is unique (ties go to the smaller index), so the result does not depend
// on the number of threads.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <limits>
#include <vector>

#include "checks.h"
#include "parallel.h"
#include "topk_heap.h"

namespace saefast {
namespace {

constexpr int64_t kTileM = 1024;       // rows of B a GEMM tile
constexpr int64_t kMaxRowBlock = 256;  // rows of A a block

at::Tensor normalized_rows(const at::Tensor& t, at::ScalarType acc) {
  const at::Tensor a = t.detach().to(acc);  // worker threads run at::mm_out on it
  return (a / a.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12)).contiguous();  // [rows, d]
}

template <typename S, typename A>
void cosine_topk_impl(const at::Tensor& a, const at::Tensor& b, int64_t k, S* row_vals,
                      int64_t* row_idx, S* col_vals, int64_t* col_idx) {
  const int64_t n = a.size(0), m = b.size(0);
  const int64_t threads = at::get_num_threads();
  const int64_t rb = std::max<int64_t>(
      1, std::min<int64_t>(kMaxRowBlock, (n + 4 * threads - 1) / (4 * threads)));
  const int64_t n_blocks = (n + rb - 1) / rb;
  const int64_t tile = std::min(kTileM, m);
  // one part a worker: its column heaps [m, k] (values, indices, kept count)
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, n_blocks));
  std::vector<std::vector<A>> part_cv(parts);
  std::vector<std::vector<int64_t>> part_ci(parts);
  std::vector<std::vector<int64_t>> part_cn(parts, std::vector<int64_t>(m, 0));
  std::atomic<int64_t> next_part{0};

  struct Worker {
    int64_t part;
    at::Tensor buf;                      // [rows, tile] cosines
    std::vector<A> rv, thr;              // row heaps [rows, k]; column thresholds [m]
    std::vector<int64_t> ri;             // [rows, k]
    std::vector<RunningTopK<A>> cols;    // [m], over part_cv / part_ci[part]
  };
  auto make_worker = [&] {
    const int64_t p = next_part.fetch_add(1);
    part_cv[p].assign(m * k, A(0));
    part_ci[p].assign(m * k, 0);
    Worker w{p, at::empty({rb * tile}, a.options()), std::vector<A>(rb * k),
             std::vector<A>(m, -std::numeric_limits<A>::infinity()), std::vector<int64_t>(rb * k), {}};
    w.cols.reserve(m);
    for (int64_t c = 0; c < m; ++c) w.cols.emplace_back(&part_cv[p][c * k], &part_ci[p][c * k], k);
    return w;
  };
  parallel_items(n_blocks, make_worker, [&](int64_t blk, Worker& wk) {
    const int64_t r0 = blk * rb, rows = std::min(rb, n - r0);
    std::vector<RunningTopK<A>> row_heaps;
    row_heaps.reserve(rows);
    for (int64_t r = 0; r < rows; ++r) row_heaps.emplace_back(&wk.rv[r * k], &wk.ri[r * k], k);
    const at::Tensor a_blk = a.narrow(0, r0, rows);  // [rows, d]
    for (int64_t c0 = 0; c0 < m; c0 += tile) {
      const int64_t w = std::min(tile, m - c0);
      at::Tensor sims = wk.buf.narrow(0, 0, rows * w).view({rows, w});  // [rows, w]
      at::mm_out(sims, a_blk, b.narrow(0, c0, w).t());
      const A* s = sims.data_ptr<A>();
      A* t = wk.thr.data() + c0;
      for (int64_t r = 0; r < rows; ++r) {
        const A* srow = s + r * w;
        offer_row(srow, static_cast<const A*>(nullptr), w, c0, row_heaps[r]);
        // columns: one vectorisable threshold test per chunk, then the few survivors
        constexpr int64_t kChunk = 16;
        for (int64_t c = 0; c < w; c += kChunk) {
          const int64_t e = std::min(w, c + kChunk);
          int any = 0;
          for (int64_t q = c; q < e; ++q) any |= (srow[q] >= t[q]);
          if (!any) continue;
          for (int64_t q = c; q < e; ++q) {
            if (srow[q] >= t[q]) {
              RunningTopK<A>& h = wk.cols[c0 + q];
              h.push(srow[q], r0 + r);
              t[q] = h.threshold();
            }
          }
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      row_heaps[r].sort_descending();
      for (int64_t j = 0; j < k; ++j) {
        row_vals[(r0 + r) * k + j] = static_cast<S>(row_heaps[r].vals[j]);
        row_idx[(r0 + r) * k + j] = row_heaps[r].idx[j];
      }
    }
    std::vector<int64_t>& cn = part_cn[wk.part];
    for (int64_t c = 0; c < m; ++c) cn[c] = wk.cols[c].size;
  });

  // merge the parts' column heaps: the best k of their union, sorted
  at::parallel_for(0, m, 256, [&](int64_t c0, int64_t c1) {
    std::vector<A> hv(k);
    std::vector<int64_t> hi(k);
    for (int64_t c = c0; c < c1; ++c) {
      RunningTopK<A> h(hv.data(), hi.data(), k);
      for (int64_t p = 0; p < parts; ++p) {
        if (part_cn[p].empty()) continue;
        for (int64_t j = 0; j < part_cn[p][c]; ++j) h.push(part_cv[p][c * k + j], part_ci[p][c * k + j]);
      }
      h.sort_descending();
      for (int64_t j = 0; j < k; ++j) {
        col_vals[c * k + j] = static_cast<S>(hv[j]);
        col_idx[c * k + j] = hi[j];
      }
    }
  });
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
  check_same_float(op, "A, B", A, B);
  check_cpu(op, A, "A");
  check_cpu(op, B, "B");
  const int64_t n = A.size(0), m = B.size(0);
  check_k(op, k, std::min(n, m), "min(n, m)");
  const at::ScalarType acc = acc_type(A.scalar_type());
  const at::Tensor a = normalized_rows(A, acc), b = normalized_rows(B, acc);
  at::Tensor row_vals = at::empty({n, k}, A.options());                       // [n, k]
  at::Tensor row_idx = at::empty({n, k}, A.options().dtype(at::kLong));       // [n, k] into B
  at::Tensor col_vals = at::empty({m, k}, A.options());                       // [m, k]
  at::Tensor col_idx = at::empty({m, k}, A.options().dtype(at::kLong));       // [m, k] into A
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, A.scalar_type(), "cosine_topk_cpu", [&] {
    using S = scalar_t;
    using Acc = std::conditional_t<std::is_same_v<S, double>, double, float>;
    cosine_topk_impl<S, Acc>(a, b, k, row_vals.data_ptr<S>(), row_idx.data_ptr<int64_t>(),
                             col_vals.data_ptr<S>(), col_idx.data_ptr<int64_t>());
  });
  return {row_vals, row_idx, col_vals, col_idx};
}

}  // namespace
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CPU, m) {
  m.impl("cosine_topk", &saefast::cosine_topk_cpu);
}
