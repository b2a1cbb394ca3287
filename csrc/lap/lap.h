// Exact linear assignment by shortest augmenting paths, on plain arrays (no torch types).
//
// Problem: n rows, m columns, n <= m; costs c_ij on a set of edges (sparse, CSR) or on every
// pair (dense, row-major). Find a matching that assigns EVERY row to a distinct column with
// minimum total cost. The solvers keep LP dual variables u (rows) and v (columns) with
//   u_i + v_j <= c_ij on every edge, u_i + v_j == c_ij on matched edges,
//   v_j <= max(v) for every column and v_j == max(v) for every unmatched column
// (the last line is what the rectangular problem "all rows assigned, columns may stay free"
// needs; it is the dual of padding with m - n zero-cost dummy rows). Up to floating-point
// rounding, these conditions prove optimality; callers verify them (saefast/match/certified.py).
//
// Algorithm: each free row takes its cheapest column when that is free (greedy), then JV's
// augmenting row reduction (4 passes), then for every row still free a Dijkstra on
// reduced costs c_ij - u_i - v_j >= 0 to the nearest free column (Jonker-Volgenant /
// Hungarian shortest augmenting path, binary heap), then v_j += d_j - D on the columns
// finalised before the sink. v never increases. Row duals are implicit:
// u_i = c_{i,x_i} - v_{x_i}. A warm start takes a previous matching and v; rows with a new
// edge that beats their matched edge are freed and re-augmented.
#pragma once

#include <cstdint>
#include <vector>

namespace saefast {
namespace lap {

struct Stats {
  int64_t augmented = 0;  // rows assigned by a Dijkstra search
  int64_t greedy = 0;     // rows assigned directly to their cheapest free column
  int64_t scanned = 0;    // rows scanned by all searches together
  int64_t freed = 0;      // warm start: matched rows released because a new edge beat theirs
  int64_t stuck = 0;      // rows with no augmenting path in the graph (sparse only)
};

// Sparse problem in CSR: row i's edges are indices/cost[indptr[i] .. indptr[i+1]).
// row_to_col [n]: in (warm start, -1 = free; ignored when warm == false), out (-1 = stuck).
// v [m]: in (warm start) / out. u [n]: out (NaN for stuck rows). stuck: rows left unassigned.
Stats solve_sparse(int64_t n, int64_t m, const int64_t* indptr, const int32_t* indices,
                   const double* cost, int64_t* row_to_col, double* u, double* v, bool warm,
                   std::vector<int64_t>* stuck);

// Dense problem: cost [n, m] row-major, n <= m, every entry finite. Cold start.
Stats solve_dense(int64_t n, int64_t m, const double* cost, int64_t* row_to_col, double* u,
                  double* v);

// The candidate graph of a top-k pass in CSR: row i's edges are row_idx[i, :] (k columns) and
// every column j with i in col_idx[j, :], sorted and without duplicates. row_idx [n, k_row],
// col_idx [m, k_col] hold int64 indices. Fills indptr [n + 1] and returns the column indices.
std::vector<int32_t> candidate_graph(int64_t n, int64_t m, int64_t k_row, const int64_t* row_idx,
                                     int64_t k_col, const int64_t* col_idx, int64_t* indptr);

// out[e] = sum_k (double)a[rows[e], k] * (double)b[cols[e], k]: float64 dot products of float32
// rows (each product is exact in float64; the sum is in a fixed order, so results are
// reproducible). a [n, d], b [m, d] row-major.
void rescore(int64_t d, const float* a, const float* b, int64_t n_edges, const int64_t* rows,
             const int64_t* cols, double* out);

}  // namespace lap
}  // namespace saefast
