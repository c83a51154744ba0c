"""Triton implicit-GEMM convolution with a fused bias + LeakyReLU + gain + clamp epilogue
(installed as culturegan.kernels.conv2d).

The convolution is a GEMM over output pixels (M = N * OH * OW) and output channels
(C_out), reducing over K = KH * KW * C_in, with x read in place (NHWC, channels_last): for each
kernel tap (kh, kw) the program loads a [BLOCK_M, BLOCK_K] tile of input channels at the input
pixels that tap reads. Zero padding masks the loads; reflection padding reflects the indices,
so no padded copy of x exists. The epilogue adds the bias, applies the activation, gain and
clamp to the float32 accumulator and writes y once (NHWC). Mirrors the math of
kernels/bias_leaky_relu.py.

Tiles never straddle two samples (program (tile, channel block, n)), so with STATS the
epilogue also writes each tile's per-channel mean and squared deviations from it, from the
float32 accumulator: instance normalisation's statistics without another read of y. The
caller merges the tiles' moments (Chan et al.).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.bias_leaky_relu import activate, activation_scalars, gradient, params
from culturegan.kernels.common import compute_dtype, math_dtype

# Tiles for the interpreter (CPU tensors): small, one config. GPUs autotune over GPU_CONFIGS,
# keyed on the GEMM's shape; the choice is cached per shape.
BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 16
GPU_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for m, n, k, w, s in ((128, 128, 32, 8, 3), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 64, 4, 3),
                          (128, 256, 32, 8, 3), (64, 32, 32, 2, 4))
]


@triton.jit
def _reflect(index, size):
    index = tl.where(index < 0, -index, index)
    return tl.where(index >= size, 2 * size - 2 - index, index)


@triton.jit
def _input_pixel(n, ih, iw, height, width, row_mask, REFLECT: tl.constexpr):
    """(flat NHW index, validity) of the input pixel (ih, iw) that a tap reads: reflected into
    the image, or masked out (zero padding)."""
    if REFLECT:
        return (n * height + _reflect(ih, height)) * width + _reflect(iw, width), row_mask
    valid = row_mask & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
    return (n * height + ih) * width + iw, valid


@triton.jit
def _conv_kernel(X, W, B, Y, TILE_MEAN, TILE_M2, height, width, in_channels, out_height, out_width, out_channels,
                 stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                 gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                 KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, REFLECT: tl.constexpr, HAS_BIAS: tl.constexpr,
                 HAS_CLAMP: tl.constexpr, STATS: tl.constexpr, COMPUTE: tl.constexpr, UPCAST: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    pixels = out_height * out_width
    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels (oh, ow) of sample n
    co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channels
    m_mask = p < pixels
    co_mask = co < out_channels
    ow = p % out_width
    oh = p // out_width
    m = n * pixels + p
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=COMPUTE)
    for kh in range(KERNEL_H):
        ih = oh * stride_h - pad_h + kh * dilation_h
        for kw in range(KERNEL_W):
            iw = ow * stride_w - pad_w + kw * dilation_w
            pixel, row_ok = _input_pixel(n, ih, iw, height, width, m_mask, REFLECT)
            for c0 in range(0, in_channels, BLOCK_K):
                c = c0 + tl.arange(0, BLOCK_K)
                c_mask = c < in_channels
                a = tl.load(X + pixel[:, None] * in_channels + c[None, :], mask=row_ok[:, None] & c_mask[None, :],
                            other=0.0)
                tap = (kh * KERNEL_W + kw) * in_channels + c  # weight laid out [KH, KW, C_in, C_out]
                b = tl.load(W + tap.to(tl.int64)[:, None] * out_channels + co[None, :],
                            mask=c_mask[:, None] & co_mask[None, :], other=0.0)
                if UPCAST:
                    a, b = a.to(COMPUTE), b.to(COMPUTE)
                acc += tl.dot(a, b, input_precision=DOT_PRECISION, out_dtype=COMPUTE)
    if HAS_BIAS:
        acc += tl.load(B + co, mask=co_mask, other=0.0).to(COMPUTE)[None, :]
    gain, negative_gain, clamp = params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                                         COMPUTE)
    y = activate(acc, gain, negative_gain, clamp, HAS_CLAMP)
    mask = m_mask[:, None] & co_mask[None, :]
    out = m[:, None] * out_channels + co[None, :]
    tl.store(Y + out, y.to(Y.dtype.element_ty), mask=mask)
    if STATS:
        count = tl.sum(m_mask.to(COMPUTE), axis=0)
        tile_mean = tl.sum(tl.where(mask, y, 0.0), axis=0) / count
        deviation = tl.where(mask, y - tile_mean[None, :], 0.0)
        stats = (n * tl.num_programs(0) + pid_m) * out_channels + co
        tl.store(TILE_MEAN + stats, tile_mean, mask=co_mask)
        tl.store(TILE_M2 + stats, tl.sum(deviation * deviation, axis=0), mask=co_mask)


_autotuned_conv_kernel = triton.autotune(
    GPU_CONFIGS, key=["in_channels", "out_channels", "out_height", "out_width", "stride_h", "KERNEL_H", "KERNEL_W"])(_conv_kernel)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, stride, padding,
            dilation, reflect: bool, negative_slope: float, gain: float, clamp: float | None,
            tile_pixels: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Writes y (N, C_out, OH, OW), channels_last, from x (N, C_in, H, W) channels_last and
    weight (C_out, C_in, KH, KW) of any layout. With tile_pixels (STATS mode, which the GPU
    path runs with a fixed tile), returns the tiles' per-channel (mean, m2), each
    [N, tiles, C_out] in the math type, tiles of tile_pixels output pixels."""
    batch, in_channels, height, width = x.shape
    out_channels, _, kernel_h, kernel_w = weight.shape
    out_height, out_width = y.shape[2:]
    taps = weight.permute(2, 3, 1, 0).contiguous()  # [KH, KW, C_in, C_out]: B tiles are rows
    compute, upcast, precision = _operands(x)
    pixels = out_height * out_width
    stats = tile_pixels is not None
    if x.device.type == "cpu" or stats:
        block_m = tile_pixels or BLOCK_M
        kernel, tiles = _conv_kernel, dict(BLOCK_M=block_m, BLOCK_N=BLOCK_N if upcast else 64,
                                           BLOCK_K=BLOCK_K if upcast else 32)
        grid = (triton.cdiv(pixels, block_m), triton.cdiv(out_channels, tiles["BLOCK_N"]), batch)
    else:
        kernel, tiles = _autotuned_conv_kernel, {}

        def grid(meta):
            return triton.cdiv(pixels, meta["BLOCK_M"]), triton.cdiv(out_channels, meta["BLOCK_N"]), batch
    moments = None
    if stats:
        shape = (batch, triton.cdiv(pixels, tile_pixels), out_channels)
        moments = torch.empty(shape, dtype=math_dtype(x), device=x.device), torch.empty(shape, dtype=math_dtype(x),
                                                                                    device=x.device)
    tile_mean, tile_m2 = moments if stats else (y, y)
    kernel[grid](x, taps, bias if bias is not None else taps, y, tile_mean, tile_m2, height, width, in_channels,
                 out_height, out_width, out_channels, *stride, *padding, *dilation,
                 KERNEL_H=kernel_h, KERNEL_W=kernel_w, REFLECT=reflect, HAS_BIAS=bias is not None, STATS=stats,
                 COMPUTE=compute, UPCAST=upcast, DOT_PRECISION=precision, **tiles,
                 **activation_scalars(negative_slope, gain, clamp))
    return moments


# ------------------------------------------------------------------------------- backward
#
# Both backward kernels take the forward's output y and dL/dy, and apply the activation's
# derivative (kernels/bias_leaky_relu.py's gradient) as they load them: the gradient of the
# pre-activation is never written to memory.

@triton.jit
def _input_grad_kernel(G, Y, W, DX, height, width, in_channels, out_height, out_width, out_channels,
                       stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                       gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                       KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, HAS_CLAMP: tl.constexpr,
                       COMPUTE: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """dx[n, ih, iw, ci] = sum over taps and C_out of g'[n, oh, ow, co] w[co, ci, kh, kw], where
    oh * stride = ih + pad - kh * dilation (zero padding; the caller pads for reflection)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels (ih, iw) of sample n
    ci = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    p_mask = p < height * width
    ci_mask = ci < in_channels
    ih = p // width
    iw = p % width
    gain, negative_gain, clamp = params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                                        COMPUTE)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=COMPUTE)
    for kh in range(KERNEL_H):
        th = ih + pad_h - kh * dilation_h
        oh = th // stride_h
        ok_h = (th >= 0) & (th % stride_h == 0) & (oh < out_height)
        for kw in range(KERNEL_W):
            tw = iw + pad_w - kw * dilation_w
            ow = tw // stride_w
            valid = p_mask & ok_h & (tw >= 0) & (tw % stride_w == 0) & (ow < out_width)
            pixel = (n * out_height + oh) * out_width + ow
            for co0 in range(0, out_channels, BLOCK_K):
                co = co0 + tl.arange(0, BLOCK_K)
                mask = valid[:, None] & (co < out_channels)[None, :]
                offsets = pixel[:, None] * out_channels + co[None, :]
                dy = tl.load(G + offsets, mask=mask, other=0.0).to(COMPUTE)
                y = tl.load(Y + offsets, mask=mask, other=0.0).to(COMPUTE)
                g = gradient(dy, y, gain, negative_gain, clamp, HAS_CLAMP)
                tap = (kh * KERNEL_W + kw) * out_channels + co  # weight laid out [KH, KW, C_out, C_in]
                w = tl.load(W + tap.to(tl.int64)[:, None] * in_channels + ci[None, :],
                            mask=(co < out_channels)[:, None] & ci_mask[None, :], other=0.0)
                if UPCAST:
                    w = w.to(COMPUTE)
                else:
                    g = g.to(W.dtype.element_ty)
                acc += tl.dot(g, w, input_precision=DOT_PRECISION, out_dtype=COMPUTE)
    out = (n * height * width + p)[:, None] * in_channels + ci[None, :]
    tl.store(DX + out, acc.to(DX.dtype.element_ty), mask=p_mask[:, None] & ci_mask[None, :])


@triton.jit
def _weight_grad_kernel(G, Y, X, DW, DB, batch, height, width, in_channels, out_height, out_width, out_channels,
                        stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                        gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                        KERNEL_H: tl.constexpr, KERNEL_W: tl.constexpr, REFLECT: tl.constexpr,
                        HAS_CLAMP: tl.constexpr, BIAS_GRAD: tl.constexpr, SPLIT: tl.constexpr,
                        COMPUTE: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
                        BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_P: tl.constexpr):
    """Partial dw[split, tap, co, ci] = sum over a 1/SPLIT share of the output pixels of
    g'[p, co] x[p at tap, ci] (and, on tap 0's first channel block, the bias gradient's share)."""
    pid_co = tl.program_id(0)
    pid_ci = tl.program_id(1)
    tap = tl.program_id(2) // SPLIT
    split = tl.program_id(2) % SPLIT
    kh = tap // KERNEL_W
    kw = tap % KERNEL_W
    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    co_mask = co < out_channels
    ci_mask = ci < in_channels
    gain, negative_gain, clamp = params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                                        COMPUTE)
    pixels = out_height * out_width
    total = batch * pixels
    chunk = tl.cdiv(tl.cdiv(total, SPLIT), BLOCK_P) * BLOCK_P
    start = split * chunk
    end = tl.minimum(start + chunk, total)
    acc = tl.zeros([BLOCK_CO, BLOCK_CI], dtype=COMPUTE)
    bias_sum = tl.zeros([BLOCK_CO], dtype=COMPUTE)
    for p0 in range(start, end, BLOCK_P):
        pp = p0 + tl.arange(0, BLOCK_P)
        p_mask = pp < end
        n = (pp // pixels).to(tl.int64)
        oh = (pp % pixels) // out_width
        ow = pp % out_width
        g_offsets = pp.to(tl.int64)[:, None] * out_channels + co[None, :]
        g_mask = p_mask[:, None] & co_mask[None, :]
        dy = tl.load(G + g_offsets, mask=g_mask, other=0.0).to(COMPUTE)
        y = tl.load(Y + g_offsets, mask=g_mask, other=0.0).to(COMPUTE)
        g = gradient(dy, y, gain, negative_gain, clamp, HAS_CLAMP)  # [BLOCK_P, BLOCK_CO], 0 where masked
        ih = oh * stride_h - pad_h + kh * dilation_h
        iw = ow * stride_w - pad_w + kw * dilation_w
        pixel, row_ok = _input_pixel(n, ih, iw, height, width, p_mask, REFLECT)
        x = tl.load(X + pixel[:, None] * in_channels + ci[None, :], mask=row_ok[:, None] & ci_mask[None, :],
                    other=0.0)
        if UPCAST:
            x = x.to(COMPUTE)
        else:
            g = g.to(X.dtype.element_ty)
        acc += tl.dot(tl.trans(g), x, input_precision=DOT_PRECISION, out_dtype=COMPUTE)
        if BIAS_GRAD:
            bias_sum += tl.sum(g.to(COMPUTE), axis=0)
    out = ((split * KERNEL_H * KERNEL_W + tap) * out_channels + co).to(tl.int64)[:, None] * in_channels + ci[None, :]
    tl.store(DW + out, acc, mask=co_mask[:, None] & ci_mask[None, :])
    if BIAS_GRAD:
        if (tap == 0) & (pid_ci == 0):
            tl.store(DB + split * out_channels + co, bias_sum, mask=co_mask)


def _operands(x: torch.Tensor) -> tuple:
    """(COMPUTE, UPCAST, DOT_PRECISION) for tensors like x. Under the interpreter (CPU tensors)
    numpy has no bfloat16 dot: the tiles go up to float32. On GPUs half tiles feed the tensor
    cores; float32 ones use TF32 where torch lets cuDNN do so."""
    compute = compute_dtype(x)
    upcast = x.device.type == "cpu"
    if x.dtype == torch.float64 or upcast:
        return compute, upcast, "ieee"
    if x.dtype == torch.float32:
        return compute, upcast, "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    return compute, upcast, None


def input_grad(grad: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, input_size: tuple[int, int], stride,
               padding, dilation, negative_slope: float, gain: float, clamp: float | None) -> torch.Tensor:
    """dL/dx (N, C_in, *input_size), channels_last, for zero padding (the caller reflects), from
    grad and y (N, C_out, OH, OW) channels_last."""
    batch, out_channels, out_height, out_width = y.shape
    in_channels = weight.shape[1]
    height, width = input_size
    taps = weight.permute(2, 3, 0, 1).contiguous()  # [KH, KW, C_out, C_in]
    dx = torch.empty((batch, in_channels, height, width), dtype=y.dtype, device=y.device,
                     memory_format=torch.channels_last)
    compute, upcast, precision = _operands(y)
    block_m, block_n, block_k = (BLOCK_M, BLOCK_N, BLOCK_K) if upcast else (64, 64, 32)
    grid = (triton.cdiv(height * width, block_m), triton.cdiv(in_channels, block_n), batch)
    _input_grad_kernel[grid](grad, y, taps, dx, height, width, in_channels, out_height, out_width, out_channels,
                             *stride, *padding, *dilation, KERNEL_H=weight.shape[2], KERNEL_W=weight.shape[3],
                             COMPUTE=compute, UPCAST=upcast, DOT_PRECISION=precision, BLOCK_M=block_m,
                             BLOCK_N=block_n, BLOCK_K=block_k, **activation_scalars(negative_slope, gain, clamp))
    return dx


def weight_grad(grad: torch.Tensor, y: torch.Tensor, x: torch.Tensor, kernel_size: tuple[int, int], stride, padding,
                dilation, reflect: bool, negative_slope: float, gain: float, clamp: float | None,
                bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dweight (C_out, C_in, KH, KW), dL/dbias (C_out,) or None) in the math type, from grad
    and y channels_last and x channels_last. Split-K partials are summed in a fixed order."""
    batch, in_channels, height, width = x.shape
    out_channels, out_height, out_width = y.shape[1:]
    kernel_h, kernel_w = kernel_size
    compute, upcast, precision = _operands(x)
    block_co, block_ci, block_p = (32, 32, 32) if upcast else (64, 64, 64)
    tiles = triton.cdiv(out_channels, block_co) * triton.cdiv(in_channels, block_ci) * kernel_h * kernel_w
    total = batch * out_height * out_width
    # Enough programs to fill a GPU (about 4 per SM on 132 SMs), each with >= 4 pixel blocks.
    split = 1 if upcast else max(1, min(triton.cdiv(528, tiles), triton.cdiv(total, 4 * block_p)))
    dw = torch.empty((split, kernel_h, kernel_w, out_channels, in_channels), dtype=math_dtype(x), device=x.device)
    db = torch.empty((split, out_channels), dtype=math_dtype(x), device=x.device) if bias_grad else dw
    grid = (triton.cdiv(out_channels, block_co), triton.cdiv(in_channels, block_ci), kernel_h * kernel_w * split)
    _weight_grad_kernel[grid](grad, y, x, dw, db, batch, height, width, in_channels, out_height, out_width,
                              out_channels, *stride, *padding, *dilation, KERNEL_H=kernel_h, KERNEL_W=kernel_w,
                              REFLECT=reflect, BIAS_GRAD=bias_grad, SPLIT=split, COMPUTE=compute, UPCAST=upcast,
                              DOT_PRECISION=precision, BLOCK_CO=block_co, BLOCK_CI=block_ci, BLOCK_P=block_p,
                              **activation_scalars(negative_slope, gain, clamp))
    return dw.sum(0).permute(2, 3, 0, 1).contiguous(), db.sum(0) if bias_grad else None
