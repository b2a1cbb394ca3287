// The rows of a matrix L2-normalised in the accumulation type: what both cosine_topk kernels
// (csrc/cpu/cosine_topk.cpp, csrc/cuda/cosine_topk.cpp) multiply. A zero row stays zero (its
// norm is clamped), so it has cosine 0 with everything, like the reference.
#pragma once

#include <ATen/ATen.h>

namespace saefast {

inline at::Tensor normalized_rows(const at::Tensor& t, at::ScalarType acc) {
  const at::Tensor a = t.detach().to(acc);  // CPU worker threads run at::mm_out on it
  return (a / a.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12)).contiguous();  // [rows, d]
}

}  // namespace saefast
