// The tiled GEMM-then-select driver shared by topk_encode and cosine_topk: one loop, each op
// a small Select policy (as pytorch_scatter's reducer.h serves several reductions with one).
//
// out = a [n, d] @ b [m, d].T is never held. Work items are (row block, column group) pairs,
// taken dynamically by the threads (parallel.h). Row blocks depend on n only (RowBlocks: the
// result bits then do not depend on the number of threads); a column group is a run of whole
// kGemmTile tiles (tiles.h). For each tile: s = a_block @ b_tile.T (one single-threaded BLAS
// call into the worker's scratch, result in cache), every row of s (+ the policy's shift) is
// offered to the row's running top-k (candidate_buffer.h), then the policy sees the tile.
//
// Select provides:
//   using Extra = ...;                         per-worker state of its own
//   Extra make_extra();
//   const A* shift(int64_t c0);                added to columns c0.. before selection, or null
//   void tile(Extra&, const A* s, int64_t rows, int64_t w, int64_t r0, int64_t c0);
//   void block_done(Extra&);                   after a work item's last tile
//   void row_done(int64_t row, int64_t group, CandidateBuffer<A>&);  its candidates, unsorted
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "candidate_buffer.h"
#include "parallel.h"
#include "tiles.h"

namespace saefast {

struct GemmSelectPlan {
  RowBlocks blocks;
  int64_t groups = 1, tiles_per_group = 1;

  // `groups` column groups of whole tiles over m columns (fewer if there are fewer tiles)
  GemmSelectPlan(int64_t n, int64_t m, int64_t want_groups) : blocks(n, kMaxRowBlock) {
    const int64_t n_tiles = std::max<int64_t>(1, (m + kGemmTile - 1) / kGemmTile);
    const int64_t want = std::max<int64_t>(1, std::min(want_groups, n_tiles));
    tiles_per_group = (n_tiles + want - 1) / want;
    groups = (n_tiles + tiles_per_group - 1) / tiles_per_group;
  }
};

// a, b: contiguous, of the accumulation type A, detached (workers run at::mm_out on them
// without this thread's dispatch guards).
template <typename A, typename Select>
void gemm_select(const at::Tensor& a, const at::Tensor& b, int64_t k, const GemmSelectPlan& p,
                 Select& sel) {
  const int64_t m = b.size(0), cap = candidate_capacity(k);
  const int64_t rb = p.blocks.max_size(), tile = std::min(kGemmTile, m);
  struct Worker {
    at::Tensor buf;                 // [rows, tile] GEMM output
    std::vector<Cand<A>> cand;      // [rows, cap] row candidates
    typename Select::Extra extra;
  };
  auto make_worker = [&] {
    return Worker{at::empty({rb * tile}, a.options()), std::vector<Cand<A>>(rb * cap),
                  sel.make_extra()};
  };
  const int64_t work_per_item = rb * std::min(m, p.tiles_per_group * kGemmTile) * a.size(1);
  parallel_items(p.blocks.count * p.groups, work_per_item, make_worker, [&](int64_t item, Worker& wk) {
    const int64_t blk = item / p.groups, grp = item % p.groups;
    const int64_t r0 = p.blocks.begin(blk), rows = p.blocks.size(blk);
    const int64_t c_begin = grp * p.tiles_per_group * kGemmTile;
    const int64_t c_end = std::min(m, c_begin + p.tiles_per_group * kGemmTile);
    std::vector<CandidateBuffer<A>> bufs;
    bufs.reserve(rows);
    for (int64_t r = 0; r < rows; ++r) bufs.emplace_back(&wk.cand[r * cap], k, cap);
    const at::Tensor a_blk = a.narrow(0, r0, rows);  // [rows, d]
    for (int64_t c0 = c_begin; c0 < c_end; c0 += tile) {
      const int64_t w = std::min(tile, c_end - c0);
      at::Tensor s = wk.buf.narrow(0, 0, rows * w).view({rows, w});  // [rows, w]
      at::mm_out(s, a_blk, b.narrow(0, c0, w).t());
      const A* sp = s.template data_ptr<A>();
      const A* shift = sel.shift(c0);
      for (int64_t r = 0; r < rows; ++r) offer_row(sp + r * w, shift, w, c0, bufs[r]);
      sel.tile(wk.extra, sp, rows, w, r0, c0);
    }
    sel.block_done(wk.extra);
    for (int64_t r = 0; r < rows; ++r) sel.row_done(r0 + r, grp, bufs[r]);
  });
}

}  // namespace saefast
