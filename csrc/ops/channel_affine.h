// channel_affine: y = act((x - center[n, c]) * scale[n, c] + shift[n, c]), one (center, scale,
// shift) per sample and channel, act = LeakyReLU(negative_slope) or none. Instance norm and
// AdaIN apply their statistics with it (center = mean, scale = gamma / std, shift = beta), and
// feature_stats' backward is one (dx = (x - mean) * dstd / (d std) + dmean / HW). Subtracting
// the center before scaling keeps float32 precision for features with a large mean.
// Shared by the CPU and CUDA kernels (and mirrored by the Triton kernel).
#pragma once

#include <optional>

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

inline void check_args(const at::Tensor& x, const at::Tensor& center, const at::Tensor& scale, const at::Tensor& shift,
                       std::optional<double> negative_slope) {
  check_channel_tensor(x, "x", 2, 4);
  const char* shape_note = " (x's samples and channels)";
  check_parameter(center, "center", x, "x", shape_note);
  check_parameter(scale, "scale", x, "x", shape_note);
  check_parameter(shift, "shift", x, "x", shape_note);
  check_optional_slope(negative_slope);
}

}  // namespace culturegan::channel_affine
