// Dynamic scheduling on top of at::parallel_for: a shared counter hands out work items one
// at a time, so a thread slowed down by other load on the machine does not hold the rest
// back (at::parallel_for splits a range statically). Respects torch.set_num_threads.
#pragma once

#include <ATen/Parallel.h>

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

}  // namespace saefast
