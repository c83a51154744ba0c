// channel_affine: y = act((x - center[n, c]) * scale[n, c] + shift[n, c]), one (center, scale,
// shift) per sample and channel, act = LeakyReLU(negative_slope) or none. Instance norm and
// AdaIN apply their statistics with it (center = mean, scale = gamma / std, shift = beta), and
// feature_stats' backward is one (dx = (x - mean) * dstd / (d std) + dmean / HW). Subtracting
// the center before scaling keeps float32 precision for features with a large mean.
// Shared by the CPU and CUDA kernels (and mirrored by the Triton kernel).
#pragma once

#include <optional>

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/checks.h"
#include "common/inline.h"

namespace culturegan::channel_affine {

// negative_slope < 0 means "no activation" (the schema's None).
template <typename acc_t>
CG_INLINE acc_t apply(acc_t x, acc_t center, acc_t scale, acc_t shift, acc_t negative_slope) {
  const acc_t v = (x - center) * scale + shift;
  return negative_slope < acc_t(0) ? v : v * (v > acc_t(0) ? acc_t(1) : negative_slope);
}

// An (N, C) parameter of x in x's math type (float32 for the half types, so tiny factors such
// as 1 / (H * W * std) keep their precision).
inline void check_parameter(const at::Tensor& p, const char* name, const at::Tensor& x) {
  check_same_device(p, name, x, "x");
  const at::ScalarType math = at::toOpMathType(x.scalar_type());
  TORCH_CHECK_TYPE(p.scalar_type() == math, name, " must have dtype ", dtype_name(math), " (x's math type), got ",
                   dtype_name(p.scalar_type()));
  TORCH_CHECK_VALUE(p.dim() == 2 && p.size(0) == x.size(0) && p.size(1) == x.size(1), name, " must have shape (",
                    x.size(0), ", ", x.size(1), ") (x's samples and channels), got shape ", p.sizes());
}

inline void check_args(const at::Tensor& x, const at::Tensor& center, const at::Tensor& scale, const at::Tensor& shift,
                       std::optional<double> negative_slope) {
  check_channel_tensor(x, "x", 2, 4);
  check_parameter(center, "center", x);
  check_parameter(scale, "scale", x);
  check_parameter(shift, "shift", x);
  TORCH_CHECK_VALUE(!negative_slope.has_value() || *negative_slope >= 0.0, "negative_slope must be >= 0 (or None), got ",
                    negative_slope.value_or(0.0));
}

}  // namespace culturegan::channel_affine
