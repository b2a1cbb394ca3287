// Input checks at the op boundary, with messages a user understands: the same messages as the
// Python checks (saefast/ops/checks.py), so an op fails alike whichever kernel runs it.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>

namespace saefast {

using NamedTensors = std::initializer_list<std::pair<const char*, const at::Tensor*>>;

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << "(";
  for (int64_t i = 0; i < t.dim(); ++i) s << (i ? ", " : "") << t.size(i);
  s << (t.dim() == 1 ? ",)" : ")");
  return s.str();
}

// "float32", "int64", ... as Python prints torch dtypes
inline std::string dtype_name(at::ScalarType s) {
  return std::string(c10::getDtypeNames(s).first);
}

inline void check_matrix(const char* op, const char* name, const at::Tensor& t,
                         const char* layout) {
  TORCH_CHECK_VALUE(t.dim() == 2, "saefast.", op, ": ", name, " must be 2-D ", layout,
                    ", got shape ", shape_str(t));
}

inline bool is_float_dtype(at::ScalarType s) {
  return s == at::kFloat || s == at::kDouble || s == at::kBFloat16;
}

inline void check_same_float(const char* op, NamedTensors tensors) {
  const at::ScalarType first = tensors.begin()->second->scalar_type();
  bool ok = is_float_dtype(first);
  std::string names, got;
  for (const auto& [name, t] : tensors) {
    ok = ok && t->scalar_type() == first;
    names += (names.empty() ? "" : ", ") + std::string(name);
    got += (got.empty() ? "" : ", ") + std::string(name) + " " + dtype_name(t->scalar_type());
  }
  TORCH_CHECK_TYPE(ok, "saefast.", op, ": ", names,
                   " must share one dtype: float32, float64 or bfloat16; got ", got);
}

// A CPU kernel runs when the dispatcher picked CPU; another device among the inputs is an error.
inline void check_cpu(const char* op, NamedTensors tensors) {
  bool ok = true;
  std::string got;
  for (const auto& [name, t] : tensors) {
    ok = ok && t->device().is_cpu();
    got += (got.empty() ? "" : ", ") + std::string(name) + " on " + t->device().str();
  }
  TORCH_CHECK_VALUE(ok, "saefast.", op, ": all inputs must be on one device; got ", got);
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

}  // namespace saefast
