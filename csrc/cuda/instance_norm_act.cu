// CUDA kernels of instance_norm_act_backward (see ops/instance_norm_act.h). A block owns whole
// (n, c) planes: it sums them, then writes their gradient (the second read mostly hits L2). Sums
// are reduced within the block in a fixed order: deterministic, no atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "common/layout.h"
#include "ops/instance_norm_act.h"

namespace culturegan::instance_norm_act {
namespace {

constexpr int kThreads = 256;

// NCHW: block b owns the contiguous plane b of `inner` elements.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void planes_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ z,
                              scalar_t* __restrict__ out, int64_t inner, Parameters<acc_t> params) {
  __shared__ acc_t partial[2][kThreads / 32];
  __shared__ Apply<acc_t> apply;
  const int64_t plane = blockIdx.x;
  const Plane<acc_t> p = params.plane(plane);
  const int64_t offset = plane * inner;
  acc_t a = 0, b = 0;
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x) {
    const acc_t zi = acc_t(z[offset + i]);
    const acc_t g = activated_grad(acc_t(grad[offset + i]), zi, p);
    a += g;
    b += g * (zi - p.mean);
  }
  for (int shift = 16; shift > 0; shift >>= 1) {
    a += __shfl_down_sync(0xffffffffu, a, shift);
    b += __shfl_down_sync(0xffffffffu, b, shift);
  }
  if (threadIdx.x % 32 == 0) {
    partial[0][threadIdx.x / 32] = a;
    partial[1][threadIdx.x / 32] = b;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t sum_grad = 0, sum_grad_centered = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      sum_grad += partial[0][w];
      sum_grad_centered += partial[1][w];
    }
    apply = finish(params, plane, p, sum_grad, sum_grad_centered, acc_t(inner));
  }
  __syncthreads();
  const Apply<acc_t> k = apply;
  for (int64_t i = threadIdx.x; i < inner; i += blockDim.x)
    out[offset + i] = scalar_t(grad_z(acc_t(grad[offset + i]), acc_t(z[offset + i]), p, k));
}

// Channels innermost [N, spatial, C]: a (32 x 8) block owns 32 channels of sample blockIdx.y.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void rows_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ z,
                            scalar_t* __restrict__ out, int64_t spatial, int64_t channels, Parameters<acc_t> params) {
  __shared__ acc_t partial[2][8][32];
  __shared__ Apply<acc_t> applies[32];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  const int64_t n = blockIdx.y;
  const bool active = c < channels;
  const Plane<acc_t> p = active ? params.plane(n * channels + c) : Plane<acc_t>{0, 0, 0, 1};
  const int64_t base = n * spatial * channels + c;
  acc_t a = 0, b = 0;
  if (active) {
    for (int64_t s = threadIdx.y; s < spatial; s += blockDim.y) {
      const acc_t zi = acc_t(z[base + s * channels]);
      const acc_t g = activated_grad(acc_t(grad[base + s * channels]), zi, p);
      a += g;
      b += g * (zi - p.mean);
    }
  }
  partial[0][threadIdx.y][threadIdx.x] = a;
  partial[1][threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && active) {
    acc_t sum_grad = 0, sum_grad_centered = 0;
    for (int r = 0; r < 8; ++r) {
      sum_grad += partial[0][r][threadIdx.x];
      sum_grad_centered += partial[1][r][threadIdx.x];
    }
    applies[threadIdx.x] = finish(params, n * channels + c, p, sum_grad, sum_grad_centered, acc_t(spatial));
  }
  __syncthreads();
  if (!active) return;
  const Apply<acc_t> k = applies[threadIdx.x];
  for (int64_t s = threadIdx.y; s < spatial; s += blockDim.y) {
    const int64_t i = base + s * channels;
    out[i] = scalar_t(grad_z(acc_t(grad[i]), acc_t(z[i]), p, k));
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& z,
                                                        const at::Tensor& mean, const at::Tensor& std,
                                                        const at::Tensor& gamma, const at::Tensor& beta,
                                                        std::optional<double> negative_slope) {
  check_args(grad, z, mean, std, gamma, beta, negative_slope);
  const c10::cuda::CUDAGuard guard(z.device());
  const KernelArgs args = kernel_args(grad, z, mean, std, gamma, beta, negative_slope);
  const int64_t samples = args.samples, channels = args.channels, spatial = args.spatial;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(z.get_device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "instance_norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = args.grad.const_data_ptr<scalar_t>();
    const scalar_t* zd = args.z.tensor.const_data_ptr<scalar_t>();
    scalar_t* out = args.grad_z.mutable_data_ptr<scalar_t>();
    const Parameters<acc_t> params = args.parameters<acc_t>();
    if (args.by_rows()) {
      TORCH_CHECK(samples <= 65535, "instance_norm_act_backward: at most 65535 samples per call on CUDA, got ",
                  samples);
      rows_kernel<scalar_t><<<dim3((channels + 31) / 32, samples), dim3(32, 8), 0, stream>>>(g, zd, out, spatial,
                                                                                            channels, params);
    } else {
      TORCH_CHECK(samples * channels <= std::numeric_limits<int32_t>::max(),
                  "instance_norm_act_backward: too many planes");
      planes_kernel<scalar_t><<<samples * channels, kThreads, 0, stream>>>(g, zd, out, spatial, params);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {args.grad_z, args.grad_gamma, args.grad_beta};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("instance_norm_act_backward", &backward); }

}  // namespace culturegan::instance_norm_act
