"""Triton kernel of upfirdn2d (installed as culturegan.kernels.upfirdn2d).

The polyphase form of csrc/ops/upfirdn2d.h: a program computes a block of output pixels times a
block of channels of one image, and each output adds only the taps that meet input samples (at
most ceil(filter / up) per axis, constexpr loops); taps that would read the padding are masked
off. x and y are read and written through their strides, so any layout works in place. The
launcher takes arguments already validated by culturegan.ops.upfirdn2d. Importing this module
imports triton: under TRITON_INTERPRET=1 (set before the import) the kernel runs on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import INT32_MAX, PlaneTiling, compute_dtype, join, split


@triton.jit
def _taps_of(o, UP: tl.constexpr, DOWN: tl.constexpr, pad0):
    """(first input, first correlation tap) of outputs o along one axis (ops/upfirdn2d.h taps_of)."""
    base = o * DOWN - pad0
    phase = base % UP
    phase = tl.where(phase < 0, phase + UP, phase)  # whether % truncates or floors
    first_tap = tl.where(phase == 0, 0, UP - phase)
    return (base + first_tap) // UP, first_tap  # an exact division


@triton.jit
def _tap(F, ky, kx, mask, FILTER_H: tl.constexpr, FILTER_W: tl.constexpr, SEPARABLE: tl.constexpr,
         FLIP: tl.constexpr):
    """Correlation tap (ky, kx): a true convolution (not FLIP) reads f backwards; a separable f is 1-D."""
    fy = ky if FLIP else FILTER_H - 1 - ky
    fx = kx if FLIP else FILTER_W - 1 - kx
    if SEPARABLE:
        w = tl.load(F + fy, mask=mask, other=0.0) * tl.load(F + fx, mask=mask, other=0.0)
    else:
        w = tl.load(F + fy * FILTER_W + fx, mask=mask, other=0.0)
    return w


@triton.jit
def _upfirdn2d_kernel(X, F, Y, channels, in_h, in_w, out_h, out_w, x_sn, x_sc, x_sh, x_sw, y_sn, y_sc, y_sh, y_sw,
                      pad_x0, pad_y0, gain_hi, gain_lo,
                      UP_X: tl.constexpr, UP_Y: tl.constexpr, DOWN_X: tl.constexpr, DOWN_Y: tl.constexpr,
                      FILTER_W: tl.constexpr, FILTER_H: tl.constexpr, TAPS_X: tl.constexpr, TAPS_Y: tl.constexpr,
                      SEPARABLE: tl.constexpr, FLIP: tl.constexpr, COMPUTE: tl.constexpr, INDEX_64: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Program (pixel block, channel block, image) writes BLOCK_P output pixels x BLOCK_C channels."""
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    n = tl.program_id(2)
    if INDEX_64:
        pid_p = pid_p.to(tl.int64)
        pid_c = pid_c.to(tl.int64)
        n = n.to(tl.int64)
    p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    p_mask = p < out_h * out_w
    c_mask = c < channels
    oy = p // out_w
    ox = p % out_w
    iy0, ky0 = _taps_of(oy, UP_Y, DOWN_Y, pad_y0)
    ix0, kx0 = _taps_of(ox, UP_X, DOWN_X, pad_x0)
    x_channels = X + n * x_sn + c[None, :] * x_sc
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=COMPUTE)
    for ty in range(TAPS_Y):
        ky = ky0 + ty * UP_Y
        iy = iy0 + ty
        row_mask = p_mask & (ky < FILTER_H) & (iy >= 0) & (iy < in_h)
        for tx in range(TAPS_X):
            kx = kx0 + tx * UP_X
            ix = ix0 + tx
            mask = row_mask & (kx < FILTER_W) & (ix >= 0) & (ix < in_w)
            w = _tap(F, ky, kx, mask, FILTER_H, FILTER_W, SEPARABLE, FLIP).to(COMPUTE)
            v = tl.load(x_channels + (iy * x_sh + ix * x_sw)[:, None], mask=mask[:, None] & c_mask[None, :],
                        other=0.0).to(COMPUTE)
            acc += w[:, None] * v
    acc = acc * join(gain_hi, gain_lo, COMPUTE)
    y = Y + n * y_sn + c[None, :] * y_sc + (oy * y_sh + ox * y_sw)[:, None]
    tl.store(y, acc.to(Y.dtype.element_ty), mask=p_mask[:, None] & c_mask[None, :])


def _largest_offset(t: torch.Tensor) -> int:
    return sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, y: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
              padding: tuple[int, int, int, int], flip_filter: bool, gain: float) -> None:
    """Writes upfirdn2d(x) into y (N, C, out_h, out_w), both in any strides; f (a contiguous 2-D or 1-D
    separable filter) in the math dtype."""
    (upx, upy), (downx, downy) = up, down
    filter_h = f.shape[0]
    filter_w = f.shape[-1]
    channels_innermost = y.stride(1) == 1 and y.shape[1] > 1
    tiling = PlaneTiling(y, channels_innermost)
    grid = (triton.cdiv(tiling.spatial, tiling.block_s), triton.cdiv(tiling.channels, tiling.block_c), y.shape[0])
    gain_hi, gain_lo = split(gain)
    _upfirdn2d_kernel[grid](x, f, y, x.shape[1], x.shape[2], x.shape[3], y.shape[2], y.shape[3], *x.stride(),
                            *y.stride(), padding[0], padding[2], gain_hi, gain_lo, UP_X=upx, UP_Y=upy,
                            DOWN_X=downx, DOWN_Y=downy, FILTER_W=filter_w, FILTER_H=filter_h,
                            TAPS_X=triton.cdiv(filter_w, upx), TAPS_Y=triton.cdiv(filter_h, upy),
                            SEPARABLE=f.dim() == 1, FLIP=flip_filter, COMPUTE=compute_dtype(x),
                            INDEX_64=max(_largest_offset(x), _largest_offset(y)) >= INT32_MAX,
                            BLOCK_P=tiling.block_s, BLOCK_C=tiling.block_c)
