// CPU kernel of upfirdn2d in the polyphase form (ops/upfirdn2d.h): each output reads only the
// taps that meet input samples, straight from x (contiguous or channels_last, in place); no
// zero-inserted or padded copy is made. Math in float32 (float64 for float64), one rounding per
// output. Parallel over output rows with at::parallel_for; every output is written by one task in
// a fixed order, so results do not depend on the number of threads.
//
// Contiguous (NCHW): vectorised along a row. Along x the outputs fall into P = up / gcd(up, down)
// phases; the outputs of one phase use the same taps, on inputs S = down / gcd(up, down) apart,
// so each (row tap, column tap) pair is one axpy over a run of a phase's outputs, its run clipped
// once to the inputs in range (no per-element bounds test). The phases' sums are kept apart in a
// row of accumulators and interleaved into the output row at the end.
// Channels_last (NHWC): vectorised along the channels, which are contiguous at every pixel; an
// output pixel's channels are summed over its taps in one pixel of sums, then stored.
// A separable (rank-1) filter takes two passes per output row in both layouts: its input rows
// are combined with the filter's column into one row (in the math type, not rounded to x's
// dtype), which is then filtered along x with the filter's row (factor_rank_one); an output row
// that reads one input row takes one pass, which then does the same multiply-adds. In
// channels_last the combined row is C times longer than NCHW's; it still pays (filter2d of
// 4x64x128x128 float32 on a 2-core VM, five runs: 1.57-1.87x eager forward, 1.59-1.82x with the
// backward, against 1.27-1.61x and 1.21-1.35x in four runs of one pass).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common/layout.h"
#include "cpu/memory.h"
#include "cpu/parallel.h"
#include "cpu/vectorizable.h"
#include "ops/upfirdn2d.h"

namespace culturegan::upfirdn2d {
namespace {

using cpu::load;
using cpu::spans_per_task;
using cpu::store;

// The filter's correlation taps (gain included) in the math type: all of them, w[ky * fw + kx],
// and, when the filter is separable, a column and a row with w[ky][kx] = column[ky] * row[kx].
template <typename acc_t>
struct FilterTaps {
  std::vector<acc_t> full, column, row;  // column and row empty: not separable
  bool separable() const { return !column.empty(); }
  // whether an output row reading these input rows takes two passes (the file's header says when)
  bool two_passes(const TapRun& rows) const { return separable() && rows.count > 1; }
};

// A filter of rank 1 (1-D filters, and setup_filter's outer products such as the 4x4 binomial)
// runs as two passes per output row: the input rows it reads are combined with the
// column's taps, then that one row is filtered with the row's taps: fh + fw multiply-adds per
// output instead of fh * fw. Rank 1 is tested on the taps as given, each product within a few
// roundings of its own tap (a tap far below the largest must not be replaced by a product, which
// an output reading only that tap would show), and never with a non-finite tap.
template <typename acc_t>
void factor_rank_one(FilterTaps<acc_t>& taps, int64_t fh, int64_t fw) {
  if (fh == 1 || fw == 1) return;  // one pass is already fh + fw - 1 multiply-adds
  const auto& w = taps.full;
  if (std::any_of(w.begin(), w.end(), [](acc_t v) { return !std::isfinite(double(v)); })) return;
  const int64_t pivot = std::max_element(w.begin(), w.end(), [](acc_t a, acc_t b) {
                          return std::abs(a) < std::abs(b);
                        }) - w.begin();
  if (w[pivot] == acc_t(0)) return;  // the zero filter
  const int64_t py = pivot / fw, px = pivot % fw;
  std::vector<acc_t> column(fh), row(fw);
  for (int64_t ky = 0; ky < fh; ++ky) column[ky] = w[ky * fw + px];
  for (int64_t kx = 0; kx < fw; ++kx) row[kx] = acc_t(double(w[py * fw + kx]) / double(w[pivot]));
  constexpr double kRoundings = 8 * std::numeric_limits<acc_t>::epsilon();
  for (int64_t ky = 0; ky < fh; ++ky)
    for (int64_t kx = 0; kx < fw; ++kx) {
      const double tap = double(w[ky * fw + kx]);
      if (!(std::abs(double(column[ky]) * double(row[kx]) - tap) <= kRoundings * std::abs(tap))) return;
    }
  taps.column = std::move(column);
  taps.row = std::move(row);
}

template <typename acc_t>
FilterTaps<acc_t> filter_taps(const at::Tensor& f, bool flip, double gain, const Geometry& g) {
  const at::Tensor filter = f.contiguous();
  const acc_t* data = filter.const_data_ptr<acc_t>();
  const int64_t fh = g.y.taps, fw = g.x.taps;
  FilterTaps<acc_t> taps{std::vector<acc_t>(fh * fw), {}, {}};
  for (int64_t ky = 0; ky < fh; ++ky)
    for (int64_t kx = 0; kx < fw; ++kx)
      taps.full[ky * fw + kx] = acc_t(gain) * tap(data, f.dim() == 1, flip, fh, fw, ky, kx);
  factor_rank_one(taps, fh, fw);
  return taps;
}

// combined[i] = sum over t of column[rows.first_tap + t * up] * (input row t)[i], i in [0, length):
// the input rows of one output row weighted by the filter's column (two rows a pass).
template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void combine_rows(acc_t* __restrict__ combined, const scalar_t* __restrict__ first_row,
                                int64_t row_stride, const acc_t* column, TapRun rows, int64_t up, int64_t length) {
  std::fill(combined, combined + length, acc_t(0));
  int64_t t = 0;
  for (; t + 1 < rows.count; t += 2) {
    const acc_t w0 = column[rows.first_tap + t * up], w1 = column[rows.first_tap + (t + 1) * up];
    const scalar_t* __restrict__ r0 = first_row + t * row_stride;
    const scalar_t* __restrict__ r1 = r0 + row_stride;
#pragma omp simd
    for (int64_t i = 0; i < length; ++i) combined[i] += w0 * load(r0, i) + w1 * load(r1, i);
  }
  if (t < rows.count) {
    const acc_t w = column[rows.first_tap + t * up];
    const scalar_t* __restrict__ r = first_row + t * row_stride;
#pragma omp simd
    for (int64_t i = 0; i < length; ++i) combined[i] += w * load(r, i);
  }
}

// ------------------------------------------------------------------------ contiguous (NCHW)

// One column tap of one phase: the phase's outputs j in [begin, end) (its j-th output is column
// first_output + P * j) add w[ky][kx] * x[first_input + S * j].
struct ColumnTap {
  int64_t kx, first_input, begin, end;
};

struct Phase {
  int64_t first_output, outputs, accumulator;  // accumulator: where its sums start in the row of sums
  std::vector<ColumnTap> taps;
};

struct ColumnPlan {
  int64_t period, stride;  // P and S
  std::vector<Phase> phases;
};

ColumnPlan plan_columns(const Axis& a) {
  const int64_t common = std::gcd(a.up, a.down);
  ColumnPlan plan{a.up / common, a.down / common, {}};
  int64_t accumulator = 0;
  for (int64_t r = 0; r < std::min(plan.period, a.out); ++r) {
    Phase phase{r, (a.out - r + plan.period - 1) / plan.period, accumulator, {}};
    const TapRun run = taps_of(a, r);
    for (int64_t t = 0; t < run.count; ++t) {
      const int64_t first = run.first_input + t;  // the input of output j: first + S * j, kept in [0, in)
      const int64_t begin = std::max<int64_t>(0, ceil_div(-first, plan.stride));
      const int64_t end = std::min(phase.outputs, floor_div(a.in - 1 - first, plan.stride) + 1);
      if (begin < end) phase.taps.push_back({run.first_tap + t * a.up, first, begin, end});
    }
    accumulator += phase.outputs;
    plan.phases.push_back(std::move(phase));
  }
  return plan;
}

// sums[j] += w * x[stride * j] for j in [begin, end); kStride 0: the stride is a run-time value.
template <int64_t kStride, typename source_t, typename acc_t>
inline void axpy(acc_t* __restrict__ sums, const source_t* __restrict__ x, acc_t w, int64_t begin, int64_t end,
                 int64_t stride) {
  const int64_t step = kStride != 0 ? kStride : stride;
#pragma omp simd
  for (int64_t j = begin; j < end; ++j) sums[j] += w * load(x, step * j);
}

// The row of phase sums += one source row (an input row, or combined rows) filtered along x
// with the taps tap_row[kx].
template <int64_t kStride, typename source_t, typename acc_t>
inline void add_filtered_row(acc_t* sums, const source_t* source_row, const acc_t* tap_row, const ColumnPlan& plan) {
  for (const Phase& phase : plan.phases)
    for (const ColumnTap& c : phase.taps)
      axpy<kStride>(sums + phase.accumulator, source_row + c.first_input, tap_row[c.kx], c.begin, c.end,
                    plan.stride);
}

// Output rows [first, last) of the (N * C) planes, row index = plane * out_h + oy. `combined`
// holds one input row of a separable filter's combined rows.
template <int64_t kStride, typename scalar_t, typename acc_t>
CG_CPU_CLONES void contiguous_rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                   const FilterTaps<acc_t>& taps, acc_t* __restrict__ sums,
                                   acc_t* __restrict__ combined, const ColumnPlan& plan, Geometry g, int64_t first,
                                   int64_t last) {
  for (int64_t row = first; row < last; ++row) {
    const int64_t plane = row / g.y.out, oy = row % g.y.out;
    const TapRun rows = clip(taps_of(g.y, oy), g.y);
    const scalar_t* first_row = x + (plane * g.y.in + std::min(rows.first_input, g.y.in - 1)) * g.x.in;
    std::fill(sums, sums + g.x.out, acc_t(0));
    if (taps.two_passes(rows)) {
      combine_rows(combined, first_row, g.x.in, taps.column.data(), rows, g.y.up, g.x.in);
      add_filtered_row<kStride>(sums, combined, taps.row.data(), plan);
    } else {
      for (int64_t t = 0; t < rows.count; ++t)
        add_filtered_row<kStride>(sums, first_row + t * g.x.in,
                                  taps.full.data() + (rows.first_tap + t * g.y.up) * g.x.taps, plan);
    }
    scalar_t* output_row = out + row * g.x.out;
    for (const Phase& phase : plan.phases) {
      const acc_t* phase_sums = sums + phase.accumulator;
      if (plan.period == 1) {
#pragma omp simd
        for (int64_t j = 0; j < phase.outputs; ++j) store(output_row, j, phase_sums[j]);
      } else {
        for (int64_t j = 0; j < phase.outputs; ++j)
          store(output_row, phase.first_output + plan.period * j, phase_sums[j]);
      }
    }
  }
}

template <int64_t kStride, typename scalar_t, typename acc_t>
void contiguous_planes(const scalar_t* x, scalar_t* out, const FilterTaps<acc_t>& taps, const Geometry& g,
                       int64_t planes) {
  const ColumnPlan plan = plan_columns(g.x);
  at::parallel_for(0, planes * g.y.out, spans_per_task(g.x.out), [&](int64_t first, int64_t last) {
    std::vector<acc_t> sums(g.x.out), combined(taps.separable() ? g.x.in : 0);
    contiguous_rows<kStride>(x, out, taps, sums.data(), combined.data(), plan, g, first, last);
  });
}

// ---------------------------------------------------------------- channels_last (NHWC)

// sums[c] += sum over t < taps.count of tap_row[taps.first_tap + t * up] * pixels[(taps.first_input + t) *
// channels + c]: one output pixel's taps along x in a row of pixels (an input row, or a
// separable filter's combined rows).
template <typename source_t, typename acc_t>
inline void add_filtered_pixels(acc_t* __restrict__ sums, const source_t* __restrict__ pixels, const acc_t* tap_row,
                                TapRun taps, int64_t up, int64_t channels) {
  for (int64_t t = 0; t < taps.count; ++t) {
    const source_t* __restrict__ pixel = pixels + (taps.first_input + t) * channels;
    const acc_t w = tap_row[taps.first_tap + t * up];
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) sums[c] += w * load(pixel, c);
  }
}

// Output rows [first, last) of the N images, row index = n * out_h + oy, all channels of a pixel
// at once. `columns[ox]` is output column ox's run of taps (clipped); `combined` holds one input
// row (all its pixels' channels) of a separable filter's combined rows; `sums` one pixel's
// channels.
template <typename scalar_t, typename acc_t>
CG_CPU_CLONES void channels_last_rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                      const FilterTaps<acc_t>& taps, const TapRun* __restrict__ columns,
                                      acc_t* __restrict__ sums, acc_t* __restrict__ combined, Geometry g,
                                      int64_t channels, int64_t first, int64_t last) {
  const int64_t row_length = g.x.in * channels;
  for (int64_t row = first; row < last; ++row) {
    const int64_t n = row / g.y.out, oy = row % g.y.out;
    const TapRun rows = clip(taps_of(g.y, oy), g.y);
    const scalar_t* first_row = x + (n * g.y.in + std::min(rows.first_input, g.y.in - 1)) * row_length;
    const bool two_passes = taps.two_passes(rows);
    if (two_passes) combine_rows(combined, first_row, row_length, taps.column.data(), rows, g.y.up, row_length);
    for (int64_t ox = 0; ox < g.x.out; ++ox) {
      std::fill(sums, sums + channels, acc_t(0));
      if (two_passes) {
        add_filtered_pixels(sums, combined, taps.row.data(), columns[ox], g.x.up, channels);
      } else {
        for (int64_t t = 0; t < rows.count; ++t)
          add_filtered_pixels(sums, first_row + t * row_length,
                              taps.full.data() + (rows.first_tap + t * g.y.up) * g.x.taps, columns[ox], g.x.up,
                              channels);
      }
      scalar_t* output_pixel = out + (row * g.x.out + ox) * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) store(output_pixel, c, sums[c]);
    }
  }
}

template <typename scalar_t, typename acc_t>
void channels_last_images(const scalar_t* x, scalar_t* out, const FilterTaps<acc_t>& taps, const Geometry& g,
                          int64_t images, int64_t channels) {
  // each output column's taps, found once for all rows (three integer divisions a pixel otherwise)
  std::vector<TapRun> columns(g.x.out);
  for (int64_t ox = 0; ox < g.x.out; ++ox) columns[ox] = clip(taps_of(g.x, ox), g.x);
  at::parallel_for(0, images * g.y.out, spans_per_task(g.x.out * channels), [&](int64_t first, int64_t last) {
    std::vector<acc_t> sums(channels), combined(taps.separable() ? g.x.in * channels : 0);
    channels_last_rows(x, out, taps, columns.data(), sums.data(), combined.data(), g, channels, first, last);
  });
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& f, c10::IntArrayRef up, c10::IntArrayRef down,
                   c10::IntArrayRef padding, bool flip_filter, double gain) {
  const Geometry g = check_args(x, f, up, down, padding, gain);
  const ChannelLayout L = channel_layout(x);
  const bool channels_last = !L.tensor.is_contiguous();
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({x.size(0), x.size(1), g.y.out, g.x.out}, x.options(), format);
  cpu::advise_huge_pages(out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const FilterTaps<acc_t> taps = filter_taps<acc_t>(f, flip_filter, gain, g);
    const scalar_t* input = L.tensor.const_data_ptr<scalar_t>();
    scalar_t* output = out.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      channels_last_images(input, output, taps, g, x.size(0), x.size(1));
      return;
    }
    const int64_t planes = x.size(0) * x.size(1), stride = g.x.down / std::gcd(g.x.up, g.x.down);
    if (stride == 1) contiguous_planes<1>(input, output, taps, g, planes);  // filtering, upsampling
    else if (stride == 2) contiguous_planes<2>(input, output, taps, g, planes);  // downsampling by 2
    else contiguous_planes<0>(input, output, taps, g, planes);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CPU, m) { m.impl("upfirdn2d", &forward); }

}  // namespace culturegan::upfirdn2d
