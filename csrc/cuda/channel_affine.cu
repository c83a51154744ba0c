// CUDA kernel of channel_affine: one grid-stride pass, float32 math for half/bfloat16. Each
// element finds its (n, c) parameters from its index in the dense [outer, C, inner] layout.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "common/layout.h"
#include "ops/channel_affine.h"

namespace culturegan::channel_affine {
namespace {

constexpr int kThreads = 256;

// Index of element i's (n, c) parameters. Channels innermost: i = (n * spatial + s) * C + c;
// otherwise i = (n * C + c) * inner + s.
template <bool kInner1, typename index_t>
__device__ __forceinline__ index_t parameter_of(index_t i, index_t inner, index_t channels, index_t sample_size) {
  return kInner1 ? (i / sample_size) * channels + i % channels : i / inner;
}

template <typename scalar_t, typename index_t, bool kInner1, typename acc_t = at::opmath_type<scalar_t>>
__global__ void affine_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ center,
                              const acc_t* __restrict__ scale, const acc_t* __restrict__ shift,
                              scalar_t* __restrict__ y, index_t numel, index_t inner, index_t channels,
                              index_t sample_size, acc_t negative_slope) {
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += step) {
    const index_t p = parameter_of<kInner1>(i, inner, channels, sample_size);
    y[i] = scalar_t(apply(acc_t(x[i]), center[p], scale[p], shift[p], negative_slope));
  }
}

template <typename scalar_t, typename index_t>
void launch(const ChannelLayout& L, int64_t samples, const at::Tensor& center, const at::Tensor& scale,
            const at::Tensor& shift, double negative_slope, at::Tensor& y) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t numel = index_t(L.tensor.numel());
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, L.tensor.get_device()));
  const int64_t blocks = std::clamp<int64_t>((int64_t(numel) + kThreads - 1) / kThreads, 1, int64_t(sms) * 32);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(L.tensor.get_device());
  const auto run = [&](auto inner1) {
    affine_kernel<scalar_t, index_t, decltype(inner1)::value><<<blocks, kThreads, 0, stream>>>(
        L.tensor.const_data_ptr<scalar_t>(), center.const_data_ptr<acc_t>(), scale.const_data_ptr<acc_t>(),
        shift.const_data_ptr<acc_t>(), y.mutable_data_ptr<scalar_t>(), numel, index_t(L.inner),
        index_t(L.channels), index_t(L.tensor.numel() / samples), acc_t(negative_slope));
  };
  if (L.inner == 1) run(std::true_type{});
  else run(std::false_type{});
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& center, const at::Tensor& scale, const at::Tensor& shift,
                   std::optional<double> negative_slope) {
  check_args(x, center, scale, shift, negative_slope);
  const c10::cuda::CUDAGuard guard(x.device());
  const ChannelLayout L = channel_layout(x);
  at::Tensor y = empty_in_layout(L.tensor);
  const at::Tensor c = center.contiguous(), s = scale.contiguous(), b = shift.contiguous();
  const double slope = negative_slope.value_or(-1.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "channel_affine_cuda", [&] {
    if (L.tensor.numel() <= std::numeric_limits<int32_t>::max())
      launch<scalar_t, int32_t>(L, x.size(0), c, s, b, slope, y);
    else
      launch<scalar_t, int64_t>(L, x.size(0), c, s, b, slope, y);
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("channel_affine", &forward); }

}  // namespace culturegan::channel_affine
