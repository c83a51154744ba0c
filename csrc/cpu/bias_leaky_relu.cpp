// CPU kernels of bias_leaky_relu: one pass forward, one pass backward with the bias gradient
// reduced in the same pass. Plain loops that the compiler vectorises, parallel over rows with
// at::parallel_for (OpenMP). Reductions use fixed chunks, so results do not depend on the
// number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/layout.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/vectorizable.h"
#include "ops/bias_leaky_relu.h"

namespace culturegan::bias_leaky_relu {
namespace {

using cpu::kGrainSize;
using cpu::kSumBlock;
using cpu::load;
using cpu::spans_per_task;
using cpu::store;

// Calls f with std::true_type or std::false_type: the clamp test moves out of the loops.
template <typename F>
void with_clamp(bool clamp, F&& f) {
  if (clamp) f(std::true_type{});
  else f(std::false_type{});
}

// The loops below take restrict pointers and the parameters by value, so the compiler knows that
// stores to the output cannot change the inputs or parameters, and vectorises them. Each handles
// a whole parallel task, so the AVX2/baseline choice (CG_CPU_CLONES) is made once per task.

// Planes [first, last) of `inner` contiguous elements: y = activate(x + bias[plane % C]).
template <bool kClamp, typename scalar_t, typename acc_t>
CG_CPU_CLONES void activate_planes(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                                   scalar_t* __restrict__ y, int64_t first, int64_t last, int64_t channels,
                                   int64_t inner, Params<acc_t> p) {
  for (int64_t plane = first; plane < last; ++plane) {
    const acc_t b = bias != nullptr ? acc_t(bias[plane % channels]) : acc_t(0);
    const int64_t offset = plane * inner;
#pragma omp simd
    for (int64_t i = offset; i < offset + inner; ++i) store(y, i, activate<kClamp>(load(x, i) + b, p));
  }
}

// Rows [first, last) of `channels` contiguous elements (channels innermost).
template <bool kClamp, typename scalar_t, typename acc_t>
CG_CPU_CLONES void activate_rows(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias,
                                 scalar_t* __restrict__ y, int64_t first, int64_t last, int64_t channels,
                                 Params<acc_t> p) {
  for (int64_t row = first; row < last; ++row) {
    const scalar_t* xr = x + row * channels;
    scalar_t* yr = y + row * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) store(yr, c, activate<kClamp>(load(xr, c) + load(bias, c), p));
  }
}

// Planes [first, last): grad_x = gradient(grad, y), and when plane_sums is non-null the sum of
// each plane's grad_x in plane_sums[plane]: vectorised sums in the math type over blocks of
// kSumBlock elements, added in double.
template <bool kClamp, typename scalar_t, typename acc_t>
CG_CPU_CLONES void gradient_planes(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y,
                                   scalar_t* __restrict__ grad_x, double* __restrict__ plane_sums, int64_t first,
                                   int64_t last, int64_t inner, Params<acc_t> p) {
  for (int64_t plane = first; plane < last; ++plane) {
    double total = 0.0;
    for (int64_t begin = plane * inner, end = begin + inner; begin < end; begin += kSumBlock) {
      const int64_t block_end = std::min(end, begin + kSumBlock);
      acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = begin; i < block_end; ++i) {
        const acc_t g = gradient<kClamp>(load(grad, i), load(y, i), p);
        store(grad_x, i, g);
        sum += g;
      }
      total += double(sum);
    }
    if (plane_sums != nullptr) plane_sums[plane] = total;
  }
}

// Rows [first, last) of `channels` elements: grad_x = gradient(grad, y), sums[c] += grad_x[., c].
template <bool kClamp, typename scalar_t, typename acc_t>
CG_CPU_CLONES void gradient_rows(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y,
                                 scalar_t* __restrict__ grad_x, acc_t* __restrict__ sums, int64_t first, int64_t last,
                                 int64_t channels, Params<acc_t> p) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t offset = row * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      const acc_t g = gradient<kClamp>(load(grad, offset + c), load(y, offset + c), p);
      store(grad_x, offset + c, g);
      sums[c] += g;
    }
  }
}

template <bool kClamp, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void forward_cpu(const ChannelLayout& L, const scalar_t* bias, scalar_t* y, Params<acc_t> p) {
  const scalar_t* x = L.tensor.const_data_ptr<scalar_t>();
  const int64_t outer = L.outer, C = L.channels, inner = L.inner;
  if (bias == nullptr) {  // one flat span per task
    at::parallel_for(0, L.tensor.numel(), kGrainSize, [=](int64_t begin, int64_t end) {
      activate_planes<kClamp>(x + begin, bias, y + begin, 0, 1, 1, end - begin, p);
    });
  } else if (inner == 1) {
    at::parallel_for(0, outer, spans_per_task(C), [=](int64_t begin, int64_t end) {
      activate_rows<kClamp>(x, bias, y, begin, end, C, p);
    });
  } else {
    at::parallel_for(0, outer * C, spans_per_task(inner), [=](int64_t begin, int64_t end) {
      activate_planes<kClamp>(x, bias, y, begin, end, C, inner, p);
    });
  }
}

// grad_x = gradient(grad, y); when bias_grad is non-null also bias_grad[c] = the sum of grad_x
// over channel c, from per-plane (or per-chunk) partial sums added in a fixed order.
template <bool kClamp, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void backward_cpu(const scalar_t* grad, const ChannelLayout& L, scalar_t* grad_x, scalar_t* bias_grad,
                  Params<acc_t> p) {
  const scalar_t* y = L.tensor.const_data_ptr<scalar_t>();
  const int64_t outer = L.outer, C = L.channels, inner = L.inner;
  if (bias_grad == nullptr) {  // one flat span per task
    at::parallel_for(0, L.tensor.numel(), kGrainSize, [=](int64_t begin, int64_t end) {
      gradient_planes<kClamp>(grad + begin, y + begin, grad_x + begin, nullptr, 0, 1, end - begin, p);
    });
    return;
  }
  std::vector<double> channel_sums(C, 0.0);
  if (inner == 1) {
    // Fixed chunks of rows (independent of the thread count), each with its own partial sums
    // in the math type (a chunk holds about kGrainSize elements), added in double.
    const int64_t chunk_rows = spans_per_task(C);
    const int64_t chunks = (outer + chunk_rows - 1) / chunk_rows;
    std::vector<acc_t> partial(chunks * C, acc_t(0));
    acc_t* partial_data = partial.data();
    at::parallel_for(0, chunks, 1, [=](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk)
        gradient_rows<kClamp>(grad, y, grad_x, partial_data + chunk * C, chunk * chunk_rows,
                              std::min(outer, (chunk + 1) * chunk_rows), C, p);
    });
    for (int64_t chunk = 0; chunk < chunks; ++chunk)
      for (int64_t c = 0; c < C; ++c) channel_sums[c] += double(partial[chunk * C + c]);
  } else {
    std::vector<double> plane_sums(outer * C, 0.0);
    double* plane_sums_data = plane_sums.data();
    at::parallel_for(0, outer * C, spans_per_task(inner), [=](int64_t begin, int64_t end) {
      gradient_planes<kClamp>(grad, y, grad_x, plane_sums_data, begin, end, inner, p);
    });
    for (int64_t plane = 0; plane < outer * C; ++plane) channel_sums[plane % C] += plane_sums[plane];
  }
  for (int64_t c = 0; c < C; ++c) bias_grad[c] = scalar_t(channel_sums[c]);
}

at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope, double gain,
                   std::optional<double> clamp) {
  check_forward_args(x, bias, negative_slope, gain, clamp);
  const ChannelLayout L = channel_layout(x);
  at::Tensor y = empty_in_layout(L.tensor);
  cpu::advise_huge_pages(y);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu_cpu", [&] {
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    const auto p = make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp);
    with_clamp(clamp.has_value(), [&](auto kClamp) {
      forward_cpu<decltype(kClamp)::value, scalar_t>(L, b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
                                          y.mutable_data_ptr<scalar_t>(), p);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& y, double negative_slope,
                                            double gain, std::optional<double> clamp, bool bias_grad) {
  check_backward_args(grad, y, negative_slope, gain, clamp);
  const ChannelLayout L = channel_layout(y);
  const at::Tensor grad_in = match_layout(grad, L.tensor);
  at::Tensor grad_x = empty_in_layout(L.tensor);
  cpu::advise_huge_pages(grad_x);
  at::Tensor grad_bias = at::empty({bias_grad ? y.size(1) : 0}, y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_leaky_relu_backward_cpu", [&] {
    const auto p = make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp);
    with_clamp(clamp.has_value(), [&](auto kClamp) {
      backward_cpu<decltype(kClamp)::value, scalar_t>(grad_in.const_data_ptr<scalar_t>(), L,
                                                      grad_x.mutable_data_ptr<scalar_t>(),
                                                      bias_grad ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr, p);
    });
  });
  return {grad_x, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) {
  m.impl("bias_leaky_relu", &forward);
  m.impl("bias_leaky_relu_backward", &backward);
}

}  // namespace culturegan::bias_leaky_relu
