// Dynamic scheduling on top of at::parallel_for: a shared counter hands out work items one
// at a time, so a thread slowed down by other load on the machine does not hold the rest
// back (at::parallel_for splits a range statically). Respects torch.set_num_threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace saefast {

// For each worker: state = make_state(), then work(item, state) for the items it takes.
// Items must be independent; which thread runs an item must not change the result.
template <typename MakeState, typename Work>
void parallel_items(int64_t n_items, MakeState make_state, Work work) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_items));
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      auto state = make_state();
      for (int64_t item = next.fetch_add(1); item < n_items; item = next.fetch_add(1)) {
        work(item, state);
      }
    }
  });
}

// Rows split into ceil(rows / max_rows) blocks of balanced sizes (they differ by at most one).
// The split depends on the shape only, never on the number of threads: the BLAS may round a
// GEMM of few rows differently (MKL does for fewer than ~16), so a thread-dependent split
// could change result bits; and no block is a tiny remainder.
struct RowBlocks {
  int64_t count, base, extra;  // the first `extra` blocks have base + 1 rows

  RowBlocks(int64_t rows, int64_t max_rows)
      : count(std::max<int64_t>(1, (rows + max_rows - 1) / max_rows)),
        base(rows / count),
        extra(rows % count) {}
  int64_t begin(int64_t b) const { return b * base + std::min(b, extra); }
  int64_t size(int64_t b) const { return base + (b < extra ? 1 : 0); }
  int64_t max_size() const { return base + (extra ? 1 : 0); }
};

}  // namespace saefast
