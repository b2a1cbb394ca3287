// sparse_decode on the CPU: x_hat = b_dec + sum_j values[:, j] * W_dec[indices[:, j]], and its
// backward (op contract: saefast/ops/decode.py).
//
// Forward: a gather-sum, threads over rows. Backward (grad_out [B, d]):
//   grad_values[b, j] = <W_dec[idx[b, j]], grad_out[b]>          gather-dot, threads over rows
//   grad_W_dec[f]     = sum_{(b, j): idx = f} values[b, j] grad_out[b]
//                        grouped by latent (counting sort), threads own latent ranges: no atomics
//   grad_b_dec        = grad_out summed over rows
// Indices may be int64 or int32 (widened once).

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>

#include "checks.h"
#include "sparse_rows.h"

namespace saefast {
namespace {

at::Tensor sparse_decode_cpu(const at::Tensor& values, const at::Tensor& indices,
                             const at::Tensor& W_dec, const at::Tensor& b_dec) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // kernels run on plain tensors
  const char* op = "sparse_decode";
  check_sparse_decode_args(op, values, indices, W_dec);
  check_sparse_decode_bias(values, W_dec, b_dec);
  check_cpu(op, {{"values", &values}, {"indices", &indices}, {"W_dec", &W_dec}, {"b_dec", &b_dec}});
  const int64_t B = values.size(0), k = values.size(1), F = W_dec.size(0), d = W_dec.size(1);
  const at::Tensor idx = indices.to(at::kLong).contiguous();  // [B, k]
  check_index_range(op, idx, F);
  const at::Tensor v = values.contiguous(), w = W_dec.contiguous(), b = b_dec.contiguous();
  at::Tensor out = at::empty({B, d}, values.options());  // [B, d]
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "sparse_decode_cpu", [&] {
    using S = scalar_t;
    using A = at::opmath_type<S>;
    gather_weighted_rows<S, A, S>(w.data_ptr<S>(), idx.data_ptr<int64_t>(), v.data_ptr<S>(),
                                  b.data_ptr<S>(), out.data_ptr<S>(), B, k, d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_decode_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& values, const at::Tensor& indices,
    const at::Tensor& W_dec, std::array<bool, 3> output_mask) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // kernels run on plain tensors
  const char* op = "sparse_decode_backward";
  check_sparse_decode_args(op, values, indices, W_dec);
  TORCH_CHECK_VALUE(grad_out.dim() == 2 && grad_out.size(0) == values.size(0) &&
                        grad_out.size(1) == W_dec.size(1),
                    "saefast.", op, ": grad_out must be [B, d] = [", values.size(0), ", ",
                    W_dec.size(1), "], got ", shape_str(grad_out));
  check_same_float(op, {{"values", &values}, {"W_dec", &W_dec}, {"grad_out", &grad_out}});
  check_cpu(op, {{"values", &values}, {"indices", &indices}, {"W_dec", &W_dec}, {"grad_out", &grad_out}});
  const int64_t B = values.size(0), k = values.size(1), F = W_dec.size(0), d = W_dec.size(1);
  const at::Tensor idx = indices.to(at::kLong).contiguous();  // [B, k]
  check_index_range(op, idx, F);
  const at::Tensor go = grad_out.contiguous();  // [B, d]
  at::Tensor grad_values = output_mask[0] ? at::empty({B, k}, values.options())
                                          : at::empty({0}, values.options());
  at::Tensor grad_w = output_mask[1] ? at::empty({F, d}, W_dec.options()) : at::empty({0}, W_dec.options());
  at::Tensor grad_b = output_mask[2] ? go.sum(0, /*keepdim=*/false, at::toOpMathType(go.scalar_type())).to(go.scalar_type())
                                     : at::empty({0}, W_dec.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "sparse_decode_backward_cpu", [&] {
    using S = scalar_t;
    using A = at::opmath_type<S>;
    const int64_t* ip = idx.data_ptr<int64_t>();
    if (output_mask[0]) {
      const at::Tensor w = W_dec.contiguous();
      gather_dot<S, A>(w.data_ptr<S>(), ip, go.data_ptr<S>(), grad_values.data_ptr<S>(), B, k, d);
    }
    if (output_mask[1]) {
      const at::Tensor v = values.contiguous();
      const LatentBuckets buckets(ip, B * k, F);
      scatter_rows_by_latent<S, A, S>(buckets, v.data_ptr<S>(), go.data_ptr<S>(), k, d,
                                      grad_w.data_ptr<S>(), nullptr);
    }
  });
  return {grad_values, grad_w, grad_b};
}

}  // namespace
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CPU, m) {
  m.impl("sparse_decode", &saefast::sparse_decode_cpu);
  m.impl("sparse_decode_backward", &saefast::sparse_decode_backward_cpu);
}
