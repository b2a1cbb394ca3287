// topk_encode on the CPU: a GEMM tiled over features with a running top-k per row, and its
// sparse backward (op contract: saefast/ops/encode.py; design: docs/ARCHITECTURE.md).
//
// Forward: the shared driver gemm_select.h with x as the rows and W_enc as the columns:
// pre = x_block @ W_tile.T, each row's values + b_enc offered to the row's running top-k
// (candidate_buffer.h). [B, F] is never held, only [rows a block, kGemmTile] a thread. ReLU
// is applied to the kept values (relu is monotone, so the top-k of the raw values is a top-k
// of the relu'd ones). When there are few row blocks, the features split into groups of whole
// tiles for parallelism, whose per-row candidates are merged at the end.
//
// Backward (grad_values [B, k]; g = grad_values where the kept value is > 0, else 0):
//   grad_x[b]     = sum_j g[b, j] W_enc[idx[b, j]]          gather, threads over rows
//   grad_W_enc[f] = sum_{(b, j): idx = f} g[b, j] x[b]       grouped by latent (counting sort),
//   grad_b_enc[f] = sum_{(b, j): idx = f} g[b, j]            threads own latent ranges
// Deterministic, no atomics.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <vector>

#include "candidate_buffer.h"
#include "checks.h"
#include "gemm_select.h"
#include "sparse_rows.h"

namespace saefast {
namespace {

constexpr int64_t kItemsPerThread = 4;  // work items a thread, for dynamic balance
constexpr int64_t kMaxGroupBytes = 64 << 20;  // candidates held for the feature-group merge

void check_topk_encode(const at::Tensor& x, const at::Tensor& W_enc, const at::Tensor& b_enc,
                       int64_t k) {
  check_topk_encode_args(x, W_enc, b_enc, k);
  check_cpu("topk_encode", {{"x", &x}, {"W_enc", &W_enc}, {"b_enc", &b_enc}});
}

// Feature groups: enough work items for kItemsPerThread a thread when the row blocks alone are
// too few (a single-threaded GEMM of 32 rows runs ~25% slower than one of 128 or more, so
// blocks are not cut shorter instead); the groups' candidates wait for the merge, so
// groups x B x capacity of them stay under kMaxGroupBytes.
GemmSelectPlan plan_encode(int64_t B, int64_t F, int64_t k, int64_t cand_bytes) {
  const RowBlocks blocks(B, kMaxRowBlock);
  int64_t want = (kItemsPerThread * at::get_num_threads() + blocks.count - 1) / blocks.count;
  want = std::min(want, std::max<int64_t>(1, kMaxGroupBytes / (B * candidate_capacity(k) * cand_bytes)));
  return GemmSelectPlan(B, F, want);
}

// Writes a row's best k (sorted, relu'd) from c[0, n).
template <typename S, typename A>
void write_row(Cand<A>* c, int64_t n, int64_t k, S* vals, int64_t* idx) {
  best_sorted(c, n, k);
  for (int64_t j = 0; j < k; ++j) {
    vals[j] = static_cast<S>(c[j].v > A(0) ? c[j].v : A(0));
    idx[j] = c[j].i;
  }
}

// The gemm_select policy: b_enc shifts the columns; a finished row is written (one group)
// or kept with its group's threshold for the merge.
template <typename S, typename A>
struct EncodeSelect {
  struct Extra {};
  const A* bias;  // [F]
  int64_t B, k, cap, groups;
  S* out_vals;
  int64_t* out_idx;
  std::vector<Cand<A>> part;    // [groups, B, cap] with several groups
  std::vector<int64_t> part_n;  // [groups, B]
  std::vector<A> part_thr;      // [groups, B]

  Extra make_extra() { return {}; }
  const A* shift(int64_t c0) const { return bias + c0; }
  void tile(Extra&, const A*, int64_t, int64_t, int64_t, int64_t) {}
  void block_done(Extra&) {}
  void row_done(int64_t b, int64_t grp, CandidateBuffer<A>& buf) {
    if (groups == 1) {
      write_row(buf.c, buf.n, k, out_vals + b * k, out_idx + b * k);
      return;
    }
    std::copy(buf.c, buf.c + buf.n, &part[(grp * B + b) * cap]);
    part_n[grp * B + b] = buf.n;
    part_thr[grp * B + b] = buf.thr;
  }

  // every group's threshold bounds the row's k-th best over all groups from below (the group
  // saw k values >= it), so the largest of them filters the union
  void merge_groups() {
    at::parallel_for(0, B, grain_for(groups * cap, 64), [&](int64_t b0, int64_t b1) {
      std::vector<Cand<A>> all(groups * cap);
      for (int64_t b = b0; b < b1; ++b) {
        A bound = kNoBound<A>;
        for (int64_t g = 0; g < groups; ++g) bound = std::max(bound, part_thr[g * B + b]);
        int64_t n = 0;
        for (int64_t g = 0; g < groups; ++g) {
          const Cand<A>* src = &part[(g * B + b) * cap];
          for (int64_t j = 0; j < part_n[g * B + b]; ++j) {
            all[n] = src[j];
            n += src[j].v >= bound;
          }
        }
        write_row(all.data(), n, k, out_vals + b * k, out_idx + b * k);
      }
    });
  }
};

template <typename S, typename A>
void encode(const at::Tensor& xa, const at::Tensor& wa, const at::Tensor& ba, int64_t k,
            S* out_vals, int64_t* out_idx) {
  const int64_t B = xa.size(0), F = wa.size(0);
  const GemmSelectPlan plan = plan_encode(B, F, k, sizeof(Cand<A>));
  const int64_t cap = candidate_capacity(k), parts = plan.groups > 1 ? plan.groups * B : 0;
  EncodeSelect<S, A> sel{ba.data_ptr<A>(), B, k, cap, plan.groups, out_vals, out_idx,
                         std::vector<Cand<A>>(parts * cap), std::vector<int64_t>(parts),
                         std::vector<A>(parts)};
  gemm_select<A>(xa, wa, k, plan, sel);
  if (plan.groups > 1) sel.merge_groups();
}

std::tuple<at::Tensor, at::Tensor> topk_encode_cpu(const at::Tensor& x, const at::Tensor& W_enc,
                                                   const at::Tensor& b_enc, int64_t k) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // kernels run on plain tensors
  check_topk_encode(x, W_enc, b_enc, k);
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  // GEMM operands in the accumulation type (bfloat16 and float16 are widened once, not a tile
  // at a time), detached: worker threads do not inherit this thread's below-autograd guard
  const at::Tensor xa = x.detach().to(acc).contiguous();      // [B, d]
  const at::Tensor wa = W_enc.detach().to(acc).contiguous();  // [F, d]
  const at::Tensor ba = b_enc.to(acc).contiguous();  // [F]
  at::Tensor values = at::empty({x.size(0), k}, x.options());                   // [B, k]
  at::Tensor indices = at::empty({x.size(0), k}, x.options().dtype(at::kLong));  // [B, k]
  if (x.size(0) == 0) return {values, indices};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "topk_encode_cpu", [&] {
    using S = scalar_t;
    encode<S, at::opmath_type<S>>(xa, wa, ba, k, values.data_ptr<S>(), indices.data_ptr<int64_t>());
  });
  return {values, indices};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_encode_backward_cpu(
    const at::Tensor& grad_values, const at::Tensor& x, const at::Tensor& W_enc,
    const at::Tensor& values, const at::Tensor& indices, std::array<bool, 3> output_mask) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // kernels run on plain tensors
  check_topk_encode(x, W_enc, W_enc.select(1, 0), values.size(1));
  TORCH_CHECK_VALUE(values.dim() == 2 && values.size(0) == x.size(0) &&
                        grad_values.sizes() == values.sizes() && indices.sizes() == values.sizes(),
                    "saefast.topk_encode_backward: grad_values, values and indices must be [B, k] "
                    "with B = ", x.size(0), ", got ", shape_str(grad_values), ", ",
                    shape_str(values), ", ", shape_str(indices));
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, "saefast.topk_encode_backward: indices must be int64");
  const int64_t B = x.size(0), d = x.size(1), F = W_enc.size(0), k = values.size(1);
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  // g [B, k]: the incoming gradient where relu let the value through
  const at::Tensor g = (grad_values.to(acc) * values.gt(0)).contiguous();
  const at::Tensor idx = indices.contiguous();
  check_index_range("topk_encode_backward", idx, F);
  at::Tensor grad_x = output_mask[0] ? at::empty({B, d}, x.options()) : at::empty({0}, x.options());
  at::Tensor grad_w = output_mask[1] ? at::empty({F, d}, W_enc.options()) : at::empty({0}, W_enc.options());
  at::Tensor grad_b = output_mask[2] ? at::empty({F}, W_enc.options()) : at::empty({0}, W_enc.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "topk_encode_backward_cpu", [&] {
    using S = scalar_t;
    using A = at::opmath_type<S>;
    const A* gp = g.data_ptr<A>();
    const int64_t* ip = idx.data_ptr<int64_t>();
    if (output_mask[0]) {
      const at::Tensor w = W_enc.contiguous();
      gather_weighted_rows<S, A, A>(w.data_ptr<S>(), ip, gp, nullptr, grad_x.data_ptr<S>(), B, k, d);
    }
    if (output_mask[1] || output_mask[2]) {
      const LatentBuckets buckets(ip, B * k, F);
      if (output_mask[1]) {
        const at::Tensor xc = x.contiguous();
        scatter_rows_by_latent<S, A, A>(buckets, gp, xc.data_ptr<S>(), k, d, grad_w.data_ptr<S>(),
                                        output_mask[2] ? grad_b.data_ptr<S>() : nullptr);
      } else {
        S* bp = grad_b.data_ptr<S>();
        at::parallel_for(0, F, grain_for(B * k / std::max<int64_t>(1, F) + 1, 1024), [&](int64_t f0, int64_t f1) {
          for (int64_t f = f0; f < f1; ++f) {  // each latent's entries in (b, j) order
            A s = 0;
            for (int64_t e = buckets.start[f]; e < buckets.start[f + 1]; ++e) s += gp[buckets.order[e]];
            bp[f] = static_cast<S>(s);
          }
        });
      }
    }
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace
}  // namespace saefast

TORCH_LIBRARY_IMPL(saefast, CPU, m) {
  m.impl("topk_encode", &saefast::topk_encode_cpu);
  m.impl("topk_encode_backward", &saefast::topk_encode_backward_cpu);
}
