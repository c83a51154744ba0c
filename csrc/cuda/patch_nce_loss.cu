// patch_nce_loss on CUDA tensors: csrc/ops/patch_nce_loss.h with cuBLAS GEMMs (at::bmm) and
// these row passes, the CUDA twin of csrc/cpu/patch_nce_loss.cpp's CpuRows.
//
// Every pass works on rows of P (logits) or C (features) elements, typically 256 and at most a
// few thousand, and each needs at most one reduction over its row. So one warp owns a row: its
// lanes stride over the row (coalesced), reduce with a butterfly of shuffles that leaves the
// result in every lane (no shared memory, no __syncthreads), then stride again to write; the
// second read mostly hits L1. A block is 8 warps and the grid strides over the rows, so any
// number of rows fits the grid. Row offsets are 64-bit: N * P * C may pass 2^31.
//
// The formulas are the CPU's (the header's z, D~ and w); the log-sum-exp subtracts the row's
// maximum (a cheap warp reduction here) where the CPU shifts by the positive logit. The
// reductions run in a fixed order, so they are deterministic. Exponentials are expf / exp
// (about 2 ulp, no fast-math intrinsics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

#include "ops/patch_nce_loss.h"

namespace culturegan::patch_nce_loss {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / kWarp;  // one row per warp at a time
constexpr unsigned kFullMask = 0xffffffffu;

// Butterfly reductions: after log2(32) steps every lane holds the whole warp's result, the
// same in all lanes (each step combines a and b in lanes that hold b and a; only the sign of a
// zero maximum may differ), so any lane may use it without a broadcast. All 32 lanes must take
// part: callers keep whole warps in the row loop.
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) v += __shfl_xor_sync(kFullMask, v, mask);
  return v;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t v) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask >>= 1) v = std::max(v, __shfl_xor_sync(kFullMask, v, mask));
  return v;
}

// The rows of this warp: row = first, first + step, ...; the bound is the same for the whole
// warp, so the shuffles inside the loop always see all 32 lanes.
struct WarpRows {
  int64_t first, step;
  int lane;
};

__device__ __forceinline__ WarpRows warp_rows() {
  return {int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp, int64_t(gridDim.x) * kRowsPerBlock,
          int(threadIdx.x % kWarp)};
}

// scale_r = 1 / max(|x_r|, eps) of the math-type rows of x.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    inverse_norms_kernel(const acc_t* __restrict__ x, acc_t* __restrict__ scale, int64_t rows, int64_t channels) {
  const WarpRows w = warp_rows();
  for (int64_t row = w.first; row < rows; row += w.step) {
    const acc_t* in = x + row * channels;
    acc_t squares = 0;
    for (int64_t c = w.lane; c < channels; c += kWarp) squares += in[c] * in[c];
    squares = warp_sum(squares);
    if (w.lane == 0) scale[row] = acc_t(1) / std::max(std::sqrt(squares), acc_t(kNormEps));
  }
}

// The logits of row r of the (N * P, P) dot products (its image's query patch r % P against
// every key patch): z_j = dots_j * row_scale * keys_j, keys = the image's key scales.
struct LogitRow {
  int64_t diagonal;
  int64_t keys;  // offset of the image's first key scale
};

__device__ __forceinline__ LogitRow logit_row(int64_t row, int64_t patches) {
  return {row % patches, (row / patches) * patches};
}

// lse_r = log sum_j exp(z_rj), loss_r = lse_r - z_r(r % P). The row's maximum is subtracted
// before exp.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    log_sum_exp_kernel(const acc_t* __restrict__ dots, const acc_t* __restrict__ q_scale,
                       const acc_t* __restrict__ k_scale, acc_t* __restrict__ loss, acc_t* __restrict__ lse,
                       int64_t rows, int64_t patches, acc_t inverse_temperature) {
  const WarpRows w = warp_rows();
  for (int64_t row = w.first; row < rows; row += w.step) {
    const acc_t* z = dots + row * patches;
    const LogitRow r = logit_row(row, patches);
    const acc_t* keys = k_scale + r.keys;
    const acc_t row_scale = q_scale[row] * inverse_temperature;
    // Lanes past a short row (P < 32) keep -inf and a zero sum: neutral in both reductions.
    acc_t largest = -std::numeric_limits<acc_t>::infinity();
    for (int64_t j = w.lane; j < patches; j += kWarp) largest = std::max(largest, z[j] * row_scale * keys[j]);
    largest = warp_max(largest);
    acc_t sum = 0;
    for (int64_t j = w.lane; j < patches; j += kWarp) sum += std::exp(z[j] * row_scale * keys[j] - largest);
    sum = warp_sum(sum);  // >= 1: the maximum's own term is exp(0)
    if (w.lane == 0) {
      const acc_t row_lse = largest + std::log(sum);
      lse[row] = row_lse;
      loss[row] = row_lse - z[r.diagonal] * row_scale * keys[r.diagonal];
    }
  }
}

// In place: dots_rj := g_r (exp(z_rj - lse_r) - [j == r % P]) q_scale_r k_scale_j / T, g_r =
// grad[r] (1 when grad is null). No reduction: the warp only strides; the lane holding the
// diagonal subtracts.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    softmax_gradient_kernel(acc_t* __restrict__ dots, const acc_t* __restrict__ q_scale,
                            const acc_t* __restrict__ k_scale, const acc_t* __restrict__ lse,
                            const acc_t* __restrict__ grad, int64_t rows, int64_t patches,
                            acc_t inverse_temperature) {
  const WarpRows w = warp_rows();
  for (int64_t row = w.first; row < rows; row += w.step) {
    acc_t* z = dots + row * patches;
    const LogitRow r = logit_row(row, patches);
    const acc_t* keys = k_scale + r.keys;
    const acc_t row_scale = q_scale[row] * inverse_temperature, shift = lse[row];
    const acc_t weight = (grad == nullptr ? acc_t(1) : grad[row]) * row_scale;
    for (int64_t j = w.lane; j < patches; j += kWarp) {
      const acc_t p = std::exp(z[j] * row_scale * keys[j] - shift);
      z[j] = (j == r.diagonal ? p - acc_t(1) : p) * weight * keys[j];
    }
  }
}

// In place: w_r := w_r - x_r scale_r^2 <x_r, w_r>, the gradient through x / |x| (see the
// header); below F.normalize's floor x / eps has no projection.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    normalize_backward_kernel(acc_t* __restrict__ gradient, const acc_t* __restrict__ x,
                              const acc_t* __restrict__ scale, int64_t rows, int64_t channels) {
  const WarpRows w = warp_rows();
  for (int64_t row = w.first; row < rows; row += w.step) {
    acc_t* g = gradient + row * channels;
    const acc_t* values = x + row * channels;
    acc_t along = 0;
    for (int64_t c = w.lane; c < channels; c += kWarp) along += values[c] * g[c];
    along = warp_sum(along);
    const acc_t inverse = scale[row];
    const acc_t factor = inverse >= acc_t(1 / kNormEps) ? acc_t(0) : along * inverse * inverse;
    for (int64_t c = w.lane; c < channels; c += kWarp) g[c] -= values[c] * factor;
  }
}

// Blocks for `rows` rows: one warp per row, capped at 32 blocks per SM (the grid strides over
// the rest), so grid.x stays far below its 2^31 - 1 limit.
int64_t blocks_for(int64_t rows, int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return std::clamp<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1, int64_t(sms) * 32);
}

// The passes take the header's contiguous math-type copies and at::bmm's fresh outputs.
void check_contiguous(const at::Tensor& t, const char* name) {
  TORCH_INTERNAL_ASSERT(t.is_contiguous(), "patch_nce_loss (CUDA): ", name, " must be contiguous");
}

// Where a pass runs: the tensor's device and current stream, and a grid for `rows` rows.
struct Launch {
  c10::cuda::CUDAGuard guard;
  cudaStream_t stream;
  int64_t blocks;

  Launch(const at::Tensor& t, int64_t rows)
      : guard(t.device()), stream(c10::cuda::getCurrentCUDAStream(t.get_device())),
        blocks(blocks_for(rows, t.get_device())) {}
};

// loss and lse := the log-sum-exp pass over the rows of dots.
void log_sum_exp_into(const at::Tensor& dots, const at::Tensor& q_scale, const at::Tensor& k_scale,
                      double temperature, const at::Tensor& loss, const at::Tensor& lse) {
  const int64_t patches = dots.size(2), rows = dots.size(0) * patches;
  const Launch launch(dots, rows);
  check_contiguous(dots, "dots");
  AT_DISPATCH_FLOATING_TYPES(dots.scalar_type(), "patch_nce_log_sum_exp_cuda", [&] {
    log_sum_exp_kernel<scalar_t><<<launch.blocks, kThreads, 0, launch.stream>>>(
        dots.const_data_ptr<scalar_t>(), q_scale.const_data_ptr<scalar_t>(), k_scale.const_data_ptr<scalar_t>(),
        loss.mutable_data_ptr<scalar_t>(), lse.mutable_data_ptr<scalar_t>(), rows, patches,
        scalar_t(1.0 / temperature));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

struct CudaRows {
  static void product_(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) { at::bmm_out(out, a, b); }

  // One chunk: the whole batch, each pass one launch.
  static int64_t images_per_chunk(const at::Tensor& q) { return q.size(0); }

  static at::Tensor inverse_norms(const at::Tensor& x) {
    const int64_t rows = x.size(0) * x.size(1), channels = x.size(2);
    const Launch launch(x, rows);
    check_contiguous(x, "x");
    at::Tensor scale = at::empty({x.size(0), x.size(1)}, x.options());
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "patch_nce_inverse_norms_cuda", [&] {
      inverse_norms_kernel<scalar_t><<<launch.blocks, kThreads, 0, launch.stream>>>(
          x.const_data_ptr<scalar_t>(), scale.mutable_data_ptr<scalar_t>(), rows, channels);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return scale;
  }

  static std::tuple<at::Tensor, at::Tensor> log_sum_exp(const at::Tensor& dots, const at::Tensor& q_scale,
                                                        const at::Tensor& k_scale, double temperature) {
    at::Tensor loss = at::empty({dots.size(0), dots.size(2)}, dots.options()), lse = at::empty_like(loss);
    log_sum_exp_into(dots, q_scale, k_scale, temperature, loss, lse);
    return {loss, lse};
  }

  static void softmax_gradient_(at::Tensor& dots, const at::Tensor& q_scale, const at::Tensor& k_scale,
                                const at::Tensor& lse, const at::Tensor& grad, double temperature) {
    const int64_t patches = dots.size(2), rows = dots.size(0) * patches;
    const Launch launch(dots, rows);
    check_contiguous(dots, "dots");
    AT_DISPATCH_FLOATING_TYPES(dots.scalar_type(), "patch_nce_softmax_gradient_cuda", [&] {
      softmax_gradient_kernel<scalar_t><<<launch.blocks, kThreads, 0, launch.stream>>>(
          dots.mutable_data_ptr<scalar_t>(), q_scale.const_data_ptr<scalar_t>(), k_scale.const_data_ptr<scalar_t>(),
          lse.const_data_ptr<scalar_t>(), grad.defined() ? grad.const_data_ptr<scalar_t>() : nullptr, rows, patches,
          scalar_t(1.0 / temperature));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }

  // The two passes one after the other. Fusing them as the CPU does would save one read of the
  // logits, but no GPU was at hand to measure that it pays here.
  static void loss_and_unit_gradient_(at::Tensor& dots, const at::Tensor& q_scale, const at::Tensor& k_scale,
                                      double temperature, const at::Tensor& loss, const at::Tensor& lse) {
    log_sum_exp_into(dots, q_scale, k_scale, temperature, loss, lse);
    softmax_gradient_(dots, q_scale, k_scale, lse, at::Tensor(), temperature);
  }

  static void normalize_backward_(at::Tensor& w, const at::Tensor& x, const at::Tensor& scale) {
    const int64_t rows = w.size(0) * w.size(1), channels = w.size(2);
    const Launch launch(w, rows);
    check_contiguous(w, "w");
    AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "patch_nce_normalize_backward_cuda", [&] {
      normalize_backward_kernel<scalar_t><<<launch.blocks, kThreads, 0, launch.stream>>>(
          w.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), scale.const_data_ptr<scalar_t>(), rows,
          channels);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) {
  m.impl("patch_nce_loss", &forward<CudaRows>);
  m.impl("patch_nce_loss_backward", &backward<CudaRows>);
}

}  // namespace culturegan::patch_nce_loss
