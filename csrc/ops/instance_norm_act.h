// instance_norm_act_backward, the backward of the op instance_norm_act:
//   y = act((z - mean) * gamma / std + beta),
// where mean and std are z's own per-(n, c) statistics (instance norm or AdaIN, biased variance,
// eps inside std), act = LeakyReLU(negative_slope) or none. With g' = dL/dy * act'(pre) and,
// per (n, c),
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

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include "common/checks.h"
#include "common/inline.h"
#include "common/layout.h"

namespace culturegan::instance_norm_act {

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

// The (n, c) parameters and gradients, as pointers into contiguous (N, C) tensors.
template <typename acc_t>
struct Parameters {
  const acc_t* mean;
  const acc_t* std;
  const acc_t* gamma;
  const acc_t* beta;
  acc_t negative_slope;  // 1 without activation
  acc_t* grad_gamma;
  acc_t* grad_beta;

  CG_INLINE Plane<acc_t> plane(int64_t i) const { return plane_of(mean[i], std[i], gamma[i], beta[i], negative_slope); }
};

// Writes plane i's dgamma = B / std and dbeta = A from its sums and returns its apply
// coefficients. The sums may be wider than acc_t (the CPU adds its partial sums in double);
// B / std is then divided in that type before it is rounded.
template <typename acc_t, typename sum_t>
CG_INLINE Apply<acc_t> finish(const Parameters<acc_t>& params, int64_t i, const Plane<acc_t>& p, sum_t sum_grad,
                              sum_t sum_grad_centered, acc_t count) {
  const acc_t std = params.std[i];
  params.grad_gamma[i] = acc_t(sum_grad_centered / sum_t(std));
  params.grad_beta[i] = acc_t(sum_grad);
  return apply_of(p, std, acc_t(sum_grad), acc_t(sum_grad_centered), count);
}

inline void check_args(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& mean, const at::Tensor& std,
                       const at::Tensor& gamma, const at::Tensor& beta, std::optional<double> negative_slope) {
  check_channel_tensor(z, "z", 3, 4);
  check_same_shape(grad, "grad", z, "z");
  check_same_device(grad, "grad", z, "z");
  check_same_dtype(grad, "grad", z, "z");
  check_parameter(mean, "mean", z, "z");
  check_parameter(std, "std", z, "z");
  check_parameter(gamma, "gamma", z, "z");
  check_parameter(beta, "beta", z, "z");
  check_optional_slope(negative_slope);
}

// The tensors the kernels take, made alike by the CPU and CUDA entry points once the arguments
// are checked: z and grad in one kernel layout, the (N, C) parameters contiguous, the outputs.
struct KernelArgs {
  ChannelLayout z;
  at::Tensor grad;
  at::Tensor mean, std, gamma, beta;
  double negative_slope;  // 1 without activation: the kernels' loops stay free of branches
  at::Tensor grad_z, grad_gamma, grad_beta;  // uninitialised
  int64_t samples, channels, spatial;

  // Channels innermost with more than one position: the kernels' row-wise path.
  bool by_rows() const { return z.inner == 1 && spatial > 1; }

  template <typename acc_t>
  Parameters<acc_t> parameters() const {
    return {mean.const_data_ptr<acc_t>(), std.const_data_ptr<acc_t>(), gamma.const_data_ptr<acc_t>(),
            beta.const_data_ptr<acc_t>(), acc_t(negative_slope), grad_gamma.mutable_data_ptr<acc_t>(),
            grad_beta.mutable_data_ptr<acc_t>()};
  }
};

inline KernelArgs kernel_args(const at::Tensor& grad, const at::Tensor& z, const at::Tensor& mean,
                              const at::Tensor& std, const at::Tensor& gamma, const at::Tensor& beta,
                              std::optional<double> negative_slope) {
  const ChannelLayout layout = channel_layout(z);
  const int64_t samples = z.size(0), channels = z.size(1);
  return {layout,
          match_layout(grad, layout.tensor),
          mean.contiguous(), std.contiguous(), gamma.contiguous(), beta.contiguous(),
          negative_slope.value_or(1.0),
          empty_in_layout(layout.tensor),
          at::empty(mean.sizes(), mean.options()),
          at::empty(mean.sizes(), mean.options()),
          samples, channels, z.numel() / (samples * channels)};
}

}  // namespace culturegan::instance_norm_act
