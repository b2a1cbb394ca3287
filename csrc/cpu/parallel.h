// Dynamic scheduling on top of at::parallel_for: a shared counter hands out work items one
// at a time, so a thread slowed down by other load on the machine does not hold the rest
// back (at::parallel_for splits a range statically). Respects torch.set_num_threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

// MKL's per-thread thread count, its C entry point (mkl.h maps mkl_set_num_threads_local to
// it; the lower-case symbol is the Fortran one, taking int*). libtorch_cpu exports it when
// torch uses MKL. Weak: null on a torch without MKL, where the guard below does nothing.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

namespace saefast {

// A parallel region costs a wake-up of the pool's threads (microseconds when idle); on a
// busy machine it waits until every thread it woke gets a core (up to a scheduler time slice,
// milliseconds), and OpenMP's spin-waits burn the share of the work that is waited for. Below
// this many multiply-adds (or equivalent inner-loop steps) a call runs on the calling thread.
// Measured on the 2-core AMD EPYC of docs/benchmarks.md: a whole topk_encode of 2^17
// multiply-adds (32 x 64 x 64) takes 15 us on one thread, 2^20 (128 x 128 x 64) 44 us, and a
// second thread gained nothing up to 2^23 (256 x 128 x 384: 273 vs 272 us). Which thread runs
// what never changes result bits (row blocks depend on the shape; see RowBlocks), so neither
// does this.
constexpr int64_t kMinParallelWork = int64_t{1} << 17;

// The at::parallel_for grain (indices a thread takes at least) for `work_per_index` each,
// never below `floor`: at::parallel_for runs a range of at most one grain inline.
inline int64_t grain_for(int64_t work_per_index, int64_t floor = 1) {
  return std::max<int64_t>(floor, kMinParallelWork / std::max<int64_t>(1, work_per_index));
}

// Threads worth waking for `total_work`: at most one per kMinParallelWork.
inline int64_t threads_for(int64_t total_work) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), total_work / kMinParallelWork));
}

// Makes the BLAS calls of this thread single-threaded while it lives. Inside an OpenMP team
// the BLAS already is; on the calling thread it is not, and MKL rounds some small GEMMs
// differently with 2 threads than with 1 (seen on an AMD EPYC), so a kernel whose items all
// ran on the caller would give other bits than the same items spread over workers.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : prev_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~SingleThreadedBlas() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(prev_);  // 0 restores the global
  }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int prev_;
};

// For each worker: state = make_state(), then work(item, state) for the items it takes.
// Items must be independent; which thread runs an item must not change the result, so work
// runs its BLAS calls single-threaded wherever it runs. `work_per_item` (multiply-adds, about)
// caps the workers at one per kMinParallelWork of the total.
template <typename MakeState, typename Work>
void parallel_items(int64_t n_items, int64_t work_per_item, MakeState make_state, Work work) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(
      1, std::min<int64_t>(threads_for(n_items * work_per_item), n_items));
  if (workers == 1) {  // at::parallel_for would run it inline, on this thread
    SingleThreadedBlas single;
    auto state = make_state();
    for (int64_t item = 0; item < n_items; ++item) work(item, state);
    return;
  }
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
