// CPU kernel of channel_affine: one pass, parallel over planes (NCHW) or rows of channels
// (channels_last), plain loops the compiler vectorises (see cpu/vectorizable.h).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/layout.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/vectorizable.h"
#include "ops/channel_affine.h"

namespace culturegan::channel_affine {
namespace {

using cpu::load;
using cpu::spans_per_task;
using cpu::store;

// The (center, scale, shift) of every (n, c), as one pointer per parameter.
template <typename acc_t>
struct Parameters {
  const acc_t* center;
  const acc_t* scale;
  const acc_t* shift;
  acc_t negative_slope;
};

// Planes [first, last) of `inner` contiguous elements; plane p belongs to (n, c) = p.
template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void planes(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t first, int64_t last,
                          int64_t inner, Parameters<acc_t> p) {
  for (int64_t plane = first; plane < last; ++plane) {
    const acc_t center = p.center[plane], scale = p.scale[plane], shift = p.shift[plane], slope = p.negative_slope;
#pragma omp simd
    for (int64_t i = plane * inner; i < (plane + 1) * inner; ++i)
      store(y, i, apply(load(x, i), center, scale, shift, slope));
  }
}

// Rows [first, last) of `channels` contiguous elements; `rows_per_sample` rows per sample.
template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t first, int64_t last,
                        int64_t channels, int64_t rows_per_sample, Parameters<acc_t> p) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t params = (row / rows_per_sample) * channels;
    const acc_t* __restrict__ center = p.center + params;
    const acc_t* __restrict__ scale = p.scale + params;
    const acc_t* __restrict__ shift = p.shift + params;
    const acc_t slope = p.negative_slope;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c)
      store(y, row * channels + c, apply(load(x, row * channels + c), center[c], scale[c], shift[c], slope));
  }
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& center, const at::Tensor& scale, const at::Tensor& shift,
                   std::optional<double> negative_slope) {
  check_args(x, center, scale, shift, negative_slope);
  const ChannelLayout L = channel_layout(x);
  at::Tensor y = empty_in_layout(L.tensor);
  cpu::advise_huge_pages(y);
  const at::Tensor c = center.contiguous(), s = scale.contiguous(), b = shift.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "channel_affine_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Parameters<acc_t> p{c.const_data_ptr<acc_t>(), s.const_data_ptr<acc_t>(), b.const_data_ptr<acc_t>(),
                              acc_t(negative_slope.value_or(-1.0))};
    const scalar_t* in = L.tensor.const_data_ptr<scalar_t>();
    scalar_t* out = y.mutable_data_ptr<scalar_t>();
    if (L.inner == 1) {
      const int64_t rows_per_sample = L.outer / x.size(0);
      at::parallel_for(0, L.outer, spans_per_task(L.channels), [=](int64_t first, int64_t last) {
        rows(in, out, first, last, L.channels, rows_per_sample, p);
      });
    } else {
      at::parallel_for(0, L.outer * L.channels, spans_per_task(L.inner), [=](int64_t first, int64_t last) {
        planes(in, out, first, last, L.inner, p);
      });
    }
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) { m.impl("channel_affine", &forward); }

}  // namespace culturegan::channel_affine
