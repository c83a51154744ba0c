// CUDA kernel of culture_stats: mean, std and the Gram matrix of x from ONE read of x.
//
// A tiled GEMM on the CUDA cores with symmetric tiles: block (i, j), i <= j, computes the
// 64 x 64 tile (i, j) of sample n's G = scale * F F^T over the H*W positions, 16 positions at a
// time staged in shared memory, each thread a 4 x 4 sub-tile accumulated in float32 (float64
// for double), and writes it and its mirror (j, i): each off-diagonal tile is computed once.
// The diagonal blocks (i == j) load their rows once and also keep those rows' moments from
// the staged tiles (shifted by each row's first element and merged per step with Chan's
// formula, as feature_stats does): the statistics cost no second read of x.
//
// On a diagonal tile, entries (r, s) and (s, r) are the same products added in the same order
// (fma(a, b, acc) == fma(b, a, acc)), so G is exactly symmetric. Any strides: the staging
// loads follow whichever of the channel and position strides is 1, so reads coalesce for
// contiguous and channels_last x alike.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "ops/feature_stats.h"

namespace culturegan::culture_stats {
namespace {

using feature_stats::Moments;

constexpr int kTile = 64;     // G tile edge
constexpr int kStep = 16;     // positions staged per step
constexpr int kSide = 16;     // threads per tile edge: 16 x 16 threads, 4 x 4 outputs each
constexpr int kPer = kTile / kSide;
constexpr int kThreads = kSide * kSide;
constexpr int kLoads = kTile * kStep / kThreads;

struct Geometry {
  int64_t channels, spatial, stride_n, stride_c, stride_s;
  bool channels_innermost;  // stride_c == 1: stage along channels, else along positions
};

// Stages rows [row0, row0 + kTile) x positions [k0, k0 + kStep) of one sample into tile[k][row],
// zero outside the matrix. The (+1) padding keeps the transposed stores free of bank conflicts.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage(const scalar_t* __restrict__ sample, const Geometry& g, int64_t row0, int64_t k0,
                                      acc_t (*tile)[kTile + 1]) {
#pragma unroll
  for (int q = 0; q < kLoads; ++q) {
    const int e = threadIdx.x + q * kThreads;
    const int row = g.channels_innermost ? e % kTile : e / kStep;
    const int k = g.channels_innermost ? e / kTile : e % kStep;
    const int64_t r = row0 + row, s = k0 + k;
    tile[k][row] = (r < g.channels && s < g.spatial) ? acc_t(sample[r * g.stride_c + s * g.stride_s]) : acc_t(0);
  }
}

// Merges the moments of row `row`'s staged values (positions k0 .. k0 + count) into m.
template <typename acc_t>
__device__ __forceinline__ void add_moments(const acc_t (*tile)[kTile + 1], int row, int count, acc_t shift,
                                            Moments<acc_t>& m) {
  acc_t sum = 0;
  for (int k = 0; k < count; ++k) sum += tile[k][row] - shift;
  const acc_t step_mean = sum / acc_t(count);
  acc_t m2 = 0;
  for (int k = 0; k < count; ++k) {
    const acc_t d = tile[k][row] - shift - step_mean;
    m2 += d * d;
  }
  m = feature_stats::merge(m, Moments<acc_t>{acc_t(count), step_mean, m2});
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void __launch_bounds__(kThreads)
    gram_stats_kernel(const scalar_t* __restrict__ x, Geometry g, int tiles, acc_t scale, bool unbiased, acc_t eps,
                      scalar_t* __restrict__ gram, scalar_t* __restrict__ mean, scalar_t* __restrict__ std) {
  __shared__ acc_t tile_i[kStep][kTile + 1];
  __shared__ acc_t tile_j[kStep][kTile + 1];
  // blockIdx.x enumerates the upper-triangle tiles (i, j), j >= i, row by row.
  int i = 0, rest = blockIdx.x;
  while (rest >= tiles - i) rest -= tiles - i++;
  const int j = i + rest;
  const bool diagonal = i == j;
  const int64_t n = blockIdx.y;
  const scalar_t* sample = x + n * g.stride_n;
  const int64_t row0_i = int64_t(i) * kTile, row0_j = int64_t(j) * kTile;
  acc_t (*other)[kTile + 1] = diagonal ? tile_i : tile_j;

  // Row statistics (diagonal blocks): thread t < kTile keeps the moments of row row0_i + t.
  const bool keeps_row = diagonal && threadIdx.x < kTile && row0_i + threadIdx.x < g.channels;
  const acc_t shift = keeps_row ? acc_t(sample[(row0_i + threadIdx.x) * g.stride_c]) : acc_t(0);
  Moments<acc_t> moments{0, 0, 0};

  const int tx = threadIdx.x % kSide, ty = threadIdx.x / kSide;
  acc_t acc[kPer][kPer] = {};
  for (int64_t k0 = 0; k0 < g.spatial; k0 += kStep) {
    stage(sample, g, row0_i, k0, tile_i);
    if (!diagonal) stage(sample, g, row0_j, k0, tile_j);
    __syncthreads();
    if (keeps_row)
      add_moments(tile_i, threadIdx.x, int(g.spatial - k0 < kStep ? g.spatial - k0 : kStep), shift, moments);
#pragma unroll
    for (int k = 0; k < kStep; ++k) {
      acc_t a[kPer], b[kPer];
#pragma unroll
      for (int p = 0; p < kPer; ++p) {
        a[p] = tile_i[k][ty + p * kSide];
        b[p] = other[k][tx + p * kSide];
      }
#pragma unroll
      for (int p = 0; p < kPer; ++p)
#pragma unroll
        for (int q = 0; q < kPer; ++q) acc[p][q] = fma(a[p], b[q], acc[p][q]);
    }
    __syncthreads();
  }

  scalar_t* out = gram + n * g.channels * g.channels;
#pragma unroll
  for (int p = 0; p < kPer; ++p) {
    const int64_t r = row0_i + ty + p * kSide;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t s = row0_j + tx + q * kSide;
      if (r < g.channels && s < g.channels) {
        const scalar_t value = scalar_t(acc[p][q] * scale);
        out[r * g.channels + s] = value;
        if (!diagonal) out[s * g.channels + r] = value;
      }
    }
  }
  if (keeps_row) {
    const int64_t index = n * g.channels + row0_i + threadIdx.x;
    mean[index] = scalar_t(shift + moments.mean);
    std[index] = scalar_t(feature_stats::std_of(moments, unbiased, eps));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x, bool unbiased, double eps, double scale) {
  feature_stats::check_args(x, unbiased, eps);
  TORCH_CHECK_VALUE(scale > 0.0, "scale must be > 0, got ", scale);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor features = x.flatten(2);  // a view for contiguous and channels_last x
  const int64_t samples = x.size(0), channels = x.size(1);
  TORCH_CHECK(samples <= 65535, "culture_stats: at most 65535 samples per call on CUDA, got ", samples);
  const Geometry g{channels, features.size(2), features.stride(0), features.stride(1), features.stride(2),
                   features.stride(1) == 1 && channels > 1};
  const int64_t tiles = (channels + kTile - 1) / kTile;
  at::Tensor gram = at::empty({samples, channels, channels}, x.options());
  at::Tensor mean = at::empty({samples, channels}, x.options());
  at::Tensor std = at::empty({samples, channels}, x.options());
  const dim3 grid(unsigned(tiles * (tiles + 1) / 2), unsigned(samples));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "culture_stats_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gram_stats_kernel<scalar_t><<<grid, kThreads, 0, stream>>>(
        features.const_data_ptr<scalar_t>(), g, int(tiles), acc_t(scale), unbiased, acc_t(eps),
        gram.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<scalar_t>(), std.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {mean, std, gram};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("culture_stats", &forward); }

}  // namespace culturegan::culture_stats
