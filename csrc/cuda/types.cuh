// Device-side type helpers the kernels share: loads widened to the accumulation type,
// stores narrowed from it, and the Dtype -> C++ type mapping of the launchers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include <cstdint>
#include <cstdio>

#include "kernels.h"

namespace saefast {
namespace cuda {

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

template <typename A>
__device__ __forceinline__ A to_acc(float v) { return static_cast<A>(v); }
template <typename A>
__device__ __forceinline__ A to_acc(double v) { return static_cast<A>(v); }
template <typename A>
__device__ __forceinline__ A to_acc(__nv_bfloat16 v) { return static_cast<A>(__bfloat162float(v)); }
template <typename A>
__device__ __forceinline__ A to_acc(__half v) { return static_cast<A>(__half2float(v)); }

template <typename T>
__device__ __forceinline__ T from_acc(float v) { return static_cast<T>(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <typename T>
__device__ __forceinline__ T from_acc(double v) { return static_cast<T>(v); }

template <typename A>
__device__ __forceinline__ A neg_inf();
template <>
__device__ __forceinline__ float neg_inf<float>() { return -CUDART_INF_F; }
template <>
__device__ __forceinline__ double neg_inf<double>() { return -CUDART_INF; }

// An index outside [0, n) stops the kernel (device-side trap), with the reason printed.
__device__ __forceinline__ void check_index(int64_t i, int64_t n, const char* kernel) {
  if (i < 0 || i >= n) {
    printf("saefast %s: index %lld out of range [0, %lld)\n", kernel,
           static_cast<long long>(i), static_cast<long long>(n));
    __trap();
  }
}

// Calls f with a value of the C++ type of `d` (float, double, __nv_bfloat16 or __half).
template <typename Fn>
cudaError_t with_type(Dtype d, Fn&& f) {
  switch (d) {
    case Dtype::kFloat32: return f(float{});
    case Dtype::kFloat64: return f(double{});
    case Dtype::kBFloat16: return f(__nv_bfloat16{});
    case Dtype::kFloat16: return f(__half{});
  }
  return cudaErrorInvalidValue;
}

inline unsigned grid_size(int64_t n) { return static_cast<unsigned>(n); }

}  // namespace cuda
}  // namespace saefast
