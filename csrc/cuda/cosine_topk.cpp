// cosine_topk on CUDA (op contract: saefast/ops/cosine.py; the CPU kernel:
// csrc/cpu/cosine_topk.cpp). Rows are L2-normalised in the accumulation type; each side's
// top-k is a gemm_select (glue.h): cosines of a block of rows against all of the other side
// through cuBLAS, then select_rows.cu. The columns' top-k is the rows' of B against A, so the
// GEMM runs twice (the price of never holding [n, m] and of coalesced selection); with
// 131,072 x 131,072 x 768 that is ~26 TFLOP per side, seconds on an H100 in float32.

#include <torch/library.h>

#include "../cpu/unit_rows.h"
#include "glue.h"

namespace saefast {
namespace cuda {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> cosine_topk_cuda(const at::Tensor& A,
                                                                            const at::Tensor& B,
                                                                            int64_t k) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const char* op = "cosine_topk";
  check_matrix(op, "A", A, "[n, d]");
  check_matrix(op, "B", B, "[m, d]");
  TORCH_CHECK_VALUE(A.size(1) == B.size(1), "saefast.cosine_topk: A and B must have the same d, got A ",
                    shape_str(A), " and B ", shape_str(B));
  check_same_float(op, {{"A", &A}, {"B", &B}});
  check_cuda(op, {{"A", &A}, {"B", &B}});
  check_k(op, k, std::min(A.size(0), B.size(0)), "min(n, m)");
  const c10::cuda::CUDAGuard guard(A.device());
  const at::ScalarType acc = acc_type(A.scalar_type());
  const at::Tensor a = normalized_rows(A, acc), b = normalized_rows(B, acc);
  const int64_t n = A.size(0), m = B.size(0);
  at::Tensor row_vals = at::empty({n, k}, A.options()), row_idx = at::empty({n, k}, A.options().dtype(at::kLong));
  at::Tensor col_vals = at::empty({m, k}, A.options()), col_idx = at::empty({m, k}, A.options().dtype(at::kLong));
  gemm_select(a, b, at::Tensor(), k, /*relu=*/false, row_vals, row_idx);
  gemm_select(b, a, at::Tensor(), k, /*relu=*/false, col_vals, col_idx);
  return {row_vals, row_idx, col_vals, col_idx};
}

}  // namespace
}  // namespace cuda
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CUDA, m) {
  m.impl("cosine_topk", &saefast::cuda::cosine_topk_cuda);
}
