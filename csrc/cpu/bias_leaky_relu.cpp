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

#include <vector>

#include "common/layout.h"
#include "ops/bias_leaky_relu.h"

namespace culturegan::bias_leaky_relu {
namespace {

// Elements per parallel task: small enough to spread over cores, large enough to amortise the
// cost of starting a task (the value ATen uses).
constexpr int64_t kGrainSize = 32768;

// Rows per parallel task, so each task touches about GRAIN_SIZE elements.
int64_t rows_grain(int64_t row_length) {
  return std::max<int64_t>(1, kGrainSize / std::max<int64_t>(1, row_length));
}

template <typename scalar_t>
void forward_cpu(const ChannelLayout& L, const scalar_t* bias, scalar_t* y, const Params<at::opmath_type<scalar_t>>& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x = L.tensor.const_data_ptr<scalar_t>();
  const int64_t C = L.channels, inner = L.inner;
  if (bias == nullptr) {
    at::parallel_for(0, L.tensor.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) y[i] = scalar_t(activate(acc_t(x[i]), p));
    });
  } else if (inner == 1) {  // channels innermost: rows of C channels
    at::parallel_for(0, L.outer, rows_grain(C), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const scalar_t* xr = x + row * C;
        scalar_t* yr = y + row * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yr[c] = scalar_t(activate(acc_t(xr[c]) + acc_t(bias[c]), p));
      }
    });
  } else {  // one contiguous plane of `inner` elements per (n, c)
    at::parallel_for(0, L.outer * C, rows_grain(inner), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const acc_t b = acc_t(bias[row % C]);
        const scalar_t* xr = x + row * inner;
        scalar_t* yr = y + row * inner;
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) yr[i] = scalar_t(activate(acc_t(xr[i]) + b, p));
      }
    });
  }
}

// grad_x = gradient(grad, y); when bias_grad is non-null also bias_grad[c] = sum of grad_x over
// all elements of channel c, accumulated in double per row (or row chunk), then over rows in order.
template <typename scalar_t>
void backward_cpu(const scalar_t* grad, const ChannelLayout& L, scalar_t* grad_x, scalar_t* bias_grad,
                  const Params<at::opmath_type<scalar_t>>& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* y = L.tensor.const_data_ptr<scalar_t>();
  const int64_t C = L.channels, inner = L.inner;
  if (bias_grad == nullptr) {
    at::parallel_for(0, L.tensor.numel(), kGrainSize, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) grad_x[i] = scalar_t(gradient(acc_t(grad[i]), acc_t(y[i]), p));
    });
    return;
  }
  std::vector<double> channel_sums(C, 0.0);
  if (inner == 1) {
    // Fixed chunks of rows, each with its own per-channel partial sums.
    const int64_t chunk_rows = rows_grain(C);
    const int64_t chunks = (L.outer + chunk_rows - 1) / chunk_rows;
    std::vector<double> partial(chunks * C, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        double* sums = partial.data() + chunk * C;
        const int64_t row_end = std::min(L.outer, (chunk + 1) * chunk_rows);
        for (int64_t row = chunk * chunk_rows; row < row_end; ++row) {
          const int64_t offset = row * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const acc_t g = gradient(acc_t(grad[offset + c]), acc_t(y[offset + c]), p);
            grad_x[offset + c] = scalar_t(g);
            sums[c] += double(g);
          }
        }
      }
    });
    for (int64_t chunk = 0; chunk < chunks; ++chunk)
      for (int64_t c = 0; c < C; ++c) channel_sums[c] += partial[chunk * C + c];
  } else {
    std::vector<double> row_sums(L.outer * C, 0.0);
    at::parallel_for(0, L.outer * C, rows_grain(inner), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t offset = row * inner;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < inner; ++i) {
          const acc_t g = gradient(acc_t(grad[offset + i]), acc_t(y[offset + i]), p);
          grad_x[offset + i] = scalar_t(g);
          sum += double(g);
        }
        row_sums[row] = sum;
      }
    });
    for (int64_t row = 0; row < L.outer * C; ++row) channel_sums[row % C] += row_sums[row];
  }
  for (int64_t c = 0; c < C; ++c) bias_grad[c] = scalar_t(channel_sums[c]);
}

at::Tensor forward(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope, double gain,
                   std::optional<double> clamp) {
  check_forward_args(x, bias, negative_slope, gain, clamp);
  const ChannelLayout L = channel_layout(x);
  at::Tensor y = at::empty_like(L.tensor);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_leaky_relu_cpu", [&] {
    const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
    forward_cpu<scalar_t>(L, b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, y.mutable_data_ptr<scalar_t>(),
                          make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& y, double negative_slope,
                                            double gain, std::optional<double> clamp, bool bias_grad) {
  check_backward_args(grad, y, negative_slope, gain, clamp);
  const ChannelLayout L = channel_layout(y);
  const at::Tensor grad_in = match_layout(grad, L.tensor);
  at::Tensor grad_x = at::empty_like(L.tensor);
  at::Tensor grad_bias = at::empty({bias_grad ? y.size(1) : 0}, y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "bias_leaky_relu_backward_cpu", [&] {
    backward_cpu<scalar_t>(grad_in.const_data_ptr<scalar_t>(), L, grad_x.mutable_data_ptr<scalar_t>(),
                           bias_grad ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr,
                           make_params<at::opmath_type<scalar_t>>(negative_slope, gain, clamp));
  });
  return {grad_x, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) {
  m.impl("bias_leaky_relu", &forward);
  m.impl("bias_leaky_relu_backward", &backward);
}

}  // namespace culturegan::bias_leaky_relu
