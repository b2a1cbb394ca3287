// sparse_decode on CUDA (op contract: saefast/ops/decode.py; the CPU kernel:
// csrc/cpu/sparse_decode.cpp). Forward: weighted_rows (a block per row). Backward:
//   grad_values = gather_dot(W_dec, idx, grad_out)       a warp per kept latent
//   grad_W_dec  = scatter_rows(idx, values, grad_out)    sorted by latent, no atomics
//   grad_b_dec  = grad_out summed over rows
// With large k (AuxK's) the same products run as GEMMs on dense codes (glue.h: use_dense),
// blockwise over rows.
// An out-of-range index stops the kernel (device-side trap): checking it on the host would
// cost a sync per call.

#include <torch/library.h>

#include "glue.h"

namespace saefast {
namespace cuda {
namespace {

at::Tensor sparse_decode_cuda(const at::Tensor& values, const at::Tensor& indices,
                              const at::Tensor& W_dec, const at::Tensor& b_dec) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "sparse_decode";
  check_sparse_decode_args(op, values, indices, W_dec);
  check_sparse_decode_bias(values, W_dec, b_dec);
  check_cuda(op, {{"values", &values}, {"indices", &indices}, {"W_dec", &W_dec}, {"b_dec", &b_dec}});
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t B = values.size(0), k = values.size(1), F = W_dec.size(0), d = W_dec.size(1);
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  const at::Tensor w = values.to(acc_type(values.scalar_type())).contiguous();
  const at::Tensor table = W_dec.contiguous(), bias = b_dec.contiguous();
  at::Tensor out = at::empty({B, d}, values.options());
  if (use_dense(k, values.scalar_type())) {  // codes [rows, F] @ W_dec on tensor cores
    const at::Tensor b_acc = bias.to(w.scalar_type());
    const int64_t block = row_block(B, F);
    for (int64_t r0 = 0; r0 < B; r0 += block) {
      const int64_t r = std::min(block, B - r0);
      out.narrow(0, r0, r).copy_(mm_acc(dense_codes_block(idx, w, r0, r, F), table,
                                        table.scalar_type()).add_(b_acc));
    }
    return out;
  }
  check_launch(weighted_rows(table.data_ptr(), dtype_of(table.scalar_type()), idx.data_ptr<int64_t>(),
                             w.data_ptr(), bias.data_ptr(), out.data_ptr(), B, k, d, F, stream()));
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> sparse_decode_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& values, const at::Tensor& indices,
    const at::Tensor& W_dec, std::array<bool, 3> output_mask) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "sparse_decode_backward";
  check_sparse_decode_args(op, values, indices, W_dec);
  check_cuda(op, {{"grad_out", &grad_out}, {"values", &values}, {"indices", &indices}, {"W_dec", &W_dec}});
  const c10::cuda::CUDAGuard guard(values.device());
  const int64_t B = values.size(0), k = values.size(1), F = W_dec.size(0), d = W_dec.size(1);
  const at::ScalarType acc = acc_type(values.scalar_type());
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  const at::Tensor g = grad_out.to(W_dec.scalar_type()).contiguous();  // [B, d]
  at::Tensor grad_values = values.new_empty({0}), grad_w = W_dec.new_empty({0}), grad_b = W_dec.new_empty({0});
  if (use_dense(k, values.scalar_type()) && (output_mask[0] || output_mask[1])) {
    const at::Tensor table = W_dec.contiguous(), w = values.to(acc).contiguous();
    const at::ScalarType dtype = table.scalar_type();
    at::Tensor gw = output_mask[1] ? at::zeros({F, d}, w.options()) : at::Tensor();  // accumulated
    if (output_mask[0]) grad_values = at::empty({B, k}, values.options());
    const int64_t block = row_block(B, F);
    for (int64_t r0 = 0; r0 < B; r0 += block) {
      const int64_t r = std::min(block, B - r0);
      const at::Tensor g_rows = g.narrow(0, r0, r);
      if (output_mask[0])  // <W_dec[f], grad_out[b]> for every f, then the kept ones
        grad_values.narrow(0, r0, r).copy_(mm_acc(g_rows, table.t(), dtype).gather(1, idx.narrow(0, r0, r)));
      if (output_mask[1]) gw.add_(mm_acc(dense_codes_block(idx, w, r0, r, F).t(), g_rows, dtype));
    }
    if (output_mask[1]) grad_w = gw.to(dtype);
  } else if (output_mask[0]) {
    const at::Tensor table = W_dec.contiguous();
    grad_values = at::empty({B, k}, values.options());
    check_launch(gather_dot(table.data_ptr(), dtype_of(table.scalar_type()), idx.data_ptr<int64_t>(),
                            g.data_ptr(), grad_values.data_ptr(), B, k, d, F, stream()));
  }
  if (output_mask[1] && !use_dense(k, values.scalar_type())) {
    grad_w = scatter_rows(idx, values.to(acc).contiguous(), g, F, /*want_sum=*/false).first;
  }
  if (output_mask[2]) grad_b = grad_out.sum(0, /*keepdim=*/false, acc).to(W_dec.scalar_type());
  return {grad_values, grad_w, grad_b};
}

}  // namespace
}  // namespace cuda
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CUDA, m) {
  m.impl("sparse_decode", &saefast::cuda::sparse_decode_cuda);
  m.impl("sparse_decode_backward", &saefast::cuda::sparse_decode_backward_cuda);
}
