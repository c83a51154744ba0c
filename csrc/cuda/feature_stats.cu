// CUDA kernels of feature_stats: one read of x. Each thread keeps running moments (Welford)
// of the elements it visits, in float32 (float64 for double); the threads' moments merge
// (Chan et al.) within the block in a fixed order: deterministic and stable.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "common/layout.h"
#include "ops/feature_stats.h"

namespace culturegan::feature_stats {
namespace {

template <typename acc_t>
__device__ __forceinline__ void push(Moments<acc_t>& m, acc_t value) {
  m.count += acc_t(1);
  const acc_t delta = value - m.mean;
  m.mean += delta / m.count;
  m.m2 += delta * (value - m.mean);
}

template <typename acc_t>
__device__ __forceinline__ Moments<acc_t> shuffle_down(const Moments<acc_t>& m, int offset) {
  return {__shfl_down_sync(0xffffffffu, m.count, offset), __shfl_down_sync(0xffffffffu, m.mean, offset),
          __shfl_down_sync(0xffffffffu, m.m2, offset)};
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void write(const Moments<acc_t>& m, int64_t index, bool unbiased, acc_t eps,
                                      scalar_t* mean, scalar_t* std) {
  mean[index] = scalar_t(m.mean);
  std[index] = scalar_t(std_of(m, unbiased, eps));
}

constexpr int kThreads = 256;

// Planes layout: block b reduces the contiguous plane b of `inner` elements.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void planes_kernel(const scalar_t* __restrict__ x, int64_t inner, bool unbiased, acc_t eps,
                              scalar_t* __restrict__ mean, scalar_t* __restrict__ std) {
  __shared__ Moments<acc_t> warps[kThreads / 32];
  const scalar_t* plane = x + int64_t(blockIdx.x) * inner;
  Moments<acc_t> m{0, 0, 0};
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) push(m, acc_t(plane[i]));
  for (int offset = 16; offset > 0; offset >>= 1) m = merge(m, shuffle_down(m, offset));
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) m = merge(m, warps[w]);
    write(m, blockIdx.x, unbiased, eps, mean, std);
  }
}

// Channels-innermost layout [N, spatial, C]: a (32 x 8) block covers 32 channels of sample
// blockIdx.y; its 8 rows of threads stride over the spatial positions.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void rows_kernel(const scalar_t* __restrict__ x, int64_t spatial, int64_t channels, bool unbiased,
                            acc_t eps, scalar_t* __restrict__ mean, scalar_t* __restrict__ std) {
  __shared__ Moments<acc_t> partial[8][32];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const scalar_t* sample = x + int64_t(blockIdx.y) * spatial * channels;
  Moments<acc_t> m{0, 0, 0};
  if (c < channels)
    for (int64_t s = threadIdx.y; s < spatial; s += blockDim.y) push(m, acc_t(sample[s * channels + c]));
  partial[threadIdx.y][threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    for (int r = 1; r < blockDim.y; ++r) m = merge(m, partial[r][threadIdx.x]);
    write(m, int64_t(blockIdx.y) * channels + c, unbiased, eps, mean, std);
  }
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, bool unbiased, double eps) {
  check_args(x, unbiased, eps);
  const c10::cuda::CUDAGuard guard(x.device());
  const ChannelLayout L = channel_layout(x);
  const int64_t samples = x.size(0), channels = x.size(1);
  at::Tensor mean = at::empty({samples, channels}, x.options());
  at::Tensor std = at::empty({samples, channels}, x.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.get_device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "feature_stats_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* data = L.tensor.const_data_ptr<scalar_t>();
    if (L.inner == 1) {
      const int64_t spatial = L.outer / samples;
      TORCH_CHECK(samples <= 65535, "feature_stats: at most 65535 samples per call on CUDA, got ", samples);
      const dim3 grid((channels + 31) / 32, samples);
      rows_kernel<scalar_t><<<grid, dim3(32, 8), 0, stream>>>(data, spatial, channels, unbiased, acc_t(eps),
                                                             mean.mutable_data_ptr<scalar_t>(),
                                                             std.mutable_data_ptr<scalar_t>());
    } else {
      const int64_t planes = samples * channels;
      TORCH_CHECK(planes <= std::numeric_limits<int32_t>::max(), "feature_stats: too many (n, c) planes");
      planes_kernel<scalar_t><<<planes, kThreads, 0, stream>>>(data, L.inner, unbiased, acc_t(eps),
                                                              mean.mutable_data_ptr<scalar_t>(),
                                                              std.mutable_data_ptr<scalar_t>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {mean, std};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("feature_stats", &forward); }

}  // namespace culturegan::feature_stats
