// Input checks at the op boundary, with messages a user understands. They mirror the
// Python checks in saefast/ops.py, so a direct torch.ops.saefast.* call fails the same way.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <sstream>
#include <string>

namespace saefast {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << "(";
  for (int64_t i = 0; i < t.dim(); ++i) s << (i ? ", " : "") << t.size(i);
  s << (t.dim() == 1 ? ",)" : ")");
  return s.str();
}

inline void check_matrix(const char* op, const char* name, const at::Tensor& t,
                         const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == 2, "saefast.", op, ": ", name, " must be 2-D ", layout,
                    ", got shape ", shape_str(t));
}

inline bool is_float_dtype(at::ScalarType s) {
  return s == at::kFloat || s == at::kDouble || s == at::kBFloat16;
}

inline void check_same_float(const char* op, const char* names, const at::Tensor& a,
                             const at::Tensor& b) {
  TORCH_CHECK_TYPE(is_float_dtype(a.scalar_type()) && a.scalar_type() == b.scalar_type(),
                   "saefast.", op, ": ", names,
                   " must share one dtype: float32, float64 or bfloat16; got ",
                   a.scalar_type(), " and ", b.scalar_type());
}

inline void check_cpu(const char* op, const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "saefast.", op, ": all inputs must be on one device; ",
                    name, " is on ", t.device());
}

inline void check_k(const char* op, int64_t k, int64_t limit, const char* what) {
  TORCH_CHECK_VALUE(k >= 1 && k <= limit, "saefast.", op, ": k must satisfy 1 <= k <= ", what,
                    " = ", limit, ", got k = ", k);
}

// Every index in [0, n_latents), or a clear error (an out-of-range index would read or
// write outside the weight matrix).
inline void check_index_range(const char* op, const at::Tensor& idx, int64_t n_latents) {
  const int64_t* p = idx.data_ptr<int64_t>();
  const int64_t n = idx.numel();
  int64_t lo = n ? p[0] : 0, hi = lo;
  for (int64_t e = 0; e < n; ++e) {
    lo = std::min(lo, p[e]);
    hi = std::max(hi, p[e]);
  }
  TORCH_CHECK_VALUE(n == 0 || (lo >= 0 && hi < n_latents), "saefast.", op,
                    ": indices must be in [0, F = ", n_latents, "), got values in [", lo, ", ",
                    hi, "]");
}

// The accumulation type of a storage type: float64 stays, everything else is float32.
inline at::ScalarType acc_type(at::ScalarType s) {
  return s == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace saefast
