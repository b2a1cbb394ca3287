// torch.ops.saefast_lap.*: the assignment solvers of lap.h on CPU tensors (numpy arrays pass
// through torch.from_numpy without a copy). Their own namespace, so saefast's op list
// (the schemas of saefast/ops) stays the ops contract. Python wrapper: saefast/match/_lap.py.
#include <torch/library.h>
#include <ATen/ATen.h>

#include <vector>

#include "lap.h"

namespace saefast {
namespace lap {
namespace {

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), "saefast_lap: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "saefast_lap: ", name, " must be ",
              c10::toString(dtype), ", got ", c10::toString(t.scalar_type()));
  TORCH_CHECK(t.dim() == dim, "saefast_lap: ", name, " must be ", dim, "-D, got shape ",
              t.sizes());
  TORCH_CHECK(t.is_contiguous(), "saefast_lap: ", name, " must be contiguous");
}

at::Tensor stats_tensor(const Stats& s) {
  auto out = at::empty({5}, at::kLong);
  int64_t* p = out.data_ptr<int64_t>();
  p[0] = s.augmented;
  p[1] = s.greedy;
  p[2] = s.scanned;
  p[3] = s.freed;
  p[4] = s.stuck;
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_sparse_op(
    const at::Tensor& indptr, const at::Tensor& indices, const at::Tensor& cost, int64_t n_cols,
    const at::Tensor& row_to_col, const at::Tensor& v, bool warm) {
  check(indptr, "indptr", at::kLong, 1);
  check(indices, "indices", at::kInt, 1);
  check(cost, "cost", at::kDouble, 1);
  check(row_to_col, "row_to_col", at::kLong, 1);
  check(v, "v", at::kDouble, 1);
  const int64_t n = indptr.size(0) - 1;
  TORCH_CHECK(n >= 0 && n <= n_cols, "saefast_lap.solve_sparse: need 0 <= n_rows <= n_cols, got ",
              n, " rows and ", n_cols, " columns");
  TORCH_CHECK(indices.size(0) == cost.size(0), "saefast_lap.solve_sparse: indices and cost "
              "must have one entry per edge");
  TORCH_CHECK(row_to_col.size(0) == n && v.size(0) == n_cols,
              "saefast_lap.solve_sparse: row_to_col must be [n_rows], v [n_cols]");
  const int64_t* ip = indptr.data_ptr<int64_t>();
  TORCH_CHECK(n == 0 || (ip[0] == 0 && ip[n] == indices.size(0)),
              "saefast_lap.solve_sparse: indptr must start at 0 and end at the edge count");
  const int32_t* idx = indices.data_ptr<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(ip[i] <= ip[i + 1], "saefast_lap.solve_sparse: indptr must be non-decreasing");
  }
  for (int64_t e = 0; e < indices.size(0); ++e) {
    TORCH_CHECK(idx[e] >= 0 && idx[e] < n_cols, "saefast_lap.solve_sparse: column index ",
                idx[e], " out of range [0, ", n_cols, ")");
  }
  at::Tensor x = row_to_col.clone();
  at::Tensor vv = v.clone();
  at::Tensor u = at::empty({n}, at::kDouble);
  std::vector<int64_t> stuck;
  const Stats s = solve_sparse(n, n_cols, ip, idx, cost.data_ptr<double>(),
                               x.data_ptr<int64_t>(), u.data_ptr<double>(),
                               vv.data_ptr<double>(), warm, &stuck);
  at::Tensor st = at::empty({static_cast<int64_t>(stuck.size())}, at::kLong);
  std::copy(stuck.begin(), stuck.end(), st.data_ptr<int64_t>());
  return {x, u, vv, st, stats_tensor(s)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_dense_op(const at::Tensor& cost) {
  check(cost, "cost", at::kDouble, 2);
  const int64_t n = cost.size(0), m = cost.size(1);
  TORCH_CHECK(n <= m, "saefast_lap.solve_dense: need n_rows <= n_cols (transpose), got ",
              cost.sizes());
  at::Tensor x = at::empty({n}, at::kLong);
  at::Tensor u = at::empty({n}, at::kDouble);
  at::Tensor v = at::empty({m}, at::kDouble);
  const Stats s = solve_dense(n, m, cost.data_ptr<double>(), x.data_ptr<int64_t>(),
                              u.data_ptr<double>(), v.data_ptr<double>());
  return {x, u, v, stats_tensor(s)};
}

std::tuple<at::Tensor, at::Tensor> candidate_graph_op(const at::Tensor& row_idx,
                                                      const at::Tensor& col_idx) {
  check(row_idx, "row_idx", at::kLong, 2);
  check(col_idx, "col_idx", at::kLong, 2);
  const int64_t n = row_idx.size(0), m = col_idx.size(0);
  TORCH_CHECK(m < (int64_t{1} << 31), "saefast_lap.candidate_graph: too many columns");
  const int64_t* r = row_idx.data_ptr<int64_t>();
  const int64_t* c = col_idx.data_ptr<int64_t>();
  for (int64_t e = 0; e < row_idx.numel(); ++e)
    TORCH_CHECK(r[e] >= 0 && r[e] < m, "saefast_lap.candidate_graph: row_idx out of range");
  for (int64_t e = 0; e < col_idx.numel(); ++e)
    TORCH_CHECK(c[e] >= 0 && c[e] < n, "saefast_lap.candidate_graph: col_idx out of range");
  at::Tensor indptr = at::empty({n + 1}, at::kLong);
  std::vector<int32_t> cols = candidate_graph(n, m, row_idx.size(1), r, col_idx.size(1), c,
                                              indptr.data_ptr<int64_t>());
  at::Tensor indices = at::empty({static_cast<int64_t>(cols.size())}, at::kInt);
  std::copy(cols.begin(), cols.end(), indices.data_ptr<int32_t>());
  return {indptr, indices};
}

at::Tensor rescore_op(const at::Tensor& a, const at::Tensor& b, const at::Tensor& rows,
                      const at::Tensor& cols) {
  check(a, "a", at::kFloat, 2);
  check(b, "b", at::kFloat, 2);
  check(rows, "rows", at::kLong, 1);
  check(cols, "cols", at::kLong, 1);
  TORCH_CHECK(a.size(1) == b.size(1), "saefast_lap.rescore: a and b must have the same d");
  TORCH_CHECK(rows.size(0) == cols.size(0), "saefast_lap.rescore: rows and cols differ in length");
  const int64_t e = rows.size(0);
  const int64_t* r = rows.data_ptr<int64_t>();
  const int64_t* c = cols.data_ptr<int64_t>();
  for (int64_t k = 0; k < e; ++k) {
    TORCH_CHECK(r[k] >= 0 && r[k] < a.size(0) && c[k] >= 0 && c[k] < b.size(0),
                "saefast_lap.rescore: index out of range");
  }
  at::Tensor out = at::empty({e}, at::kDouble);
  rescore(a.size(1), a.data_ptr<float>(), b.data_ptr<float>(), e, r, c, out.data_ptr<double>());
  return out;
}

}  // namespace
}  // namespace lap
}  // namespace saefast

TORCH_LIBRARY(saefast_lap, m) {
  m.def("solve_sparse(Tensor indptr, Tensor indices, Tensor cost, int n_cols, Tensor row_to_col, "
        "Tensor v, bool warm) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
        &saefast::lap::solve_sparse_op);
  m.def("solve_dense(Tensor cost) -> (Tensor, Tensor, Tensor, Tensor)",
        &saefast::lap::solve_dense_op);
  m.def("candidate_graph(Tensor row_idx, Tensor col_idx) -> (Tensor, Tensor)",
        &saefast::lap::candidate_graph_op);
  m.def("rescore(Tensor a, Tensor b, Tensor rows, Tensor cols) -> Tensor",
        &saefast::lap::rescore_op);
}
