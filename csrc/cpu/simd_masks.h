// Threshold tests of a row of values, 16 at a time, into bit masks: the scan that decides
// which values a running top-k (candidate_buffer.h) has to look at, so its cost is most of the
// selection's. Bit q of out[c] is set when  row[16c + q] (+ shift[16c + q])  >=  the threshold
// (one for all, or one per column: thr[16c + q]).
//
// float32 has explicit AVX-512 / AVX2 / SSE2 kernels, picked once at load time by best_isa()
// (isa.h; compilers do not reliably vectorise the mask building inside the larger loops that
// use it); every kernel
// does the same IEEE adds and ordered >= comparisons as the scalar code, so the bits agree.
// Other types use the scalar loop.
#pragma once

#include <cstdint>
#include <type_traits>

#include "isa.h"

#ifdef SAEFAST_X86
#include <immintrin.h>
#endif

namespace saefast {
namespace masks {

// Position of the lowest set bit of m != 0.
inline int lowest_bit(uint32_t m) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctz(m);
#else
  int q = 0;
  while (!(m & 1u)) m >>= 1, ++q;
  return q;
#endif
}

// The reference: any type, any machine.
template <typename T>
inline void ge_masks_scalar(const T* row, const T* shift, const T* thr, bool per_column,
                            int64_t chunks, uint16_t* out) {
  for (int64_t c = 0; c < chunks; ++c) {
    uint32_t m = 0;
    for (int q = 0; q < 16; ++q) {
      const int64_t j = 16 * c + q;
      const T v = shift ? row[j] + shift[j] : row[j];
      m |= static_cast<uint32_t>(v >= thr[per_column ? j : 0]) << q;
    }
    out[c] = static_cast<uint16_t>(m);
  }
}

#ifdef SAEFAST_X86
namespace {  // internal linkage: each file that uses them gets its own copy

__attribute__((target("avx512f"))) void ge_masks_avx512(const float* row, const float* shift,
                                                         const float* thr, bool per_column,
                                                         int64_t chunks, uint16_t* out) {
  const __m512 t0 = _mm512_set1_ps(thr[0]);
  for (int64_t c = 0; c < chunks; ++c) {
    __m512 v = _mm512_loadu_ps(row + 16 * c);
    if (shift) v = _mm512_add_ps(v, _mm512_loadu_ps(shift + 16 * c));
    const __m512 t = per_column ? _mm512_loadu_ps(thr + 16 * c) : t0;
    out[c] = static_cast<uint16_t>(_mm512_cmp_ps_mask(v, t, _CMP_GE_OQ));
  }
}

__attribute__((target("avx2"))) inline uint32_t ge8_avx2(const float* row, const float* shift,
                                                        const float* thr, bool per_column,
                                                        __m256 t0) {
  __m256 v = _mm256_loadu_ps(row);
  if (shift) v = _mm256_add_ps(v, _mm256_loadu_ps(shift));
  const __m256 t = per_column ? _mm256_loadu_ps(thr) : t0;
  return static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(v, t, _CMP_GE_OQ)));
}

__attribute__((target("avx2"))) void ge_masks_avx2(const float* row, const float* shift,
                                                   const float* thr, bool per_column,
                                                   int64_t chunks, uint16_t* out) {
  const __m256 t0 = _mm256_set1_ps(thr[0]);
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t j = 16 * c;
    const uint32_t lo = ge8_avx2(row + j, shift ? shift + j : nullptr, thr + (per_column ? j : 0),
                                 per_column, t0);
    const uint32_t hi = ge8_avx2(row + j + 8, shift ? shift + j + 8 : nullptr,
                                 thr + (per_column ? j + 8 : 0), per_column, t0);
    out[c] = static_cast<uint16_t>(lo | (hi << 8));
  }
}

inline uint32_t ge4_sse(const float* row, const float* shift, const float* thr, bool per_column,
                        __m128 t0) {
  __m128 v = _mm_loadu_ps(row);
  if (shift) v = _mm_add_ps(v, _mm_loadu_ps(shift));
  const __m128 t = per_column ? _mm_loadu_ps(thr) : t0;
  return static_cast<uint32_t>(_mm_movemask_ps(_mm_cmpge_ps(v, t)));
}

void ge_masks_sse2(const float* row, const float* shift, const float* thr, bool per_column,
                   int64_t chunks, uint16_t* out) {
  const __m128 t0 = _mm_set1_ps(thr[0]);
  for (int64_t c = 0; c < chunks; ++c) {
    uint32_t m = 0;
    for (int h = 0; h < 4; ++h) {
      const int64_t j = 16 * c + 4 * h;
      m |= ge4_sse(row + j, shift ? shift + j : nullptr, thr + (per_column ? j : 0), per_column, t0)
           << (4 * h);
    }
    out[c] = static_cast<uint16_t>(m);
  }
}

using MaskFn = void (*)(const float*, const float*, const float*, bool, int64_t, uint16_t*);

MaskFn pick_f32() {
  switch (best_isa()) {
    case Isa::kAvx512: return ge_masks_avx512;
    case Isa::kAvx2: return ge_masks_avx2;
    default: return ge_masks_sse2;
  }
}

const MaskFn ge_masks_f32 = pick_f32();

}  // namespace
#endif

// out[c] for c < chunks (16 values each); thr: one value, or one a value when per_column.
template <typename T>
inline void ge_masks(const T* row, const T* shift, const T* thr, bool per_column, int64_t chunks,
                     uint16_t* out) {
#ifdef SAEFAST_X86
  if constexpr (std::is_same_v<T, float>) {
    ge_masks_f32(row, shift, thr, per_column, chunks, out);
    return;
  }
#endif
  ge_masks_scalar(row, shift, thr, per_column, chunks, out);
}

}  // namespace masks
}  // namespace saefast
