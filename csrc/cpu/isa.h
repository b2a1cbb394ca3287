// Instruction-set dispatch for the CPU kernels, in one place. Two mechanisms, both resolved
// once at load time so that a portable build still runs wide vectors:
//   SAEFAST_ISA_CLONES  on a function: GCC/Clang compile it for AVX-512, AVX2 and baseline
//                       x86-64 and pick one by the CPU (function multiversioning). For loops
//                       the compiler vectorises well (sparse_rows.h, group maxima).
//   best_isa()          for kernels written with intrinsics per ISA (simd_masks.h), which pick
//                       their function pointer from it.
// Every variant must do the same IEEE operations in the same order (no FMA contraction, fixed
// lane sums), so the ISA never changes a result bit; tests/test_simd_masks.py checks each
// variant of the mask kernels on the CPU at hand.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SAEFAST_X86 1
#endif

#if defined(SAEFAST_X86) && defined(__linux__)
#define SAEFAST_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SAEFAST_ISA_CLONES
#endif

// For helpers that must be inlined into the per-ISA clones (a call would run baseline code).
#if defined(__GNUC__) || defined(__clang__)
#define SAEFAST_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SAEFAST_ALWAYS_INLINE inline
#endif

namespace saefast {

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The widest ISA this CPU runs (SSE2 counts as baseline on x86-64).
inline Isa best_isa() {
#ifdef SAEFAST_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

}  // namespace saefast
