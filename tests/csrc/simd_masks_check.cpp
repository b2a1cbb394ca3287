// Every float32 mask kernel of csrc/cpu/simd_masks.h against the scalar reference, whatever
// this CPU picks at load time (the tests of the ops only exercise the picked one).
// Built and run by tests/test_simd_masks.py; exits non-zero on any mismatch.
#include "simd_masks.h"

#include <cstdio>
#include <random>
#include <vector>

using namespace saefast::masks;

int main() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f"), avx2 = __builtin_cpu_supports("avx2");
  std::mt19937 gen(1);
  std::normal_distribution<float> normal(0, 1);
  int bad = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t chunks = 1 + trial % 40;
    const bool ties = trial % 3 == 0;  // small integers: many values equal to the threshold
    std::vector<float> row(16 * chunks), shift(16 * chunks), thr(16 * chunks);
    for (auto& v : row) v = ties ? float(int(normal(gen) * 2)) : normal(gen);
    for (auto& v : shift) v = trial % 5 == 0 ? 0.f : normal(gen);
    for (auto& v : thr) v = ties ? float(int(normal(gen) * 2)) : normal(gen);
    for (int per_column = 0; per_column < 2; ++per_column) {
      for (int with_shift = 0; with_shift < 2; ++with_shift) {
        const float* s = with_shift ? shift.data() : nullptr;
        std::vector<uint16_t> want(chunks), got(chunks);
        ge_masks_scalar<float>(row.data(), s, thr.data(), per_column, chunks, want.data());
        ge_masks_sse2(row.data(), s, thr.data(), per_column, chunks, got.data());
        bad += got != want;
        if (avx2) {
          ge_masks_avx2(row.data(), s, thr.data(), per_column, chunks, got.data());
          bad += got != want;
        }
        if (avx512) {
          ge_masks_avx512(row.data(), s, thr.data(), per_column, chunks, got.data());
          bad += got != want;
        }
      }
    }
  }
  std::printf("avx512 %d avx2 %d mismatches %d\n", avx512, avx2, bad);
  return bad != 0;
}
