// patch_nce_loss on CPU tensors: csrc/ops/patch_nce_loss.h with BLAS GEMMs and these row
// passes, each one parallel loop over the N * P rows that the compiler vectorises (see
// cpu/vectorizable.h). The float32 exponentials come from fast_exp below, which vectorises where
// std::exp does not (float64 uses std::exp). The log-sum-exp of a row is shifted by the row's
// positive logit z_ii instead of its maximum: exp(0) = 1 is one of the terms, so the sum never
// underflows, no pass for the maximum is needed (a max reduction does not vectorise without
// fast-math), and loss_i = log(sum) needs no subtraction. Only when some logit exceeds the
// positive by more than exp can hold (temperatures below about 0.025) is the row summed again
// from its maximum.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/vectorizable.h"  // CG_CPU_CLONES
#include "ops/patch_nce_loss.h"

namespace culturegan::patch_nce_loss {
namespace {

using cpu::spans_per_task;

// exp(x) for float32 within about 2 ulp (Cephes' expf: x = n ln 2 + r, |r| <= ln(2) / 2, a
// degree-6 polynomial for e^r, 2^n through the exponent bits), branch-free so loops vectorise.
// Arguments below -87.3 give about 1e-38 instead of 0: softmax terms that small do not count.
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.3f), 88.7f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * c10::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
}
inline double fast_exp(double x) { return std::exp(x); }

template <typename acc_t>
CG_CPU_CLONES void inverse_norm_rows(const acc_t* __restrict__ x, acc_t* __restrict__ scale, int64_t first,
                                     int64_t last, int64_t channels) {
  for (int64_t row = first; row < last; ++row) {
    const acc_t* __restrict__ values = x + row * channels;
    acc_t squares = 0;
#pragma omp simd reduction(+ : squares)
    for (int64_t c = 0; c < channels; ++c) squares += values[c] * values[c];
    scale[row] = acc_t(1) / std::max(std::sqrt(squares), acc_t(kNormEps));
  }
}

// sum_j exp(z_j - shift) of z_j = dots_j * row_scale * column_scale_j.
template <typename acc_t>
inline acc_t shifted_sum(const acc_t* __restrict__ dots, const acc_t* __restrict__ column_scale, int64_t patches,
                         acc_t row_scale, acc_t shift) {
  acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < patches; ++j) sum += fast_exp(dots[j] * row_scale * column_scale[j] - shift);
  return sum;
}

// Above this a term may have been clamped by fast_exp (or overflowed): the row is summed again
// from its maximum. P terms of at most e^69 stay below it for any P up to 2^30.
constexpr double kLargestSafeSum = 0x1p100;

// log-sum-exp of a row whose sum shifted by its positive logit exceeded kLargestSafeSum: summed
// again from the row's maximum.
template <typename acc_t>
acc_t log_sum_exp_from_maximum(const acc_t* __restrict__ z, const acc_t* __restrict__ keys, int64_t patches,
                               acc_t row_scale, acc_t positive) {
  acc_t largest = positive;
  for (int64_t j = 0; j < patches; ++j) largest = std::max(largest, z[j] * row_scale * keys[j]);
  return largest + std::log(shifted_sum(z, keys, patches, row_scale, largest));
}

// Row r of the (N * P, P) dot products: its image's query patch r % P against every key patch.
template <typename acc_t>
CG_CPU_CLONES void log_sum_exp_rows(const acc_t* __restrict__ dots, const acc_t* __restrict__ q_scale,
                                    const acc_t* __restrict__ k_scale, acc_t* __restrict__ loss,
                                    acc_t* __restrict__ lse, int64_t first, int64_t last, int64_t patches,
                                    acc_t inverse_temperature) {
  for (int64_t row = first; row < last; ++row) {
    const acc_t* __restrict__ z = dots + row * patches;
    const acc_t* __restrict__ keys = k_scale + (row / patches) * patches;
    const acc_t row_scale = q_scale[row] * inverse_temperature;
    const acc_t positive = z[row % patches] * row_scale * keys[row % patches];
    const acc_t sum = shifted_sum(z, keys, patches, row_scale, positive);
    if (sum > acc_t(kLargestSafeSum)) {
      lse[row] = log_sum_exp_from_maximum(z, keys, patches, row_scale, positive);
      loss[row] = lse[row] - positive;
    } else {
      loss[row] = std::log(sum);  // NaN inputs give NaN here too
      lse[row] = positive + loss[row];
    }
  }
}

// z := D~'s row: (softmax_j - [j == diagonal]) * weight * keys_j, the softmax exp(z_j - shift).
template <typename acc_t>
inline void softmax_gradient_row(acc_t* __restrict__ z, const acc_t* __restrict__ keys, int64_t patches,
                                 int64_t diagonal, acc_t row_scale, acc_t shift, acc_t weight) {
#pragma omp simd
  for (int64_t j = 0; j < patches; ++j) z[j] = fast_exp(z[j] * row_scale * keys[j] - shift) * weight * keys[j];
  z[diagonal] -= weight * keys[diagonal];
}

template <typename acc_t>
CG_CPU_CLONES void softmax_gradient_rows(acc_t* __restrict__ dots, const acc_t* __restrict__ q_scale,
                                         const acc_t* __restrict__ k_scale, const acc_t* __restrict__ lse,
                                         const acc_t* __restrict__ grad, int64_t first, int64_t last, int64_t patches,
                                         acc_t inverse_temperature) {
  for (int64_t row = first; row < last; ++row) {
    const acc_t row_scale = q_scale[row] * inverse_temperature;
    const acc_t weight = (grad == nullptr ? acc_t(1) : grad[row]) * row_scale;
    softmax_gradient_row(dots + row * patches, k_scale + (row / patches) * patches, patches, row % patches, row_scale,
                         lse[row], weight);
  }
}

// log_sum_exp_rows and then softmax_gradient_rows with a unit upstream gradient, from one
// exponential per logit: the terms e_j of the shifted sum, kept in `terms` (one row), give the
// softmax as e_j / sum, and the row is read from memory once.
template <typename acc_t>
CG_CPU_CLONES void loss_and_unit_gradient_rows(acc_t* __restrict__ dots, const acc_t* __restrict__ q_scale,
                                               const acc_t* __restrict__ k_scale, acc_t* __restrict__ loss,
                                               acc_t* __restrict__ lse, acc_t* __restrict__ terms, int64_t first,
                                               int64_t last, int64_t patches, acc_t inverse_temperature) {
  for (int64_t row = first; row < last; ++row) {
    acc_t* __restrict__ z = dots + row * patches;
    const acc_t* __restrict__ keys = k_scale + (row / patches) * patches;
    const int64_t diagonal = row % patches;
    const acc_t row_scale = q_scale[row] * inverse_temperature;
    const acc_t positive = z[diagonal] * row_scale * keys[diagonal];
    acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < patches; ++j) {
      terms[j] = fast_exp(z[j] * row_scale * keys[j] - positive);
      sum += terms[j];
    }
    if (sum > acc_t(kLargestSafeSum)) {
      lse[row] = log_sum_exp_from_maximum(z, keys, patches, row_scale, positive);
      loss[row] = lse[row] - positive;
      softmax_gradient_row(z, keys, patches, diagonal, row_scale, lse[row], row_scale);
      continue;
    }
    loss[row] = std::log(sum);  // NaN inputs give NaN here too
    lse[row] = positive + loss[row];
    const acc_t softmax_weight = row_scale / sum;
#pragma omp simd
    for (int64_t j = 0; j < patches; ++j) z[j] = terms[j] * softmax_weight * keys[j];
    z[diagonal] -= row_scale * keys[diagonal];
  }
}

template <typename acc_t>
CG_CPU_CLONES void normalize_backward_rows(acc_t* __restrict__ w, const acc_t* __restrict__ x,
                                           const acc_t* __restrict__ scale, int64_t first, int64_t last,
                                           int64_t channels) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t begin = row * channels;
    acc_t along = 0;
#pragma omp simd reduction(+ : along)
    for (int64_t c = begin; c < begin + channels; ++c) along += x[c] * w[c];
    // below F.normalize's floor x / eps has no projection
    const acc_t factor = scale[row] >= acc_t(1 / kNormEps) ? acc_t(0) : along * scale[row] * scale[row];
#pragma omp simd
    for (int64_t c = begin; c < begin + channels; ++c) w[c] -= x[c] * factor;
  }
}

// loss and lse := those of every row of dots; with unit_gradient, dots := D~ for a unit upstream
// gradient in the same pass.
void row_losses(const at::Tensor& dots, const at::Tensor& q_scale, const at::Tensor& k_scale, double temperature,
                bool unit_gradient, const at::Tensor& loss, const at::Tensor& lse) {
  const int64_t patches = dots.size(2), rows = dots.size(0) * patches;
  AT_DISPATCH_FLOATING_TYPES(dots.scalar_type(), "patch_nce_row_losses_cpu", [&] {
    scalar_t* z = dots.mutable_data_ptr<scalar_t>();
    const scalar_t* rq = q_scale.const_data_ptr<scalar_t>();
    const scalar_t* rk = k_scale.const_data_ptr<scalar_t>();
    scalar_t* out_loss = loss.mutable_data_ptr<scalar_t>();
    scalar_t* out_lse = lse.mutable_data_ptr<scalar_t>();
    const scalar_t inverse = scalar_t(1.0 / temperature);
    at::parallel_for(0, rows, spans_per_task(patches), [=](int64_t first, int64_t last) {
      if (!unit_gradient) return log_sum_exp_rows(z, rq, rk, out_loss, out_lse, first, last, patches, inverse);
      std::vector<scalar_t> terms(patches);
      loss_and_unit_gradient_rows(z, rq, rk, out_loss, out_lse, terms.data(), first, last, patches, inverse);
    });
  });
}

// The logits and query gradients of the images the forward takes at a time: they stay in the
// last-level cache between its passes. Batch 8 of CUT's 256 x 256 features (40 images, 8 a
// chunk) on a 2-core VM with 32 MiB of L3: the forward's work beyond its GEMMs took 1.4-1.7 ms,
// against 1.9-2.4 ms in one chunk (three alternating runs each).
constexpr int64_t kChunkBytes = 4 << 20;

struct CpuRows {
  // ATen's CPU bmm gives each thread whole matrices, so a batch the threads do not divide leaves
  // threads idle (5 matrices on 2 threads take as long as 6: CUT's 5 layers at batch 1). The
  // matrices left over are multiplied one at a time, each over all the threads.
  static void product_(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
    const int64_t batch = a.size(0), divided = batch - batch % at::get_num_threads();
    if (divided > 0) {
      at::Tensor first = out.narrow(0, 0, divided);
      at::bmm_out(first, a.narrow(0, 0, divided), b.narrow(0, 0, divided));
    }
    for (int64_t n = divided; n < batch; ++n) {
      at::Tensor matrix = out.select(0, n);
      at::mm_out(matrix, a.select(0, n), b.select(0, n));
    }
  }

  // A multiple of the thread count, so that product_ runs each chunk as one batched GEMM.
  static int64_t images_per_chunk(const at::Tensor& q) {
    const int64_t threads = at::get_num_threads(), patches = q.size(1), channels = q.size(2);
    const int64_t image_bytes = patches * (patches + channels) * int64_t(q.element_size());
    return std::max(threads, kChunkBytes / image_bytes / threads * threads);
  }

  static at::Tensor inverse_norms(const at::Tensor& x) {
    const int64_t rows = x.size(0) * x.size(1), channels = x.size(2);
    at::Tensor scale = at::empty({x.size(0), x.size(1)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_nce_inverse_norms_cpu", [&] {
      const scalar_t* values = x.const_data_ptr<scalar_t>();
      scalar_t* out = scale.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, rows, spans_per_task(channels), [=](int64_t first, int64_t last) {
        inverse_norm_rows(values, out, first, last, channels);
      });
    });
    return scale;
  }

  static std::tuple<at::Tensor, at::Tensor> log_sum_exp(const at::Tensor& dots, const at::Tensor& q_scale,
                                                        const at::Tensor& k_scale, double temperature) {
    at::Tensor loss = at::empty({dots.size(0), dots.size(2)}, dots.options()), lse = at::empty_like(loss);
    row_losses(dots, q_scale, k_scale, temperature, false, loss, lse);
    return {loss, lse};
  }

  static void loss_and_unit_gradient_(at::Tensor& dots, const at::Tensor& q_scale, const at::Tensor& k_scale,
                                      double temperature, const at::Tensor& loss, const at::Tensor& lse) {
    row_losses(dots, q_scale, k_scale, temperature, true, loss, lse);
  }

  static void softmax_gradient_(at::Tensor& dots, const at::Tensor& q_scale, const at::Tensor& k_scale,
                                const at::Tensor& lse, const at::Tensor& grad, double temperature) {
    const int64_t patches = dots.size(2), rows = dots.size(0) * patches;
    AT_DISPATCH_FLOATING_TYPES(dots.scalar_type(), "patch_nce_softmax_gradient_cpu", [&] {
      scalar_t* z = dots.mutable_data_ptr<scalar_t>();
      const scalar_t* rq = q_scale.const_data_ptr<scalar_t>();
      const scalar_t* rk = k_scale.const_data_ptr<scalar_t>();
      const scalar_t* l = lse.const_data_ptr<scalar_t>();
      const scalar_t* g = grad.defined() ? grad.const_data_ptr<scalar_t>() : nullptr;
      const scalar_t inverse = scalar_t(1.0 / temperature);
      at::parallel_for(0, rows, spans_per_task(patches), [=](int64_t first, int64_t last) {
        softmax_gradient_rows(z, rq, rk, l, g, first, last, patches, inverse);
      });
    });
  }

  static void normalize_backward_(at::Tensor& w, const at::Tensor& x, const at::Tensor& scale) {
    const int64_t rows = w.size(0) * w.size(1), channels = w.size(2);
    AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "patch_nce_normalize_backward_cpu", [&] {
      scalar_t* gradient = w.mutable_data_ptr<scalar_t>();
      const scalar_t* values = x.const_data_ptr<scalar_t>();
      const scalar_t* inverse = scale.const_data_ptr<scalar_t>();
      at::parallel_for(0, rows, spans_per_task(channels), [=](int64_t first, int64_t last) {
        normalize_backward_rows(gradient, values, inverse, first, last, channels);
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) {
  m.impl("patch_nce_loss", &forward<CpuRows>);
  m.impl("patch_nce_loss_backward", &backward<CpuRows>);
}

}  // namespace culturegan::patch_nce_loss
