// CUDA kernels of norm_act_backward (see ops/norm_act_backward.h). A block owns whole (n, c)
// planes: it sums them, then writes their gradient (the second read mostly hits L2). Sums are
// reduced within the block in a fixed order: deterministic, no atomics.
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
#include "ops/norm_act_backward.h"

namespace culturegan::norm_act_backward {
namespace {

constexpr int kThreads = 256;

template <typename acc_t>
struct Parameters {
  const acc_t* mean;
  const acc_t* std;
  const acc_t* gamma;
  const acc_t* beta;
  acc_t negative_slope;
  acc_t* grad_gamma;
  acc_t* grad_beta;

  __device__ Plane<acc_t> plane(int64_t i) const {
    return plane_of(mean[i], std[i], gamma[i], beta[i], negative_slope);
  }
};

// Writes the (n, c) gradients and returns the apply coefficients of plane i from its sums.
template <typename acc_t>
__device__ Apply<acc_t> finish(const Parameters<acc_t>& params, int64_t i, const Plane<acc_t>& p, acc_t sum_grad,
                               acc_t sum_grad_centered, acc_t count) {
  const acc_t std = params.std[i];
  params.grad_gamma[i] = sum_grad_centered / std;
  params.grad_beta[i] = sum_grad;
  return apply_of(p, std, sum_grad, sum_grad_centered, count);
}

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
  const ChannelLayout L = channel_layout(z);
  const at::Tensor grad_in = match_layout(grad, L.tensor);
  at::Tensor grad_z_out = empty_in_layout(L.tensor);
  at::Tensor grad_gamma = at::empty(mean.sizes(), mean.options());
  at::Tensor grad_beta = at::empty(mean.sizes(), mean.options());
  const at::Tensor m = mean.contiguous(), s = std.contiguous(), ga = gamma.contiguous(), be = beta.contiguous();
  const int64_t samples = z.size(0), channels = z.size(1), spatial = z.numel() / (samples * channels);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(z.get_device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "norm_act_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Parameters<acc_t> params{m.const_data_ptr<acc_t>(), s.const_data_ptr<acc_t>(), ga.const_data_ptr<acc_t>(),
                                   be.const_data_ptr<acc_t>(), acc_t(negative_slope.value_or(1.0)),
                                   grad_gamma.mutable_data_ptr<acc_t>(), grad_beta.mutable_data_ptr<acc_t>()};
    const scalar_t* g = grad_in.const_data_ptr<scalar_t>();
    const scalar_t* zd = L.tensor.const_data_ptr<scalar_t>();
    scalar_t* out = grad_z_out.mutable_data_ptr<scalar_t>();
    if (L.inner == 1 && spatial > 1) {
      TORCH_CHECK(samples <= 65535, "norm_act_backward: at most 65535 samples per call on CUDA, got ", samples);
      rows_kernel<scalar_t><<<dim3((channels + 31) / 32, samples), dim3(32, 8), 0, stream>>>(g, zd, out, spatial,
                                                                                            channels, params);
    } else {
      TORCH_CHECK(samples * channels <= std::numeric_limits<int32_t>::max(), "norm_act_backward: too many planes");
      planes_kernel<scalar_t><<<samples * channels, kThreads, 0, stream>>>(g, zd, out, spatial, params);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_z_out, grad_gamma, grad_beta};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("norm_act_backward", &backward); }

}  // namespace culturegan::norm_act_backward
