// CUDA kernel of upfirdn2d in the polyphase form (ops/upfirdn2d.h).
//
// One block computes a tile of tile_h x tile_w outputs for `channel_block` channels of one image.
// It first stages in shared memory the filter's correlation taps (gain included, in the math
// type) and the input tile those outputs read, with zeros where the tile leaves x (that is the
// padding: no bounds test in the inner loop); each thread then sums, for its outputs, only the
// taps that meet input samples. x is read in place, contiguous (NCHW: one channel per block,
// threads along a row) or channels_last (NHWC: up to 32 channels per block, threads along the
// channels); consecutive threads touch consecutive addresses in both, and the output keeps x's
// layout. Math in float32 (float64 for float64), one rounding per output.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "common/layout.h"
#include "ops/upfirdn2d.h"

namespace culturegan::upfirdn2d {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSharedBytes = 48 * 1024;  // the static limit, on every architecture
constexpr int64_t kMaxGridYZ = 65535;

// Element strides of a 4-D tensor (N, C, H, W).
struct Strides {
  int64_t n, c, h, w;
};

Strides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

struct Tiling {
  int64_t tile_h, tile_w, channel_block;
  int64_t rows, columns;  // of the input tile (the most any tile reads)
  int64_t tiles_x, tiles;

  int64_t shared_elements(const Geometry& g) const { return g.y.taps * g.x.taps + channel_block * rows * columns; }
};

// The most inputs that `outputs` consecutive outputs along an axis can read.
int64_t input_span(const Axis& a, int64_t outputs) { return ((outputs - 1) * a.down + a.taps - 1) / a.up + 1; }

Tiling make_tiling(const Geometry& g, int64_t channels, bool channels_last, int64_t element_bytes) {
  Tiling t{channels_last ? 8 : 16, channels_last ? 8 : 64, channels_last ? std::min<int64_t>(channels, 32) : 1};
  const auto fits = [&] {
    t.rows = input_span(g.y, t.tile_h);
    t.columns = input_span(g.x, t.tile_w);
    return t.shared_elements(g) * element_bytes <= kSharedBytes;
  };
  while (!fits() && (t.tile_h > 1 || t.tile_w > 1 || t.channel_block > 1)) {
    if (t.tile_h > 1 && t.tile_h >= t.tile_w) t.tile_h /= 2;
    else if (t.tile_w > 1) t.tile_w /= 2;
    else t.channel_block /= 2;
  }
  TORCH_CHECK_VALUE(fits(), "f (", g.x.taps, " x ", g.y.taps, " taps) is too large for the CUDA kernel of "
                    "upfirdn2d, whose taps and input tile share ", kSharedBytes, " bytes of shared memory");
  t.tiles_x = (g.x.out + t.tile_w - 1) / t.tile_w;
  t.tiles = t.tiles_x * ((g.y.out + t.tile_h - 1) / t.tile_h);
  return t;
}

template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ f,
                                 scalar_t* __restrict__ out, Strides xs, Strides os, Geometry g, Tiling t,
                                 int64_t channels, bool separable, bool flip, acc_t gain) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* taps = reinterpret_cast<acc_t*>(shared_bytes);
  acc_t* tile = taps + g.y.taps * g.x.taps;  // [rows][columns][channel_block]

  const int64_t oy0 = (int64_t(blockIdx.x) / t.tiles_x) * t.tile_h, ox0 = (int64_t(blockIdx.x) % t.tiles_x) * t.tile_w;
  const int64_t c0 = int64_t(blockIdx.y) * t.channel_block, n = blockIdx.z;
  // The tile's first input row and column: those of its first output's first tap.
  const int64_t iy0 = taps_of(g.y, oy0).first_input, ix0 = taps_of(g.x, ox0).first_input;

  for (int64_t i = threadIdx.x; i < g.y.taps * g.x.taps; i += blockDim.x)
    taps[i] = gain * tap(f, separable, flip, g.y.taps, g.x.taps, i / g.x.taps, i % g.x.taps);
  const int64_t tile_elements = t.rows * t.columns * t.channel_block;
  for (int64_t i = threadIdx.x; i < tile_elements; i += blockDim.x) {
    const int64_t c = i % t.channel_block, column = (i / t.channel_block) % t.columns;
    const int64_t row = i / (t.channel_block * t.columns);
    const int64_t iy = iy0 + row, ix = ix0 + column;
    const bool inside = iy >= 0 && iy < g.y.in && ix >= 0 && ix < g.x.in && c0 + c < channels;
    tile[i] = inside ? acc_t(x[n * xs.n + (c0 + c) * xs.c + iy * xs.h + ix * xs.w]) : acc_t(0);
  }
  __syncthreads();

  for (int64_t i = threadIdx.x; i < t.tile_h * t.tile_w * t.channel_block; i += blockDim.x) {
    const int64_t c = i % t.channel_block, ox = ox0 + (i / t.channel_block) % t.tile_w;
    const int64_t oy = oy0 + i / (t.channel_block * t.tile_w);
    if (oy >= g.y.out || ox >= g.x.out || c0 + c >= channels) continue;
    const TapRun rows = taps_of(g.y, oy), columns = taps_of(g.x, ox);
    acc_t sum = 0;
    for (int64_t ty = 0; ty < rows.count; ++ty) {
      const acc_t* tap_row = taps + (rows.first_tap + ty * g.y.up) * g.x.taps;
      const acc_t* tile_row = tile + (rows.first_input + ty - iy0) * t.columns * t.channel_block;
      for (int64_t tx = 0; tx < columns.count; ++tx) {
        const int64_t column = columns.first_input + tx - ix0;
        sum += tap_row[columns.first_tap + tx * g.x.up] * tile_row[column * t.channel_block + c];
      }
    }
    out[n * os.n + (c0 + c) * os.c + oy * os.h + ox * os.w] = scalar_t(sum);
  }
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& f, c10::IntArrayRef up, c10::IntArrayRef down,
                   c10::IntArrayRef padding, bool flip_filter, double gain) {
  const Geometry g = check_args(x, f, up, down, padding, gain);
  const c10::cuda::CUDAGuard guard(x.device());
  const ChannelLayout L = channel_layout(x);
  const bool channels_last = !L.tensor.is_contiguous();
  const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor out = at::empty({x.size(0), x.size(1), g.y.out, g.x.out}, x.options(), format);
  const at::Tensor filter = f.contiguous();
  const int64_t channels = x.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Tiling t = make_tiling(g, channels, channels_last, sizeof(acc_t));
    const int64_t channel_blocks = (channels + t.channel_block - 1) / t.channel_block;
    TORCH_CHECK_VALUE(channel_blocks <= kMaxGridYZ && x.size(0) <= kMaxGridYZ && t.tiles <= INT32_MAX,
                      "x of shape ", x.sizes(), " needs more CUDA blocks than a grid holds; split the batch");
    const dim3 grid(unsigned(t.tiles), unsigned(channel_blocks), unsigned(x.size(0)));
    const size_t shared = size_t(t.shared_elements(g)) * sizeof(acc_t);
    upfirdn2d_kernel<scalar_t><<<grid, kThreads, shared, c10::cuda::getCurrentCUDAStream(x.get_device())>>>(
        L.tensor.const_data_ptr<scalar_t>(), filter.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(),
        strides_of(L.tensor), strides_of(out), g, t, channels, f.dim() == 1, flip_filter, acc_t(gain));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(culturegan, CUDA, m) { m.impl("upfirdn2d", &forward); }

}  // namespace culturegan::upfirdn2d
