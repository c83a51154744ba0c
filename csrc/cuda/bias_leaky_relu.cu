// CUDA kernels of bias_leaky_relu.
//
// Forward: one grid-stride pass with 16-byte vector loads and stores, float32 math for
// half/bfloat16. Backward: one pass that writes grad_x and, in the same kernel, per-block
// partial sums of the bias gradient; the partials are then summed in a fixed order, so the
// result is deterministic (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "common/layout.h"
#include "ops/bias_leaky_relu.h"

namespace culturegan::bias_leaky_relu {
namespace {

constexpr int kThreads = 256;
constexpr int kVectorBytes = 16;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vector {
  T val[N];
};

int sm_count(int device) {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

template <typename index_t>
int64_t grid_for(index_t work_items, int device) {
  const int64_t blocks = (int64_t(work_items) + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(sm_count(device)) * 32));
}

bool aligned(const void* ptr, int bytes) { return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0; }

// Channel of element i in a dense [outer, C, inner] array. kInner1: channels innermost.
template <bool kInner1, typename index_t>
__device__ __forceinline__ index_t channel_of(index_t i, index_t inner, index_t channels) {
  return kInner1 ? i % channels : (i / inner) % channels;
}

// Each thread handles VEC consecutive elements at a time. With kInner1 the VEC channels are
// consecutive (wrapping at C); otherwise inner % VEC == 0, so all VEC share one channel.
template <typename scalar_t, typename index_t, int VEC, bool kInner1>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                               scalar_t* __restrict__ y, index_t numel, index_t inner, index_t channels,
                               Params<at::opmath_type<scalar_t>> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t step = index_t(gridDim.x) * blockDim.x * VEC;
  for (index_t base = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; base < numel; base += step) {
    if (base + VEC <= numel) {
      Vector<scalar_t, VEC> v = *reinterpret_cast<const Vector<scalar_t, VEC>*>(x + base);
      index_t c = bias != nullptr ? channel_of<kInner1>(base, inner, channels) : 0;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const acc_t b = bias != nullptr ? acc_t(bias[c]) : acc_t(0);
        v.val[j] = scalar_t(activate(acc_t(v.val[j]) + b, p));
        if (kInner1 && ++c == channels) c = 0;
      }
      *reinterpret_cast<Vector<scalar_t, VEC>*>(y + base) = v;
    } else {
      for (index_t i = base; i < numel; ++i) {
        const acc_t b = bias != nullptr ? acc_t(bias[channel_of<kInner1>(i, inner, channels)]) : acc_t(0);
        y[i] = scalar_t(activate(acc_t(x[i]) + b, p));
      }
    }
  }
}

template <typename scalar_t, typename index_t, int VEC>
__global__ void gradient_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y,
                                scalar_t* __restrict__ grad_x, index_t numel, Params<at::opmath_type<scalar_t>> p) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t step = index_t(gridDim.x) * blockDim.x * VEC;
  for (index_t base = (index_t(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; base < numel; base += step) {
    if (base + VEC <= numel) {
      Vector<scalar_t, VEC> g = *reinterpret_cast<const Vector<scalar_t, VEC>*>(grad + base);
      const Vector<scalar_t, VEC> yv = *reinterpret_cast<const Vector<scalar_t, VEC>*>(y + base);
#pragma unroll
      for (int j = 0; j < VEC; ++j) g.val[j] = scalar_t(gradient(acc_t(g.val[j]), acc_t(yv.val[j]), p));
      *reinterpret_cast<Vector<scalar_t, VEC>*>(grad_x + base) = g;
    } else {
      for (index_t i = base; i < numel; ++i) grad_x[i] = scalar_t(gradient(acc_t(grad[i]), acc_t(y[i]), p));
    }
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t value, acc_t* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  value = threadIdx.x < blockDim.x / 32 ? shared[lane] : acc_t(0);
  if (warp == 0)
    for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_down_sync(0xffffffffu, value, offset);
  return value;  // valid in thread 0
}

// Planes layout (inner > 1): block b handles chunk (b % chunks) of plane (b / chunks) and
// writes that chunk's sum to partial[b], i.e. partial is [outer, C, chunks] in acc_t.
template <typename scalar_t, typename index_t, int VEC, typename acc_t = at::opmath_type<scalar_t>>
__global__ void backward_planes_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y,
                                       scalar_t* __restrict__ grad_x, acc_t* __restrict__ partial, index_t inner,
                                       index_t chunk, index_t chunks, Params<acc_t> p) {
  __shared__ acc_t shared[kThreads / 32];
  const index_t plane = index_t(blockIdx.x) / chunks;
  const index_t begin = plane * inner + (index_t(blockIdx.x) % chunks) * chunk;
  const index_t end = min(begin + chunk, (plane + 1) * inner);
  acc_t sum = 0;
  for (index_t base = begin + index_t(threadIdx.x) * VEC; base < end; base += index_t(blockDim.x) * VEC) {
    Vector<scalar_t, VEC> g = *reinterpret_cast<const Vector<scalar_t, VEC>*>(grad + base);
    const Vector<scalar_t, VEC> yv = *reinterpret_cast<const Vector<scalar_t, VEC>*>(y + base);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const acc_t d = gradient(acc_t(g.val[j]), acc_t(yv.val[j]), p);
      g.val[j] = scalar_t(d);
      sum += d;
    }
    *reinterpret_cast<Vector<scalar_t, VEC>*>(grad_x + base) = g;
  }
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// Channels-innermost layout: a (32 x 8) block covers 32 channels of `rows_per_block` rows and
// writes partial[blockIdx.y, channel], i.e. partial is [row_blocks, C] in acc_t.
template <typename scalar_t, typename index_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void backward_rows_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y,
                                     scalar_t* __restrict__ grad_x, acc_t* __restrict__ partial, index_t rows,
                                     index_t channels, index_t rows_per_block, Params<acc_t> p) {
  __shared__ acc_t shared[8][33];
  const index_t c = index_t(blockIdx.x) * 32 + threadIdx.x;
  const index_t row_begin = index_t(blockIdx.y) * rows_per_block;
  const index_t row_end = min(row_begin + rows_per_block, rows);
  acc_t sum = 0;
  if (c < channels) {
    for (index_t row = row_begin + threadIdx.y; row < row_end; row += blockDim.y) {
      const index_t i = row * channels + c;
      const acc_t d = gradient(acc_t(grad[i]), acc_t(y[i]), p);
      grad_x[i] = scalar_t(d);
      sum += d;
    }
  }
  shared[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    for (int r = 1; r < blockDim.y; ++r) sum += shared[r][threadIdx.x];
    partial[index_t(blockIdx.y) * channels + c] = sum;
  }
}

template <typename scalar_t, typename index_t>
void launch_forward(const ChannelLayout& L, const scalar_t* bias, scalar_t* y,
                    const Params<at::opmath_type<scalar_t>>& p) {
  const scalar_t* x = L.tensor.const_data_ptr<scalar_t>();
  const index_t numel = L.tensor.numel();
  const int device = L.tensor.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);
  constexpr int VEC = kVectorBytes / sizeof(scalar_t);
  // Vectors must not straddle two channels' planes unless there is no bias to index.
  const bool vectorize = aligned(x, kVectorBytes) && aligned(y, kVectorBytes) &&
                         (bias == nullptr || L.inner == 1 || L.inner % VEC == 0);
  const bool inner1 = L.inner == 1;
#define CG_LAUNCH_FORWARD(V, INNER1)                                                                 \
  forward_kernel<scalar_t, index_t, V, INNER1><<<grid_for<index_t>(numel / V + 1, device), kThreads, 0, stream>>>( \
      x, bias, y, numel, index_t(L.inner), index_t(L.channels), p)
  if (vectorize && inner1) CG_LAUNCH_FORWARD(VEC, true);
  else if (vectorize) CG_LAUNCH_FORWARD(VEC, false);
  else if (inner1) CG_LAUNCH_FORWARD(1, true);
  else CG_LAUNCH_FORWARD(1, false);
#undef CG_LAUNCH_FORWARD
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Returns the partial sums (in acc_t) of the bias gradient, or an undefined tensor without bias_grad.
template <typename scalar_t, typename index_t>
at::Tensor launch_backward(const scalar_t* grad, const ChannelLayout& L, scalar_t* grad_x, bool bias_grad,
                           const Params<at::opmath_type<scalar_t>>& p) {
  const scalar_t* y = L.tensor.const_data_ptr<scalar_t>();
  const index_t numel = L.tensor.numel();
  const int device = L.tensor.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device);
  constexpr int VEC = kVectorBytes / sizeof(scalar_t);
  const bool vectorize = aligned(grad, kVectorBytes) && aligned(y, kVectorBytes) && aligned(grad_x, kVectorBytes);
  if (!bias_grad) {
    if (vectorize)
      gradient_kernel<scalar_t, index_t, VEC><<<grid_for<index_t>(numel / VEC + 1, device), kThreads, 0, stream>>>(
          grad, y, grad_x, numel, p);
    else
      gradient_kernel<scalar_t, index_t, 1><<<grid_for<index_t>(numel, device), kThreads, 0, stream>>>(
          grad, y, grad_x, numel, p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return at::Tensor();
  }
  using acc_t = at::opmath_type<scalar_t>;
  const auto acc_options = L.tensor.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor partial;
  if (L.inner == 1) {
    const index_t rows = L.outer;
    // grid.y is limited to 65535 blocks: very tall tensors get more rows per block.
    const index_t rows_per_block = std::max<index_t>(256, (rows + 65534) / 65535);
    const dim3 grid((L.channels + 31) / 32, (rows + rows_per_block - 1) / rows_per_block);
    partial = at::empty({int64_t(grid.y), L.channels}, acc_options);
    backward_rows_kernel<scalar_t, index_t><<<grid, dim3(32, 8), 0, stream>>>(
        grad, y, grad_x, partial.mutable_data_ptr<acc_t>(), rows, index_t(L.channels), rows_per_block, p);
  } else {
    // Chunks of at most 16 vectors per thread keep enough blocks in flight for small batches.
    const bool vec_ok = vectorize && L.inner % VEC == 0;
    const index_t chunk = index_t(kThreads) * (vec_ok ? VEC : 1) * 16;
    const index_t chunks = (L.inner + chunk - 1) / chunk;
    const int64_t blocks = L.outer * L.channels * int64_t(chunks);
    TORCH_CHECK(blocks <= int64_t(std::numeric_limits<int32_t>::max()), "bias_leaky_relu_backward: tensor too large");
    partial = at::empty({L.outer, L.channels, int64_t(chunks)}, acc_options);
    if (vec_ok)
      backward_planes_kernel<scalar_t, index_t, VEC><<<blocks, kThreads, 0, stream>>>(
          grad, y, grad_x, partial.mutable_data_ptr<acc_t>(), index_t(L.inner), chunk, chunks, p);
    else
      backward_planes_kernel<scalar_t, index_t, 1><<<blocks, kThreads, 0, stream>>>(
          grad, y, grad_x, partial.mutable_data_ptr<acc_t>(), index_t(L.inner), chunk, chunks, p);
    partial = partial.permute({0, 2, 1}).reshape({-1, L.channels});
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return partial;
}

bool fits_int32(int64_t numel) { return numel <= std::numeric_limits<int32_t>::max(); }

at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope, double gain,
                   std::optional<double> clamp) {
  check_forward_args(x, bias, negative_slope, gain, clamp);
  const c10::cuda::CUDAGuard guard(x.device());
  const ChannelLayout L = channel_layout(x);
  at::Tensor y = empty_in_layout(L.tensor);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu_cuda", [&] {
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    const scalar_t* bias_ptr = b.defined() ? b.const_data_ptr<scalar_t>() : nullptr;
    const auto p = make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp);
    if (fits_int32(x.numel()))
      launch_forward<scalar_t, int32_t>(L, bias_ptr, y.mutable_data_ptr<scalar_t>(), p);
    else
      launch_forward<scalar_t, int64_t>(L, bias_ptr, y.mutable_data_ptr<scalar_t>(), p);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& y, double negative_slope,
                                            double gain, std::optional<double> clamp, bool bias_grad) {
  check_backward_args(grad, y, negative_slope, gain, clamp);
  const c10::cuda::CUDAGuard guard(y.device());
  const ChannelLayout L = channel_layout(y);
  const at::Tensor grad_in = match_layout(grad, L.tensor);
  at::Tensor grad_x = empty_in_layout(L.tensor);
  at::Tensor partial;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_leaky_relu_backward_cuda", [&] {
    const auto p = make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp);
    if (fits_int32(y.numel()))
      partial = launch_backward<scalar_t, int32_t>(grad_in.const_data_ptr<scalar_t>(), L,
                                                   grad_x.mutable_data_ptr<scalar_t>(), bias_grad, p);
    else
      partial = launch_backward<scalar_t, int64_t>(grad_in.const_data_ptr<scalar_t>(), L,
                                                   grad_x.mutable_data_ptr<scalar_t>(), bias_grad, p);
  });
  // [groups, C] partials summed over the groups by torch's reduction, whose order is fixed:
  // deterministic.
  at::Tensor grad_bias = bias_grad ? partial.sum(0).to(y.scalar_type()) : at::empty({0}, y.options());
  return {grad_x, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) {
  m.impl("bias_leaky_relu", &forward);
  m.impl("bias_leaky_relu_backward", &backward);
}

}  // namespace culturegan::bias_leaky_relu
