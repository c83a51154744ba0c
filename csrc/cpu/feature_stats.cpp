// CPU kernel of feature_stats: one read of x, stable statistics. Elements are taken in blocks
// small enough to stay in cache: each block's mean and squared deviations from that mean come
// from two vectorised loops over the block, and the blocks merge (Chan et al.) in double, in a
// fixed order, so the result does not depend on the number of threads. Within a block values
// are shifted by its first one, so a large common offset (features of mean 1000) does not cost
// the float32 sums their precision.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/layout.h"
#include "cpu/parallel.h"
#include "cpu/vectorizable.h"
#include "ops/feature_stats.h"

namespace culturegan::feature_stats {
namespace {

using cpu::kSumBlock;
using cpu::load;
using Stats = Moments<double>;

// Moments of the contiguous elements [begin, end) (at most kSumBlock of them).
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
CG_CPU_CLONES Stats block_moments(const scalar_t* __restrict__ x, int64_t begin, int64_t end) {
  const acc_t shift = load(x, begin);
  acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = begin; i < end; ++i) sum += load(x, i) - shift;
  const acc_t mean = sum / acc_t(end - begin);  // of the shifted values
  acc_t m2 = 0;
#pragma omp simd reduction(+ : m2)
  for (int64_t i = begin; i < end; ++i) {
    const acc_t d = load(x, i) - shift - mean;
    m2 += d * d;
  }
  return {double(end - begin), double(shift) + double(mean), double(m2)};
}

// Per-channel moments of rows [first, last) of a [rows, channels] block (channels innermost),
// merged into `stats` (one per channel). `scratch` holds 3 * channels elements.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
CG_CPU_CLONES void rows_moments(const scalar_t* __restrict__ x, int64_t first, int64_t last, int64_t channels,
                                acc_t* __restrict__ scratch, Stats* stats) {
  acc_t* __restrict__ shift = scratch;
  acc_t* __restrict__ mean = scratch + channels;  // sums of the shifted values, then their means
  acc_t* __restrict__ m2 = scratch + 2 * channels;
  for (int64_t c = 0; c < channels; ++c) {
    shift[c] = load(x, first * channels + c);
    mean[c] = m2[c] = acc_t(0);
  }
  for (int64_t row = first; row < last; ++row) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) mean[c] += load(x, row * channels + c) - shift[c];
  }
  const acc_t count = acc_t(last - first);
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) mean[c] /= count;
  for (int64_t row = first; row < last; ++row) {
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const acc_t d = load(x, row * channels + c) - shift[c] - mean[c];
      m2[c] += d * d;
    }
  }
  for (int64_t c = 0; c < channels; ++c)
    stats[c] = merge(stats[c], Stats{double(count), double(shift[c]) + double(mean[c]), double(m2[c])});
}

// Planes layout: one contiguous plane of `inner` elements per (n, c).
template <typename scalar_t>
void planes_stats(const scalar_t* x, int64_t planes, int64_t inner, Stats* stats) {
  at::parallel_for(0, planes, cpu::spans_per_task(inner), [=](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      Stats total{0.0, 0.0, 0.0};
      for (int64_t b = plane * inner, e = b + inner; b < e; b += kSumBlock)
        total = merge(total, block_moments(x, b, std::min(e, b + kSumBlock)));
      stats[plane] = total;
    }
  });
}

// Channels-innermost layout: [N, spatial, C]. Fixed chunks of rows of each sample, merged in order.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void rows_stats(const scalar_t* x, int64_t samples, int64_t spatial, int64_t channels, Stats* stats) {
  const int64_t chunk_rows = cpu::rows_per_sum_block(channels);
  const int64_t chunks = (spatial + chunk_rows - 1) / chunk_rows;
  std::vector<Stats> partial(samples * chunks * channels, Stats{0.0, 0.0, 0.0});
  Stats* partial_data = partial.data();
  at::parallel_for(0, samples * chunks, 1, [=](int64_t begin, int64_t end) {
    std::vector<acc_t> scratch(3 * channels);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / chunks, chunk = task % chunks;
      const scalar_t* sample = x + n * spatial * channels;
      rows_moments(sample, chunk * chunk_rows, std::min(spatial, (chunk + 1) * chunk_rows), channels, scratch.data(),
                   partial_data + task * channels);
    }
  });
  for (int64_t n = 0; n < samples; ++n)
    for (int64_t chunk = 0; chunk < chunks; ++chunk)
      for (int64_t c = 0; c < channels; ++c)
        stats[n * channels + c] = merge(stats[n * channels + c], partial[(n * chunks + chunk) * channels + c]);
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, bool unbiased, double eps) {
  check_args(x, unbiased, eps);
  const ChannelLayout L = channel_layout(x);
  const int64_t samples = x.size(0), channels = x.size(1);
  std::vector<Stats> stats(samples * channels, Stats{0.0, 0.0, 0.0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "feature_stats_cpu", [&] {
    const scalar_t* data = L.tensor.const_data_ptr<scalar_t>();
    if (L.inner == 1)
      rows_stats(data, samples, L.outer / samples, channels, stats.data());
    else
      planes_stats(data, samples * channels, L.tensor.numel() / (samples * channels), stats.data());
  });
  at::Tensor mean = at::empty({samples, channels}, x.options().dtype(at::kDouble));
  at::Tensor std = at::empty({samples, channels}, x.options().dtype(at::kDouble));
  double* mean_data = mean.mutable_data_ptr<double>();
  double* std_data = std.mutable_data_ptr<double>();
  for (int64_t i = 0; i < samples * channels; ++i) {
    mean_data[i] = stats[i].mean;
    std_data[i] = std_of(stats[i], unbiased, eps);
  }
  return {mean.to(x.scalar_type()), std.to(x.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) { m.impl("feature_stats", &forward); }

}  // namespace culturegan::feature_stats
