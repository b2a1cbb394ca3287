// Shortest-augmenting-path assignment (sparse and dense) and float64 rescoring. See lap.h.
#include "lap.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace saefast {
namespace lap {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Warm start: a matched row is released only when a new edge beats its matched edge by more
// than this (reduced costs of an optimal solve are >= 0 up to rounding, ~1e-16 here).
constexpr double kWarmTol = 1e-12;
constexpr int kArrPasses = 4;  // augmenting row reduction passes (JV use 2)

struct SparseGraph {
  const int64_t* indptr;
  const int32_t* indices;
  const double* cost;
  int64_t begin(int64_t i) const { return indptr[i]; }
  int64_t end(int64_t i) const { return indptr[i + 1]; }
  int64_t col(int64_t /*i*/, int64_t k) const { return indices[k]; }
  double c(int64_t k) const { return cost[k]; }
};

struct DenseGraph {
  int64_t m;
  const double* cost;
  int64_t begin(int64_t i) const { return i * m; }
  int64_t end(int64_t i) const { return (i + 1) * m; }
  int64_t col(int64_t i, int64_t k) const { return k - i * m; }
  double c(int64_t k) const { return cost[k]; }
};

template <class G>
class Solver {
 public:
  Solver(const G& g, int64_t n, int64_t m, int64_t* row_to_col, double* v)
      : g_(g), n_(n), m_(m), x_(row_to_col), v_(v), y_(m, -1), mcost_(n, 0.0), d_(m, 0.0),
        pcost_(m, 0.0), pred_(m, -1), seen_(m, 0), done_(m, 0) {}

  // Cold start: nothing matched. A square problem starts from column reduction
  // (v_j = min_i c_ij); a rectangular one from v = 0, so that columns that stay free keep
  // v_j = 0 = max(v) (Dijkstra updates only lower v).
  void cold_start() {
    std::fill(x_, x_ + n_, int64_t{-1});
    std::fill(v_, v_ + m_, n_ == m_ ? kInf : 0.0);
    if (n_ == m_) {
      for (int64_t i = 0; i < n_; ++i)
        for (int64_t k = g_.begin(i); k < g_.end(i); ++k) {
          const int64_t j = g_.col(i, k);
          v_[j] = std::min(v_[j], g_.c(k));
        }
      for (int64_t j = 0; j < m_; ++j)
        if (v_[j] == kInf) v_[j] = 0.0;  // a column without edges
    }
  }

  // Warm start: keep the given matching and v; release rows whose matched edge is gone,
  // duplicated, or beaten by a (new) edge, since u_i = c_{i,x_i} - v_{x_i} must be <= every
  // c_ij - v_j of the row for the duals to stay feasible.
  void warm_start() {
    for (int64_t i = 0; i < n_; ++i) {
      const int64_t j = x_[i];
      if (j < 0 || j >= m_ || y_[j] >= 0) {
        x_[i] = -1;
        continue;
      }
      double matched = kInf, best = kInf;
      for (int64_t k = g_.begin(i); k < g_.end(i); ++k) {
        const int64_t jj = g_.col(i, k);
        if (jj == j) matched = g_.c(k);
        best = std::min(best, g_.c(k) - v_[jj]);
      }
      if (matched == kInf || best < matched - v_[j] - kWarmTol) {
        x_[i] = -1;
        ++stats_.freed;
        continue;
      }
      y_[j] = i;
      mcost_[i] = matched;
    }
  }

  // Each free row takes its cheapest column (by c_ij - v_j) when that column is free: the
  // edge is tight with u_i = min_j (c_ij - v_j), so the duals stay feasible.
  void greedy() {
    for (int64_t i = 0; i < n_; ++i) {
      if (x_[i] >= 0) continue;
      double best = kInf, best_c = 0.0;
      int64_t best_j = -1;
      for (int64_t k = g_.begin(i); k < g_.end(i); ++k) {
        const int64_t j = g_.col(i, k);
        const double r = g_.c(k) - v_[j];
        if (r < best) {
          best = r;
          best_j = j;
          best_c = g_.c(k);
        }
      }
      if (best_j >= 0 && y_[best_j] < 0) {
        x_[i] = best_j;
        y_[best_j] = i;
        mcost_[i] = best_c;
        ++stats_.greedy;
      }
    }
  }

  // Jonker-Volgenant augmenting row reduction: a free row takes its cheapest column j1 and
  // lowers v_j1 until j1 costs it as much as its second cheapest (so u_i = second best, every
  // edge of the row stays feasible); j1's previous row is released and continues the chain.
  // v only decreases and a column once matched stays matched, so the rectangular dual
  // conditions and callers' bounds survive. kArrPasses passes (JV use two); the rows still
  // free are left to Dijkstra.
  void reduce_rows() {
    std::vector<int64_t> free_rows;
    for (int64_t i = 0; i < n_; ++i)
      if (x_[i] < 0) free_rows.push_back(i);
    for (int pass = 0; pass < kArrPasses && !free_rows.empty(); ++pass) {
      const int64_t todo = static_cast<int64_t>(free_rows.size());
      int64_t next_free = 0, k = 0;
      // Each release with a strict price drop is processed at once (slot k - 1); ties go to
      // the list for the next pass. The budget bounds pathological chains.
      int64_t budget = 16 * n_ + 1024;
      while (k < todo && budget-- > 0) {
        const int64_t i = free_rows[k++];
        double u1 = kInf, u2 = kInf, c1 = 0.0, c2 = 0.0;
        int64_t j1 = -1, j2 = -1;
        for (int64_t e = g_.begin(i); e < g_.end(i); ++e) {
          const int64_t j = g_.col(i, e);
          const double r = g_.c(e) - v_[j];
          if (r < u2) {
            if (r < u1) {
              u2 = u1, j2 = j1, c2 = c1;
              u1 = r, j1 = j, c1 = g_.c(e);
            } else {
              u2 = r, j2 = j, c2 = g_.c(e);
            }
          }
        }
        if (j1 < 0) continue;  // a row without edges: stuck, Dijkstra will say so
        int64_t i0 = y_[j1];
        const bool drop = u1 < u2 && j2 >= 0;
        if (drop) {
          v_[j1] -= u2 - u1;
        } else if (i0 >= 0) {
          if (j2 < 0) {  // one edge, taken: leave the row to Dijkstra
            free_rows[next_free++] = i;
            continue;
          }
          j1 = j2, c1 = c2, i0 = y_[j1];
        }
        x_[i] = j1;
        y_[j1] = i;
        mcost_[i] = c1;
        if (i0 >= 0) {
          x_[i0] = -1;
          if (drop) {
            free_rows[--k] = i0;
          } else {
            free_rows[next_free++] = i0;
          }
        }
      }
      while (k < todo) free_rows[next_free++] = free_rows[k++];  // budget ran out
      free_rows.resize(next_free);
    }
  }

  void augment_all(std::vector<int64_t>* stuck) {
    for (int64_t i = 0; i < n_; ++i) {
      if (x_[i] >= 0) continue;
      if (dense_augment(i)) {
        ++stats_.augmented;
      } else {
        ++stats_.stuck;
        if (stuck) stuck->push_back(i);
      }
    }
  }

  void row_duals(double* u) const {
    for (int64_t i = 0; i < n_; ++i)
      u[i] = x_[i] >= 0 ? mcost_[i] - v_[x_[i]] : std::numeric_limits<double>::quiet_NaN();
  }

  Stats stats() const { return stats_; }

 private:
  // Heap entries order by distance, then free columns first: among equally near columns a
  // free one ends the search at once (ties are common: integer costs, duplicated rows).
  struct Entry {
    double d;
    int32_t matched;
    int32_t j;
    bool operator>(const Entry& o) const {
      return d > o.d || (d == o.d && matched > o.matched);
    }
  };

  // True when column j is free and no farther than `bound` (the distance being scanned,
  // which no unscanned column undercuts): then it is a nearest free column, the sink.
  bool relax(int64_t j, double dist, int64_t row, double c, double bound) {
    if (seen_[j] != epoch_ || dist < d_[j]) {
      seen_[j] = epoch_;
      d_[j] = dist;
      pred_[j] = row;
      pcost_[j] = c;
      if (y_[j] < 0 && dist <= bound) return true;
      heap_.push_back(Entry{dist, y_[j] >= 0, static_cast<int32_t>(j)});
      std::push_heap(heap_.begin(), heap_.end(), std::greater<>());
    }
    return false;
  }

  // Dijkstra from free row i0 over reduced costs to the nearest free column; then the dual
  // update and the augmentation. False (and nothing changed) when no free column is reachable.
  bool augment(int64_t i0) {
    ++epoch_;
    heap_.clear();
    final_.clear();
    for (int64_t k = g_.begin(i0); k < g_.end(i0); ++k) {
      const int64_t j = g_.col(i0, k);
      relax(j, g_.c(k) - v_[j], i0, g_.c(k), -kInf);  // offset by u_i0: cancels in d_j - D
    }
    int64_t sink = -1;
    while (sink < 0 && !heap_.empty()) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
      const Entry top = heap_.back();
      heap_.pop_back();
      const double dj = top.d;
      const int64_t j = top.j;
      if (done_[j] == epoch_ || dj > d_[j]) continue;  // stale entry
      if (y_[j] < 0) {
        sink = j;
        break;
      }
      done_[j] = epoch_;
      final_.push_back(static_cast<int32_t>(j));
      const int64_t i = y_[j];
      const double ui = mcost_[i] - v_[j];
      ++stats_.scanned;
      for (int64_t k = g_.begin(i); k < g_.end(i); ++k) {
        const int64_t j2 = g_.col(i, k);
        if (done_[j2] == epoch_) continue;
        if (relax(j2, dj + (g_.c(k) - v_[j2] - ui), i, g_.c(k), dj)) {
          sink = j2;
          break;
        }
      }
    }
    if (sink < 0) return false;
    finish(i0, sink);
    return true;
  }

  // The dual update of the scanned columns and the augmentation along pred_ to the sink.
  void finish(int64_t i0, int64_t sink) {
    const double D = d_[sink];
    // d_j <= D; the min() keeps v non-increasing even when rounding says d_j exceeds D by an
    // ulp, which callers rely on (a bound on max_j (cos_ij + v_j) stays valid across solves).
    for (const int32_t j : final_) v_[j] += std::min(0.0, d_[j] - D);
    for (int64_t j = sink;;) {
      const int64_t i = pred_[j];
      const int64_t prev = x_[i];
      x_[i] = j;
      y_[j] = i;
      mcost_[i] = pcost_[j];
      if (i == i0) break;
      j = prev;
    }
  }

  // Every row of a dense graph holds every column, so a heap would take all m columns of each
  // scanned row: Jonker-Volgenant's shortest path instead keeps one distance per column and
  // finds the nearest unscanned one by a linear scan fused with the relaxation (O(m) per
  // scanned row, no heap). Sparse graphs keep the heap (`augment`).
  bool dense_augment(int64_t i0) {
    if constexpr (!std::is_same_v<G, DenseGraph>) {
      return augment(i0);
    } else {
      todo_.resize(m_);
      final_.clear();
      const double* row = g_.cost + i0 * m_;
      int64_t best = -1, bt = -1;  // the nearest unscanned column and its slot in todo_
      double mn = kInf;
      for (int64_t j = 0; j < m_; ++j) {
        todo_[j] = static_cast<int32_t>(j);
        d_[j] = row[j] - v_[j];  // offset by u_i0: cancels in d_j - D
        pred_[j] = i0;
        pcost_[j] = row[j];
        if (nearer(j, d_[j], best, mn)) best = bt = j, mn = d_[j];
      }
      int64_t live = m_, sink = -1;
      while (best >= 0) {
        const int64_t j = best;
        if (y_[j] < 0) {  // the nearest column is free: the sink
          sink = j;
          break;
        }
        todo_[bt] = todo_[--live];  // j is scanned
        final_.push_back(static_cast<int32_t>(j));
        ++stats_.scanned;
        const int64_t i = y_[j];
        const double dj = mn, ui = mcost_[i] - v_[j];
        const double* ci = g_.cost + i * m_;
        best = bt = -1;
        mn = kInf;
        for (int64_t t = 0; t < live; ++t) {
          const int64_t j2 = todo_[t];
          const double nd = dj + (ci[j2] - v_[j2] - ui);
          if (nd < d_[j2]) {
            d_[j2] = nd;
            pred_[j2] = i;
            pcost_[j2] = ci[j2];
          }
          if (nearer(j2, d_[j2], best, mn)) best = j2, bt = t, mn = d_[j2];
        }
      }
      if (sink < 0) return false;
      finish(i0, sink);
      return true;
    }
  }

  // Column j at distance dj beats the best so far: nearer, or as near and free (a free column
  // ends the search at once; ties are common with duplicated rows).
  bool nearer(int64_t j, double dj, int64_t best, double mn) const {
    return dj < mn || (dj == mn && best >= 0 && y_[j] < 0 && y_[best] >= 0);
  }

  const G& g_;
  int64_t n_, m_;
  int64_t* x_;  // row -> column
  double* v_;   // column duals
  std::vector<int64_t> y_;  // column -> row
  std::vector<double> mcost_;  // cost of each row's matched edge
  std::vector<double> d_, pcost_;
  std::vector<int64_t> pred_;
  std::vector<uint32_t> seen_, done_;
  uint32_t epoch_ = 0;
  std::vector<Entry> heap_;
  std::vector<int32_t> final_;
  std::vector<int32_t> todo_;  // dense_augment: the unscanned columns
  Stats stats_;
};

}  // namespace

Stats solve_sparse(int64_t n, int64_t m, const int64_t* indptr, const int32_t* indices,
                   const double* cost, int64_t* row_to_col, double* u, double* v, bool warm,
                   std::vector<int64_t>* stuck) {
  const SparseGraph g{indptr, indices, cost};
  Solver<SparseGraph> s(g, n, m, row_to_col, v);
  if (warm) {
    s.warm_start();
  } else {
    s.cold_start();
  }
  s.greedy();
  s.reduce_rows();
  s.augment_all(stuck);
  s.row_duals(u);
  return s.stats();
}

Stats solve_dense(int64_t n, int64_t m, const double* cost, int64_t* row_to_col, double* u,
                  double* v) {
  const DenseGraph g{m, cost};
  Solver<DenseGraph> s(g, n, m, row_to_col, v);
  s.cold_start();
  s.greedy();
  s.reduce_rows();
  s.augment_all(nullptr);
  s.row_duals(u);
  return s.stats();
}

std::vector<int32_t> candidate_graph(int64_t n, int64_t m, int64_t k_row, const int64_t* row_idx,
                                     int64_t k_col, const int64_t* col_idx, int64_t* indptr) {
  std::vector<int64_t> start(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) start[i + 1] = k_row;
  for (int64_t e = 0; e < m * k_col; ++e) ++start[col_idx[e] + 1];
  for (int64_t i = 0; i < n; ++i) start[i + 1] += start[i];
  std::vector<int32_t> cols(start[n]);
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < k_row; ++t) cols[fill[i]++] = static_cast<int32_t>(row_idx[i * k_row + t]);
  for (int64_t j = 0; j < m; ++j)
    for (int64_t t = 0; t < k_col; ++t) cols[fill[col_idx[j * k_col + t]]++] = static_cast<int32_t>(j);
  int64_t out = 0;
  indptr[0] = 0;
  for (int64_t i = 0; i < n; ++i) {  // sort each row, drop duplicates, compact in place
    auto first = cols.begin() + start[i], last = cols.begin() + start[i + 1];
    std::sort(first, last);
    last = std::unique(first, last);
    for (auto it = first; it != last; ++it) cols[out++] = *it;
    indptr[i + 1] = out;
  }
  cols.resize(out);
  return cols;
}

void rescore(int64_t d, const float* a, const float* b, int64_t n_edges, const int64_t* rows,
             const int64_t* cols, double* out) {
#pragma omp parallel for schedule(static)
  for (int64_t e = 0; e < n_edges; ++e) {
    const float* x = a + rows[e] * d;
    const float* y = b + cols[e] * d;
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int64_t k = 0;
    for (; k + 4 <= d; k += 4) {
      s0 += static_cast<double>(x[k]) * static_cast<double>(y[k]);
      s1 += static_cast<double>(x[k + 1]) * static_cast<double>(y[k + 1]);
      s2 += static_cast<double>(x[k + 2]) * static_cast<double>(y[k + 2]);
      s3 += static_cast<double>(x[k + 3]) * static_cast<double>(y[k + 3]);
    }
    for (; k < d; ++k) s0 += static_cast<double>(x[k]) * static_cast<double>(y[k]);
    out[e] = (s0 + s1) + (s2 + s3);
  }
}

}  // namespace lap
}  // namespace saefast
