// patch_nce_loss: CUT's PatchNCE loss of (N, P, C) query and key patch features (see
// culturegan/ops/patch_nce_loss.py for the formulas). The (N, P, P) dot products are batched
// GEMMs of the features as they are (the device's Rows::product_: BLAS on CPU, cuBLAS on CUDA): no
// normalised copies are made.
// The normalisation is folded into the row passes of the device's `Rows`
// (csrc/cpu/patch_nce_loss.cpp, csrc/cuda/patch_nce_loss.cu) through each patch's inverse norm
// r = 1 / max(|x|, kNormEps):
//
//   z_ij = c_ij r_i r'_j / T                     logits from the raw dot products c = q k^T
//   D~_ij = g_i (softmax(z_i)_j - [i == j]) r_i r'_j / T
//   (D~ k)_i = r_i (D k^)_i,  (D~^T q)_j = r'_j (D^T q^)_j
//
// so one scaled matrix D~ serves both gradients: grad_x = w - x r^2 <x, w> per row, with w the
// row of D~ k (queries) or D~^T q (keys) (w itself below F.normalize's floor, where x / eps has
// no projection). The logits live only inside a call: the forward forms the query's gradient
// for a unit upstream gradient when asked, and the backward recomputes the logits from the
// inputs and the saved log-sum-exp.
//
// Rows works in the math type (float32 for the half types) on contiguous tensors and gives:
//   product_(out, a, b)                            out := the batched matrix product a @ b (a GEMM)
//   inverse_norms(x)                               (N, P) r of x's rows
//   log_sum_exp(dots, r, r', T)                    (loss_i = lse_i - z_ii, lse_i)
//   softmax_gradient_(dots, r, r', lse, grad, T)   dots := D~ in place (grad undefined: 1)
//   loss_and_unit_gradient_(dots, r, r', T, loss, lse)
//                                                  both of the above with grad 1, into loss and lse
//   normalize_backward_(w, x, r)                   w := grad_x in place
//   images_per_chunk(q)                            how many images the forward takes at a time when
//                                                  it forms the query's gradient (below)
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "common/checks.h"

namespace culturegan::patch_nce_loss {

constexpr double kNormEps = 1e-12;  // F.normalize's

inline void check_inputs(const at::Tensor& query, const at::Tensor& key, double temperature) {
  for (const auto& [t, name] : {std::pair{&query, "query"}, std::pair{&key, "key"}}) {
    TORCH_CHECK_VALUE(t->dim() == 3, name, " must have shape (N, P, C) (images, patches, features), got ",
                      t->sizes());
    TORCH_CHECK_VALUE(t->numel() > 0, name, " is empty (shape ", t->sizes(), "); every dimension must be >= 1");
    check_floating(*t, name);
  }
  check_same_device(key, "key", query, "query");
  check_same_dtype(key, "key", query, "query");
  TORCH_CHECK_VALUE(key.sizes() == query.sizes(), "key must have query's shape ", query.sizes(),
                    " (the same patches at the same places), got ", key.sizes());
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature > 0.0, "temperature must be > 0, got ", temperature);
}

inline at::ScalarType math_type(const at::Tensor& t) { return at::toOpMathType(t.scalar_type()); }

// x as the GEMMs and row passes read it: contiguous, in its math type (x itself when it is).
inline at::Tensor as_math(const at::Tensor& x) { return x.to(math_type(x)).contiguous(); }

inline at::Tensor empty_gradient(const at::Tensor& like, at::ScalarType dtype) {
  return at::empty({0}, like.options().dtype(dtype));
}

template <class Rows>
at::Tensor product(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
  Rows::product_(out, a, b);
  return out;
}

// (loss (N, P) in query's dtype, lse (N, P) and, when query_grad, d loss_i / d query_i (N, P, C),
// both in the math type). The query's gradient is formed a chunk of images at a time, so that a
// chunk's logits are still in cache when the row pass and the second GEMM read them (on the CPU;
// one chunk on CUDA).
template <class Rows>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& query, const at::Tensor& key,
                                                       double temperature, bool query_grad) {
  check_inputs(query, key, temperature);
  const at::NoGradGuard opaque;  // see backward
  const at::Tensor q = as_math(query), k = as_math(key);
  const at::Tensor q_scale = Rows::inverse_norms(q), k_scale = Rows::inverse_norms(k);
  if (!query_grad) {
    auto [loss, lse] = Rows::log_sum_exp(product<Rows>(q, k.transpose(1, 2)), q_scale, k_scale, temperature);
    return {loss.to(query.scalar_type()), lse, empty_gradient(query, math_type(query))};
  }
  const int64_t images = q.size(0), patches = q.size(1), chunk = Rows::images_per_chunk(q);
  at::Tensor loss = at::empty({images, patches}, q.options()), lse = at::empty_like(loss), unit = at::empty_like(q);
  for (int64_t first = 0; first < images; first += chunk) {
    const int64_t count = std::min(chunk, images - first);
    const auto part = [&](const at::Tensor& t) { return t.narrow(0, first, count); };
    at::Tensor dots = product<Rows>(part(q), part(k).transpose(1, 2));
    Rows::loss_and_unit_gradient_(dots, part(q_scale), part(k_scale), temperature, part(loss), part(lse));
    at::Tensor chunk_unit = part(unit);
    Rows::product_(chunk_unit, dots, part(k));
    Rows::normalize_backward_(chunk_unit, part(q), part(q_scale));
  }
  return {loss.to(query.scalar_type()), lse, unit};
}

// (grad_query if query_grad, grad_key if key_grad; else empty), recomputing the logits.
template <class Rows>
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& query, const at::Tensor& key,
                                            const at::Tensor& lse, double temperature, bool query_grad,
                                            bool key_grad) {
  check_inputs(query, key, temperature);
  const at::ScalarType math = math_type(query);
  check_same_device(grad, "grad", query, "query");
  check_same_device(lse, "lse", query, "query");
  TORCH_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == query.size(0) && grad.size(1) == query.size(1),
                    "grad must have shape (N, P) = (", query.size(0), ", ", query.size(1), "), got ", grad.sizes());
  TORCH_CHECK_VALUE(lse.sizes() == grad.sizes(), "lse must have shape (N, P), got ", lse.sizes());
  TORCH_CHECK_TYPE(lse.scalar_type() == math, "lse must have dtype ", dtype_name(math), " (query's math type), got ",
                   dtype_name(lse.scalar_type()));
  check_floating(grad, "grad");
  at::Tensor grad_query = empty_gradient(query, query.scalar_type());
  at::Tensor grad_key = empty_gradient(key, key.scalar_type());
  if (!query_grad && !key_grad) return {grad_query, grad_key};
  // Called under create_graph (to raise on a second derivative), the ATen ops inside would record
  // a graph of their own, and the GEMMs into given outputs refuse inputs that require grad.
  const at::NoGradGuard opaque;
  const at::Tensor q = as_math(query), k = as_math(key);
  const at::Tensor q_scale = Rows::inverse_norms(q), k_scale = Rows::inverse_norms(k);
  at::Tensor scaled = product<Rows>(q, k.transpose(1, 2));
  Rows::softmax_gradient_(scaled, q_scale, k_scale, lse.contiguous(), grad.to(math).contiguous(), temperature);
  if (query_grad) {
    grad_query = product<Rows>(scaled, k);
    Rows::normalize_backward_(grad_query, q, q_scale);
    grad_query = grad_query.to(query.scalar_type());
  }
  if (key_grad) {
    grad_key = product<Rows>(scaled.transpose(1, 2), q);
    Rows::normalize_backward_(grad_key, k, k_scale);
    grad_key = grad_key.to(key.scalar_type());
  }
  return {grad_query, grad_key};
}

}  // namespace culturegan::patch_nce_loss
