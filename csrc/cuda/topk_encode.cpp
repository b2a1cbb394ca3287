// topk_encode on CUDA (op contract: saefast/ops/encode.py; the CPU kernel: csrc/cpu/topk_encode.cpp).
//
// Forward: pre = x @ W_enc.T through cuBLAS, blockwise over rows (at most kBlockElems values
// held: 256 MB in float32), then select_rows.cu keeps each row's top-k of pre + b_enc and
// relu's them. Backward (g = grad_values where the kept value is > 0):
//   grad_x = weighted_rows(W_enc, idx, g)        a gather, a block per row
//   grad_W_enc, grad_b_enc = scatter_rows(...)   sorted by latent, deterministic, no atomics
// With large k (AuxK's) the backward runs as GEMMs on the dense [rows, F] gradient of pre
// (glue.h: use_dense), blockwise over rows.

#include <torch/library.h>

#include "glue.h"

namespace saefast {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> topk_encode_cuda(const at::Tensor& x, const at::Tensor& W_enc,
                                                    const at::Tensor& b_enc, int64_t k) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_topk_encode_args(x, W_enc, b_enc, k);
  check_cuda("topk_encode", {{"x", &x}, {"W_enc", &W_enc}, {"b_enc", &b_enc}});
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0);
  at::Tensor vals = at::empty({B, k}, x.options());
  at::Tensor idx = at::empty({B, k}, x.options().dtype(at::kLong));
  const at::Tensor bias = b_enc.to(acc_type(x.scalar_type())).contiguous();
  gemm_select(x, W_enc, bias, k, /*relu=*/true, vals, idx);
  return {vals, idx};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_encode_backward_cuda(
    const at::Tensor& grad_values, const at::Tensor& x, const at::Tensor& W_enc,
    const at::Tensor& values, const at::Tensor& indices, std::array<bool, 3> output_mask) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_cuda("topk_encode_backward", {{"grad_values", &grad_values}, {"x", &x}, {"W_enc", &W_enc},
                                      {"values", &values}, {"indices", &indices}});
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), k = indices.size(1), F = W_enc.size(0), d = x.size(1);
  const at::ScalarType acc = acc_type(values.scalar_type());
  // only kept, positive values pass gradient (relu)
  const at::Tensor g = (grad_values.to(acc) * values.gt(0)).contiguous();  // [B, k]
  const at::Tensor idx = indices.to(at::kLong).contiguous();
  at::Tensor grad_x = x.new_empty({0}), grad_w = W_enc.new_empty({0}), grad_b = W_enc.new_empty({0});
  if (use_dense(k, W_enc.scalar_type())) {  // GEMMs on the dense gradient of pre, by row blocks
    const at::ScalarType dtype = W_enc.scalar_type();
    at::Tensor gw = output_mask[1] ? at::zeros({F, d}, g.options()) : at::Tensor();
    at::Tensor gb = output_mask[2] ? at::zeros({F}, g.options()) : at::Tensor();
    if (output_mask[0]) grad_x = at::empty({B, d}, x.options());
    const int64_t block = row_block(B, F);
    for (int64_t r0 = 0; r0 < B; r0 += block) {
      const int64_t r = std::min(block, B - r0);
      const at::Tensor gz = dense_codes_block(idx, g, r0, r, F);  // [r, F]
      if (output_mask[0]) grad_x.narrow(0, r0, r).copy_(mm_acc(gz, W_enc, dtype));
      if (output_mask[1]) gw.add_(mm_acc(gz.t(), x.narrow(0, r0, r), dtype));
      if (output_mask[2]) gb.add_(gz.sum(0));
    }
    if (output_mask[1]) grad_w = gw.to(dtype);
    if (output_mask[2]) grad_b = gb.to(dtype);
    return {grad_x, grad_w, grad_b};
  }
  if (output_mask[0]) {
    const at::Tensor w = W_enc.contiguous();
    grad_x = at::empty({B, d}, x.options());
    check_launch(weighted_rows(w.data_ptr(), dtype_of(w.scalar_type()), idx.data_ptr<int64_t>(),
                               g.data_ptr(), nullptr, grad_x.data_ptr(), B, k, d, F, stream()));
  }
  if (output_mask[1] || output_mask[2]) {
    auto [gw, gb] = scatter_rows(idx, g, x.contiguous(), F, output_mask[2]);
    if (output_mask[1]) grad_w = gw.to(W_enc.scalar_type());
    if (output_mask[2]) grad_b = gb.to(W_enc.scalar_type());
  }
  return {grad_x, grad_w, grad_b};
}

}  // namespace
}  // namespace cuda
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CUDA, m) {
  m.impl("topk_encode", &saefast::cuda::topk_encode_cuda);
  m.impl("topk_encode_backward", &saefast::cuda::topk_encode_backward_cuda);
}
