// bias_leaky_relu: y = clamp(leaky_relu(x + bias) * gain, -clamp, clamp), bias along dim 1.
// The pointwise math shared by the CPU and CUDA kernels (and mirrored by the Triton kernel).
#pragma once

#include <optional>

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/checks.h"
#include "common/inline.h"


namespace culturegan::bias_leaky_relu {

// Parameters in the accumulation type; clamp < 0 means "no clamp". The activation is written
// as a multiply by a selected factor (gain or gain * slope): a select of two constants needs no
// speculation of floating-point work, so the CPU loops vectorise.
template <typename acc_t>
struct Params {
  acc_t gain;           // d(output)/d(pre-activation) where the pre-activation is > 0
  acc_t negative_gain;  // gain * negative_slope: the same where it is <= 0
  acc_t clamp;
};

// kClamp: whether p.clamp applies. The CPU kernels pick it outside their loops, which keeps
// the loops free of branches (and so vectorised); the CUDA kernels test p.clamp >= 0 instead.
template <bool kClamp, typename acc_t>
CG_INLINE acc_t activate(acc_t pre, const Params<acc_t>& p) {
  acc_t y = pre * (pre > acc_t(0) ? p.gain : p.negative_gain);
  if constexpr (kClamp) y = y > p.clamp ? p.clamp : (y < -p.clamp ? -p.clamp : y);  // NaN stays NaN
  return y;
}

// d(output)/d(pre-activation) times dy, read from the saved output y alone: the sign of y is
// the sign of the pre-activation (gain > 0, slope >= 0), and a clamped output has no gradient.
template <bool kClamp, typename acc_t>
CG_INLINE acc_t gradient(acc_t dy, acc_t y, const Params<acc_t>& p) {
  const acc_t d = dy * (y > acc_t(0) ? p.gain : p.negative_gain);
  if constexpr (kClamp) return ((y > -p.clamp) & (y < p.clamp)) ? d : acc_t(0);
  return d;
}

template <typename acc_t>
CG_INLINE acc_t activate(acc_t pre, const Params<acc_t>& p) {
  return p.clamp >= acc_t(0) ? activate<true>(pre, p) : activate<false>(pre, p);
}

template <typename acc_t>
CG_INLINE acc_t gradient(acc_t dy, acc_t y, const Params<acc_t>& p) {
  return p.clamp >= acc_t(0) ? gradient<true>(dy, y, p) : gradient<false>(dy, y, p);
}

inline void check_params(double negative_slope, double gain, std::optional<double> clamp) {
  TORCH_CHECK_VALUE(negative_slope >= 0.0,
                    "negative_slope must be >= 0 (the gradient is read from the output's sign), got ", negative_slope);
  TORCH_CHECK_VALUE(gain > 0.0, "gain must be > 0, got ", gain);
  TORCH_CHECK_VALUE(!clamp.has_value() || *clamp >= 0.0, "clamp must be >= 0 (or None), got ", clamp.value_or(0.0));
}

template <typename acc_t>
Params<acc_t> make_params(double negative_slope, double gain, std::optional<double> clamp) {
  return {acc_t(gain), acc_t(gain * negative_slope), acc_t(clamp.has_value() ? *clamp : -1.0)};
}

inline void check_forward_args(const at::Tensor& x, const std::optional<at::Tensor>& bias, double negative_slope,
                               double gain, std::optional<double> clamp) {
  check_channel_tensor(x, "x");
  if (bias.has_value()) check_channel_vector(*bias, "bias", x, "x");
  check_params(negative_slope, gain, clamp);
}

inline void check_backward_args(const at::Tensor& grad, const at::Tensor& y, double negative_slope, double gain,
                                std::optional<double> clamp) {
  check_channel_tensor(y, "y");
  check_same_shape(grad, "grad", y, "y");
  check_same_device(grad, "grad", y, "y");
  check_same_dtype(grad, "grad", y, "y");
  check_params(negative_slope, gain, clamp);
}

}  // namespace culturegan::bias_leaky_relu
