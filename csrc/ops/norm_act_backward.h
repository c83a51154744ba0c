// norm_act_backward: the backward of y = act((z - mean) * gamma / std + beta), where mean and std
// are z's own per-(n, c) statistics (instance norm or AdaIN, biased variance, eps inside std),
// act = LeakyReLU(negative_slope) or none. With g' = dL/dy * act'(pre) and, per (n, c),
//   A = sum g',   B = sum g' (z - mean)      (over the HW positions)
// the gradients are
//   dz     = gamma / std * (g' - A / HW - (z - mean) * B / (std^2 HW))
//   dgamma = B / std,   dbeta = A.
// The kernels read grad and z twice (a reduction pass, then an apply pass over the same plane
// while it is still in cache) and never store y or g': eager torch takes a pass for the
// activation's backward and two for the normalisation's. Shared by the CPU and CUDA kernels
// (and mirrored by the Triton kernel).
#pragma once

#include <optional>

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/checks.h"
#include "common/inline.h"

namespace culturegan::norm_act_backward {

// One (n, c)'s forward parameters: pre = (z - mean) * scale + beta, scale = gamma / std.
template <typename acc_t>
struct Plane {
  acc_t mean, scale, beta, negative_slope;  // negative_slope 1: no activation (branch-free loops)
};

template <typename acc_t>
CG_INLINE Plane<acc_t> plane_of(acc_t mean, acc_t std, acc_t gamma, acc_t beta, acc_t negative_slope) {
  return {mean, gamma / std, beta, negative_slope};
}

// g' = dL/dy * act'(pre); the activation's derivative is 1 where pre > 0, else the slope.
template <typename acc_t>
CG_INLINE acc_t activated_grad(acc_t grad, acc_t z, const Plane<acc_t>& p) {
  const acc_t pre = (z - p.mean) * p.scale + p.beta;
  return pre > acc_t(0) ? grad : grad * p.negative_slope;
}

// dz = k_grad * g' + k_centered * (z - mean) + k_constant, from the plane's sums A and B.
template <typename acc_t>
struct Apply {
  acc_t k_grad, k_centered, k_constant;
};

template <typename acc_t>
CG_INLINE Apply<acc_t> apply_of(const Plane<acc_t>& p, acc_t std, acc_t sum_grad, acc_t sum_grad_centered,
                                acc_t count) {
  return {p.scale, -p.scale * sum_grad_centered / (std * std * count), -p.scale * sum_grad / count};
}

template <typename acc_t>
CG_INLINE acc_t grad_z(acc_t grad, acc_t z, const Plane<acc_t>& p, const Apply<acc_t>& a) {
  return a.k_grad * activated_grad(grad, z, p) + a.k_centered * (z - p.mean) + a.k_constant;
}

// An (N, C) parameter of z in z's math type.
inline void check_parameter(const at::Tensor& t, const char* name, const at::Tensor& z) {
  check_same_device(t, name, z, "z");
  const at::ScalarType math = at::toOpMathType(z.scalar_type());
  TORCH_CHECK_TYPE(t.scalar_type() == math, name, " must have dtype ", dtype_name(math), " (z's math type), got ",
                   dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == z.size(0) && t.size(1) == z.size(1), name, " must have shape (",
                    z.size(0), ", ", z.size(1), "), got shape ", t.sizes());
}

inline void check_args(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& mean, const at::Tensor& std,
                       const at::Tensor& gamma, const at::Tensor& beta, std::optional<double> negative_slope) {
  check_channel_tensor(z, "z", 3, 4);
  check_same_shape(grad, "grad", z, "z");
  check_same_device(grad, "grad", z, "z");
  check_same_dtype(grad, "grad", z, "z");
  check_parameter(mean, "mean", z);
  check_parameter(std, "std", z);
  check_parameter(gamma, "gamma", z);
  check_parameter(beta, "beta", z);
  TORCH_CHECK_VALUE(!negative_slope.has_value() || *negative_slope >= 0.0, "negative_slope must be >= 0 (or None), got ",
                    negative_slope.value_or(0.0));
}

}  // namespace culturegan::norm_act_backward
