// How the CPU kernels split their work. Parallel tasks hold about kGrainSize elements: enough
// to spread over the cores, and enough to amortise the cost of starting a task (ATen's value).
// Sums in the math type run over at most kSumBlock elements (16 KiB of float32: they stay in
// L1/L2, and float32 rounding stays negligible), and the blocks' sums are then added in double
// in a fixed order, so results do not depend on the number of threads.
#pragma once

#include <algorithm>
#include <cstdint>

namespace culturegan::cpu {

constexpr int64_t kGrainSize = 32768;
constexpr int64_t kSumBlock = 4096;

// The grain of at::parallel_for over spans (planes, rows) of span_length elements each.
inline int64_t spans_per_task(int64_t span_length) { return std::max<int64_t>(1, kGrainSize / span_length); }

// Rows of `channels` elements in one sum block.
inline int64_t rows_per_sum_block(int64_t channels) { return std::max<int64_t>(1, kSumBlock / channels); }

}  // namespace culturegan::cpu
