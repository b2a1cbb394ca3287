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
  return s == at::kFloat || s == at::kDouble || s == at::kBFloat16 || s == at::kHalf;
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
                   " must share one dtype: float32, float64, bfloat16 or float16; got ", got);
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

// The argument checks of the ops that do not depend on the device; each kernel (CPU, CUDA)
// adds its own device check after them.
inline void check_topk_encode_args(const at::Tensor& x, const at::Tensor& W_enc,
                                   const at::Tensor& b_enc, int64_t k) {
  const char* op = "topk_encode";
  check_matrix(op, "x", x, "[B, d]");
  check_matrix(op, "W_enc", W_enc, "[F, d]");
  TORCH_CHECK_VALUE(W_enc.size(1) == x.size(1), "saefast.topk_encode: W_enc must be [F, d] with d = ",
                    x.size(1), " (x is ", shape_str(x), "), got ", shape_str(W_enc));
  TORCH_CHECK_VALUE(b_enc.dim() == 1 && b_enc.size(0) == W_enc.size(0),
                    "saefast.topk_encode: b_enc must be [F] with F = ", W_enc.size(0),
                    ", got shape ", shape_str(b_enc));
  check_same_float(op, {{"x", &x}, {"W_enc", &W_enc}, {"b_enc", &b_enc}});
  check_k(op, k, W_enc.size(0), "F");
}

// sparse_decode and its backward: values, indices, W_dec (b_dec: check_sparse_decode_bias).
inline void check_sparse_decode_args(const char* op, const at::Tensor& values,
                                     const at::Tensor& indices, const at::Tensor& W_dec) {
  check_matrix(op, "values", values, "[B, k]");
  TORCH_CHECK_VALUE(indices.sizes() == values.sizes(), "saefast.", op,
                    ": indices must have the shape of values ", shape_str(values), ", got ",
                    shape_str(indices));
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt,
                   "saefast.", op, ": indices must be int64 (or int32), got ",
                   dtype_name(indices.scalar_type()));
  check_matrix(op, "W_dec", W_dec, "[F, d]");
}

inline void check_sparse_decode_bias(const at::Tensor& values, const at::Tensor& W_dec,
                                     const at::Tensor& b_dec) {
  TORCH_CHECK_VALUE(b_dec.dim() == 1 && b_dec.size(0) == W_dec.size(1),
                    "saefast.sparse_decode: b_dec must be [d] with d = ", W_dec.size(1),
                    " (W_dec is ", shape_str(W_dec), "), got shape ", shape_str(b_dec));
  check_same_float("sparse_decode", {{"values", &values}, {"W_dec", &W_dec}, {"b_dec", &b_dec}});
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
