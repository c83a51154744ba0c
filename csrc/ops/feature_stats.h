// feature_stats: per-(N, C) mean and std = sqrt(var + eps) over the trailing dimensions.
// Shared by the CPU and CUDA kernels (and mirrored by the Triton kernel): the argument checks
// and the numerically stable merge of partial statistics (Chan et al.), which never forms
// E[x^2] - E[x]^2.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>

#include "common/checks.h"
#include "common/inline.h"


namespace culturegan::feature_stats {

// Count, mean and sum of squared deviations from the mean of some elements.
template <typename acc_t>
struct Moments {
  acc_t count;
  acc_t mean;
  acc_t m2;
};

// The moments of the union of two disjoint sets of elements.
template <typename acc_t>
CG_INLINE Moments<acc_t> merge(const Moments<acc_t>& a, const Moments<acc_t>& b) {
  const acc_t count = a.count + b.count;
  if (count == acc_t(0)) return a;
  const acc_t delta = b.mean - a.mean;
  const acc_t weight_b = b.count / count;
  return {count, a.mean + delta * weight_b, a.m2 + b.m2 + delta * delta * a.count * weight_b};
}

template <typename acc_t>
CG_INLINE acc_t std_of(const Moments<acc_t>& m, bool unbiased, acc_t eps) {
  const acc_t var = m.m2 / (unbiased ? m.count - acc_t(1) : m.count);
  return std::sqrt(var + eps);
}

inline void check_args(const at::Tensor& x, bool unbiased, double eps) {
  check_channel_tensor(x, "x", 3, 4);
  TORCH_CHECK_VALUE(eps >= 0.0, "eps must be >= 0, got ", eps);
  TORCH_CHECK_VALUE(!unbiased || x.numel() / (x.size(0) * x.size(1)) >= 2,
                    "unbiased=True needs at least 2 elements per (n, c) to average over, got shape ", x.sizes());
}

}  // namespace culturegan::feature_stats
