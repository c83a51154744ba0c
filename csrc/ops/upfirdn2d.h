// upfirdn2d: upsample (zero insertion), pad, FIR-filter and downsample each channel of x (N, C, H, W),
// as NVlabs' upfirdn2d. The index math and argument checks shared by the CPU and CUDA kernels
// (and mirrored by the Triton kernel).
//
// Polyphase form: along one axis, output o sees the filter's correlation taps k = 0 .. taps-1 at
// position o * down - pad0 + k of the upsampled grid, and only positions divisible by `up` hold
// an input sample. So output o needs just the taps first_tap, first_tap + up, ... which meet the
// consecutive inputs first_input, first_input + 1, ...: no zero is ever inserted, padded or
// multiplied.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "common/checks.h"
#include "common/inline.h"

namespace culturegan::upfirdn2d {

// One axis of the resampling. `taps` is the filter's extent along it.
struct Axis {
  int64_t up, down, pad0, pad1, taps, in, out;
};

struct Geometry {
  Axis x, y;
};

// The taps of one output along one axis that land on input samples: input first_input + t meets
// correlation tap first_tap + t * up, for t in [0, count).
struct TapRun {
  int64_t first_input;
  int64_t first_tap;
  int64_t count;
};

CG_INLINE int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

CG_INLINE int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }  // b > 0

// Every tap of output o that meets an input index, in range or not (out-of-range inputs are the
// padding's zeros: the CUDA kernel reads them from a zero-filled tile, the CPU kernel clips).
CG_INLINE TapRun taps_of(const Axis& a, int64_t o) {
  const int64_t base = o * a.down - a.pad0;  // tap 0's position on the upsampled grid
  const int64_t phase = (base % a.up + a.up) % a.up;
  const int64_t first_tap = phase == 0 ? 0 : a.up - phase;
  const int64_t count = first_tap < a.taps ? (a.taps - first_tap + a.up - 1) / a.up : 0;
  return {(base + first_tap) / a.up, first_tap, count};  // base + first_tap is a multiple of up
}

// The run restricted to inputs in [0, a.in).
CG_INLINE TapRun clip(TapRun run, const Axis& a) {
  const int64_t skip = run.first_input < 0 ? -run.first_input : 0;
  run.first_input += skip;
  run.first_tap += skip * a.up;
  const int64_t count = run.count - skip, room = a.in - run.first_input;
  run.count = count < room ? count : room;
  if (run.count < 0) run.count = 0;
  return run;
}

// Correlation tap (ky, kx) of filter f (fh x fw; a separable 1-D f of fh == fw taps is its outer
// product): a true convolution (flip false) reads f backwards, flip_filter correlates with f.
template <typename acc_t>
CG_INLINE acc_t tap(const acc_t* f, bool separable, bool flip, int64_t fh, int64_t fw, int64_t ky, int64_t kx) {
  const int64_t y = flip ? ky : fh - 1 - ky, x = flip ? kx : fw - 1 - kx;
  return separable ? f[y] * f[x] : f[y * fw + x];
}

inline int64_t output_length(int64_t in, int64_t up, int64_t down, int64_t pad0, int64_t pad1, int64_t taps) {
  return floor_div(in * up + pad0 + pad1 - taps, down) + 1;
}

// Checks the op's arguments (messages as culturegan.ops.upfirdn2d's) and returns its geometry.
// f must already be in x's math type: the Python wrapper casts it (float32, float64 for float64 x).
inline Geometry check_args(const at::Tensor& x, const at::Tensor& f, c10::IntArrayRef up, c10::IntArrayRef down,
                           c10::IntArrayRef padding, double gain) {
  TORCH_CHECK_VALUE(x.dim() == 4, "x must have 4 dimensions (N, C, H, W), got shape ", x.sizes());
  check_channel_tensor(x, "x", 4, 4);
  check_same_device(f, "f", x, "x");
  const at::ScalarType math = at::toOpMathType(x.scalar_type());
  TORCH_CHECK_TYPE(f.scalar_type() == math, "f must have dtype ", dtype_name(math), " (x's math type), got ",
                   dtype_name(f.scalar_type()));
  TORCH_CHECK_VALUE((f.dim() == 1 || f.dim() == 2) && f.numel() > 0,
                    "f must be a non-empty 1-D (separable) or 2-D filter, got shape ", f.sizes());
  TORCH_CHECK_TYPE(up.size() == 2, "up must be an (x, y) pair of ints, got ", up);
  TORCH_CHECK_TYPE(down.size() == 2, "down must be an (x, y) pair of ints, got ", down);
  TORCH_CHECK_TYPE(padding.size() == 4, "padding must be (x0, x1, y0, y1), got ", padding);
  TORCH_CHECK_VALUE(up[0] >= 1 && up[1] >= 1, "up must be >= 1, got ", up);
  TORCH_CHECK_VALUE(down[0] >= 1 && down[1] >= 1, "down must be >= 1, got ", down);
  TORCH_CHECK_VALUE(gain > 0.0, "gain must be > 0, got ", gain);
  const int64_t fh = f.size(0), fw = f.dim() == 2 ? f.size(1) : f.size(0);
  const int64_t out_h = output_length(x.size(2), up[1], down[1], padding[2], padding[3], fh);
  const int64_t out_w = output_length(x.size(3), up[0], down[0], padding[0], padding[1], fw);
  TORCH_CHECK_VALUE(out_h >= 1 && out_w >= 1, "upfirdn2d's output would be empty: x ", x.sizes(), ", filter (",
                    fw, ", ", fh, ") (w, h), up ", up, ", down ", down, ", padding ", padding);
  return {{up[0], down[0], padding[0], padding[1], fw, x.size(3), out_w},
          {up[1], down[1], padding[2], padding[3], fh, x.size(2), out_h}};
}

}  // namespace culturegan::upfirdn2d
