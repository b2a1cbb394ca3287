// A running top-k of (value, index) pairs, shared by topk_encode and cosine_topk.
//
// Order: a pair is better when its value is larger, or equal with a smaller index. That is
// a strict total order, so the kept set is unique whatever order the pairs arrive in or how
// the work is split between threads: results are deterministic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace saefast {

template <typename T>
inline bool better(T a, int64_t ia, T b, int64_t ib) {
  return a > b || (a == b && ia < ib);
}

// The k best pairs seen so far, as a min-heap (root = worst kept) in caller-owned arrays.
template <typename T>
struct RunningTopK {
  T* vals;        // [k]
  int64_t* idx;   // [k]
  int64_t k;
  int64_t size = 0;

  RunningTopK(T* v, int64_t* i, int64_t k_) : vals(v), idx(i), k(k_) {}

  // A value strictly below this can never enter; one equal to it may (index decides).
  T threshold() const { return size < k ? -std::numeric_limits<T>::infinity() : vals[0]; }

  void push(T v, int64_t i) {
    if (size < k) {
      int64_t pos = size++;
      while (pos > 0) {  // sift up: the parent must be worse than the child
        int64_t parent = (pos - 1) / 2;
        if (!better(vals[parent], idx[parent], v, i)) break;
        vals[pos] = vals[parent];
        idx[pos] = idx[parent];
        pos = parent;
      }
      vals[pos] = v;
      idx[pos] = i;
      return;
    }
    if (!better(v, i, vals[0], idx[0])) return;
    int64_t pos = 0;  // replace the root and sift down
    while (true) {
      int64_t child = 2 * pos + 1;
      if (child >= k) break;
      if (child + 1 < k && better(vals[child], idx[child], vals[child + 1], idx[child + 1])) {
        ++child;  // the worse of the two children
      }
      if (!better(v, i, vals[child], idx[child])) break;
      vals[pos] = vals[child];
      idx[pos] = idx[child];
      pos = child;
    }
    vals[pos] = v;
    idx[pos] = i;
  }

  // Sorts the kept pairs in place, best first. The heap is spent afterwards.
  void sort_descending() {
    // k is small (tens): an insertion sort on the pairs beats building index arrays.
    for (int64_t a = 1; a < size; ++a) {
      T v = vals[a];
      int64_t i = idx[a];
      int64_t b = a;
      while (b > 0 && better(v, i, vals[b - 1], idx[b - 1])) {
        vals[b] = vals[b - 1];
        idx[b] = idx[b - 1];
        --b;
      }
      vals[b] = v;
      idx[b] = i;
    }
  }
};

// Offers row[j] + shift[j] (shift may be null) with index offset + j for j < n to `heap`.
// Chunks whose values are all below the heap's threshold are skipped with one vectorisable
// comparison pass, so once the heap is full a row costs ~one compare an element.
template <typename T>
inline void offer_row(const T* row, const T* shift, int64_t n, int64_t offset,
                      RunningTopK<T>& heap) {
  constexpr int64_t kChunk = 16;
  int64_t j = 0;
  for (; j < n && heap.size < heap.k; ++j) {
    heap.push(shift ? row[j] + shift[j] : row[j], offset + j);
  }
  T thr = heap.threshold();
  for (; j + kChunk <= n; j += kChunk) {
    int any = 0;
    if (shift) {
      for (int64_t c = 0; c < kChunk; ++c) any |= (row[j + c] + shift[j + c] >= thr);
    } else {
      for (int64_t c = 0; c < kChunk; ++c) any |= (row[j + c] >= thr);
    }
    if (!any) continue;
    for (int64_t c = 0; c < kChunk; ++c) {
      T v = shift ? row[j + c] + shift[j + c] : row[j + c];
      if (v >= thr) {
        heap.push(v, offset + j + c);
        thr = heap.threshold();
      }
    }
  }
  for (; j < n; ++j) {
    T v = shift ? row[j] + shift[j] : row[j];
    if (v >= thr) {
      heap.push(v, offset + j);
      thr = heap.threshold();
    }
  }
}

}  // namespace saefast
