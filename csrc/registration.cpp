// The schemas of every culturegan op. This file is compiled into the CPU library (_C), which
// is always built and must be loaded before the CUDA library (_C_cuda) adds its kernels.
// Fake (meta) kernels and autograd formulas are registered from Python (culturegan/ops).
#include <torch/library.h>

TORCH_LIBRARY(culturegan, m) {
  m.def("bias_leaky_relu(Tensor x, Tensor? bias, float negative_slope, float gain, float? clamp) -> Tensor");
  // grad_x and (when bias_grad) the bias gradient reduced over all but dim 1; else an empty tensor.
  m.def("bias_leaky_relu_backward(Tensor grad, Tensor y, float negative_slope, float gain, float? clamp, "
        "bool bias_grad) -> (Tensor, Tensor)");
  // Per-(N, C) mean and sqrt(var + eps) over the trailing dimensions, in one stable pass.
  m.def("feature_stats(Tensor x, bool unbiased, float eps) -> (Tensor, Tensor)");
  // Per-sample Gram matrix scale * F F^T of F = x viewed as (N, C, H*W), centered first if center.
  m.def("gram(Tensor x, float scale, bool center) -> Tensor");
  // (mean, std, gram) of feature_stats(x, unbiased, eps) and scale * F F^T, from one read of x
  // (CUDA only: on CPU culturegan.ops composes feature_stats and gram).
  m.def("culture_stats(Tensor x, bool unbiased, float eps, float scale) -> (Tensor, Tensor, Tensor)");
  // act((x - center) * scale + shift) with (N, C) parameters in x's math type; act = LeakyReLU
  // with negative_slope, or none when it is None.
  m.def("channel_affine(Tensor x, Tensor center, Tensor scale, Tensor shift, float? negative_slope) -> Tensor");
  // The backward of instance_norm_act's y = act((z - mean) * gamma / std + beta) with mean, std
  // z's own statistics (instance norm / AdaIN): (grad_z, grad_gamma, grad_beta), the last two (N, C).
  m.def("instance_norm_act_backward(Tensor grad, Tensor z, Tensor mean, Tensor std, Tensor gamma, Tensor beta, "
        "float? negative_slope) -> (Tensor, Tensor, Tensor)");
  // CUT's PatchNCE loss of (N, P, C) patch features: (loss (N, P), lse (N, P), and when query_grad
  // d loss_i / d query_i, else an empty tensor); the last two in the math type.
  m.def("patch_nce_loss(Tensor query, Tensor key, float temperature, bool query_grad) -> (Tensor, Tensor, Tensor)");
  // (grad_query if query_grad, grad_key if key_grad; else empty tensors), recomputing the logits.
  m.def("patch_nce_loss_backward(Tensor grad, Tensor query, Tensor key, Tensor lse, float temperature, "
        "bool query_grad, bool key_grad) -> (Tensor, Tensor)");
  // NVlabs' upfirdn2d of x (N, C, H, W): zero insertion by up, padding (x0, x1, y0, y1; negative crops),
  // convolution with f (correlation when flip_filter) times gain, every down-th sample; up and down are
  // (x, y). f is 2-D, or 1-D for a separable filter, in x's math type (float64 for float64, else float32).
  m.def("upfirdn2d(Tensor x, Tensor f, int[2] up, int[2] down, int[4] padding, bool flip_filter, float gain) "
        "-> Tensor");
}
