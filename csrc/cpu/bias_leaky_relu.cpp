// CPU kernels of bias_leaky_relu: one pass forward, one pass backward with the bias gradient
// reduced in the same pass. Plain loops that the compiler vectorises, parallel over rows with
// at::parallel_for (OpenMP). Reductions use fixed chunks, so results do not depend on the
// number of threads.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <type_traits>
#include <vector>

#include "common/layout.h"
#include "cpu/memory.h"
#include "cpu/vectorizable.h"
#include "ops/bias_leaky_relu.h"

namespace culturegan::bias_leaky_relu {
namespace {

using cpu::load;
using cpu::store;

// Elements per parallel task: small enough to spread over cores, large enough to amortise the
// cost of starting a task (the value ATen uses).
constexpr int64_t kGrainSize = 32768;

// Calls f with std::true_type or std::false_type: the clamp test moves out of the loops.
template <typename F>
void with_clamp(bool clamp, F&& f) {
  if (clamp) f(std::true_type{});
  else f(std::false_type{});
}

// Rows per parallel task, so each task touches about kGrainSize elements.
int64_t rows_grain(int64_t row_length) { return std::max<int64_t>(1, kGrainSize / std::max<int64_t>(1, row_length)); }

// The inner loops take restrict pointers and the parameters by value, so the compiler knows
// that stores to the output cannot change the inputs or parameters, and vectorises them.

// y[i] = activate(x[i] + b) over one row sharing one bias value.
template <bool kClamp, typename scalar_t, typename acc_t>
void activate_row(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t n, acc_t b, Params<acc_t> p) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) store(y, i, activate<kClamp>(load(x, i) + b, p));
}

// y[c] = activate(x[c] + bias[c]) over one row of all channels (channels innermost).
template <bool kClamp, typename scalar_t, typename acc_t>
void activate_channels(const scalar_t* __restrict__ x, const scalar_t* __restrict__ bias, scalar_t* __restrict__ y,
                       int64_t channels, Params<acc_t> p) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) store(y, c, activate<kClamp>(load(x, c) + load(bias, c), p));
}

// grad_x[i] = gradient(grad[i], y[i]); returns their sum, accumulated in double in kLanes
// independent partial sums (so the loop vectorises; a plain sum is a serial dependency).
template <bool kClamp, typename scalar_t, typename acc_t>
double gradient_row(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y, scalar_t* __restrict__ grad_x,
                    int64_t n, Params<acc_t> p) {
  constexpr int kLanes = 8;
  double lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int lane = 0; lane < kLanes; ++lane) {
      const acc_t g = gradient<kClamp>(load(grad, i + lane), load(y, i + lane), p);
      store(grad_x, i + lane, g);
      lanes[lane] += double(g);
    }
  }
  for (; i < n; ++i) {
    const acc_t g = gradient<kClamp>(load(grad, i), load(y, i), p);
    store(grad_x, i, g);
    lanes[0] += double(g);
  }
  double sum = 0.0;
  for (int lane = 0; lane < kLanes; ++lane) sum += lanes[lane];
  return sum;
}

// The same over one row of all channels, adding each channel's value to sums[c].
template <bool kClamp, typename scalar_t, typename acc_t>
void gradient_channels(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ y,
                       scalar_t* __restrict__ grad_x, double* __restrict__ sums, int64_t channels, Params<acc_t> p) {
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    const acc_t g = gradient<kClamp>(load(grad, c), load(y, c), p);
    store(grad_x, c, g);
    sums[c] += double(g);
  }
}

template <bool kClamp, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void forward_cpu(const ChannelLayout& L, const scalar_t* bias, scalar_t* y, Params<acc_t> p) {
  const scalar_t* x = L.tensor.const_data_ptr<scalar_t>();
  const int64_t outer = L.outer, C = L.channels, inner = L.inner;
  if (bias == nullptr) {
    at::parallel_for(0, L.tensor.numel(), kGrainSize, [=](int64_t begin, int64_t end) {
      activate_row<kClamp>(x + begin, y + begin, end - begin, acc_t(0), p);
    });
  } else if (inner == 1) {  // channels innermost: rows of C channels
    at::parallel_for(0, outer, rows_grain(C), [=](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) activate_channels<kClamp>(x + row * C, bias, y + row * C, C, p);
    });
  } else {  // one contiguous plane of `inner` elements per (n, c)
    at::parallel_for(0, outer * C, rows_grain(inner), [=](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        activate_row<kClamp>(x + row * inner, y + row * inner, inner, acc_t(bias[row % C]), p);
    });
  }
}

// grad_x = gradient(grad, y); when bias_grad is non-null also bias_grad[c] = the sum of grad_x
// over channel c, from per-row (or per-chunk) partial sums added in a fixed order.
template <bool kClamp, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void backward_cpu(const scalar_t* grad, const ChannelLayout& L, scalar_t* grad_x, scalar_t* bias_grad, Params<acc_t> p) {
  const scalar_t* y = L.tensor.const_data_ptr<scalar_t>();
  const int64_t outer = L.outer, C = L.channels, inner = L.inner;
  if (bias_grad == nullptr) {
    at::parallel_for(0, L.tensor.numel(), kGrainSize, [=](int64_t begin, int64_t end) {
      gradient_row<kClamp>(grad + begin, y + begin, grad_x + begin, end - begin, p);
    });
    return;
  }
  std::vector<double> channel_sums(C, 0.0);
  if (inner == 1) {
    // Fixed chunks of rows (independent of the thread count), each with its own partial sums.
    const int64_t chunk_rows = rows_grain(C);
    const int64_t chunks = (outer + chunk_rows - 1) / chunk_rows;
    std::vector<double> partial(chunks * C, 0.0);
    double* partial_data = partial.data();
    at::parallel_for(0, chunks, 1, [=](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t row_end = std::min(outer, (chunk + 1) * chunk_rows);
        for (int64_t row = chunk * chunk_rows; row < row_end; ++row)
          gradient_channels<kClamp>(grad + row * C, y + row * C, grad_x + row * C, partial_data + chunk * C, C, p);
      }
    });
    for (int64_t chunk = 0; chunk < chunks; ++chunk)
      for (int64_t c = 0; c < C; ++c) channel_sums[c] += partial[chunk * C + c];
  } else {
    std::vector<double> row_sums(outer * C, 0.0);
    double* row_sums_data = row_sums.data();
    at::parallel_for(0, outer * C, rows_grain(inner), [=](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row)
        row_sums_data[row] = gradient_row<kClamp>(grad + row * inner, y + row * inner, grad_x + row * inner, inner, p);
    });
    for (int64_t row = 0; row < outer * C; ++row) channel_sums[row % C] += row_sums[row];
  }
  for (int64_t c = 0; c < C; ++c) bias_grad[c] = scalar_t(channel_sums[c]);
}

at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope, double gain,
                   std::optional<double> clamp) {
  check_forward_args(x, bias, negative_slope, gain, clamp);
  const ChannelLayout L = channel_layout(x);
  at::Tensor y = at::empty_like(L.tensor);
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
  at::Tensor grad_x = at::empty_like(L.tensor);
  cpu::advise_huge_pages(grad_x);
  at::Tensor grad_bias = at::empty({bias_grad ? y.size(1) : 0}, y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_leaky_relu_backward_cpu", [&] {
    const auto p = make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp);
    with_clamp(clamp.has_value(), [&](auto kClamp) {
      backward_cpu<decltype(kClamp)::value, scalar_t>(grad_in.const_data_ptr<scalar_t>(), L, grad_x.mutable_data_ptr<scalar_t>(),
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
