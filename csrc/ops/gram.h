// gram: per-sample G = scale * F F^T, F = x viewed as (N, C, H*W) (minus its per-(n, c) mean
// when center). Written with ATen's batched GEMM, so the same code serves the CPU library
// (BLAS) and the CUDA library (cuBLAS); F is a view of x for contiguous and channels_last
// inputs (the GEMM reads either order), so nothing is copied unless center asks for it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/sub.h>
#include <c10/util/Exception.h>

#include "common/checks.h"

namespace culturegan::gram {

// The scale is applied inside the GEMM (alpha), so float16 sums of H*W products never exist
// before it (cuBLAS accumulates in float32); CPU half GEMMs run in float32 for the same reason.
inline at::Tensor forward(const at::Tensor& x, double scale, bool center) {
  check_channel_tensor(x, "x", 3, 4);
  TORCH_CHECK_VALUE(scale > 0.0, "scale must be > 0, got ", scale);
  at::Tensor features = x.flatten(2);
  if (x.is_cpu() && at::isReducedFloatingType(x.scalar_type())) features = features.to(at::kFloat);
  if (center) features = features.sub(features.mean(2, /*keepdim=*/true));
  const int64_t samples = x.size(0), channels = x.size(1);
  at::Tensor products = at::empty({samples, channels, channels}, features.options());
  return at::baddbmm(products, features, features.transpose(1, 2), /*beta=*/0.0, /*alpha=*/scale)
      .to(x.scalar_type());
}

}  // namespace culturegan::gram
