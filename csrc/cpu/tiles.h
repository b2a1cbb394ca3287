// The blocking of the tiled GEMM-then-select kernels (gemm_select.h). Results depend on it
// (a BLAS may round a GEMM differently by its shape), so tests rebuild the kernels' GEMM
// calls from these numbers, which build_info() reports as "cpu_tiles" (csrc/saefast.cpp).
#pragma once

#include <cstdint>

namespace saefast {

constexpr int64_t kGemmTile = 1024;    // columns (features, rows of B) a GEMM tile
constexpr int64_t kMaxRowBlock = 256;  // rows a block at most (a [256, 1024] tile fits L2)

}  // namespace saefast
