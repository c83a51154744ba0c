"""Triton kernels of bias_leaky_relu (installed as culturegan.kernels.bias_leaky_relu).

The launchers take tensors already validated and laid out as a dense [outer, C, inner]
array by culturegan.ops (see culturegan/ops/_layout.py); the math mirrors
csrc/ops/bias_leaky_relu.h. Importing this module imports triton: under TRITON_INTERPRET=1
(set before the import) the kernels run on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import INT32_MAX, compute_dtype, join, math_dtype, split

ELEMENTWISE_BLOCK = 1024
ROWS_PER_PROGRAM = 1024


@triton.jit
def params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo, COMPUTE: tl.constexpr):
    return (join(gain_hi, gain_lo, COMPUTE), join(negative_gain_hi, negative_gain_lo, COMPUTE),
            join(clamp_hi, clamp_lo, COMPUTE))


@triton.jit
def activate(pre, gain, negative_gain, clamp, HAS_CLAMP: tl.constexpr):
    y = pre * tl.where(pre > 0, gain, negative_gain)
    if HAS_CLAMP:
        y = tl.where(y > clamp, clamp, tl.where(y < -clamp, -clamp, y))
    return y


@triton.jit
def gradient(dy, y, gain, negative_gain, clamp, HAS_CLAMP: tl.constexpr):
    d = dy * tl.where(y > 0, gain, negative_gain)
    if HAS_CLAMP:
        d = tl.where((y > -clamp) & (y < clamp), d, 0.0)
    return d


@triton.jit
def _block(numel, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    """This program's element offsets and their bounds mask."""
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < numel


@triton.jit
def _forward_kernel(X, B, Y, numel, inner, channels, gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi,
                    clamp_lo, HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, COMPUTE: tl.constexpr,
                    INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    gain, negative_gain, clamp = params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                                         COMPUTE)
    offsets, mask = _block(numel, INDEX_64, BLOCK)
    pre = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    if HAS_BIAS:
        pre += tl.load(B + (offsets // inner) % channels, mask=mask, other=0.0).to(COMPUTE)
    y = activate(pre, gain, negative_gain, clamp, HAS_CLAMP)
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gradient_kernel(G, Y, GX, numel, gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                     HAS_CLAMP: tl.constexpr, COMPUTE: tl.constexpr, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    gain, negative_gain, clamp = params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                                         COMPUTE)
    offsets, mask = _block(numel, INDEX_64, BLOCK)
    dy = tl.load(G + offsets, mask=mask, other=0.0).to(COMPUTE)
    y = tl.load(Y + offsets, mask=mask, other=0.0).to(COMPUTE)
    d = gradient(dy, y, gain, negative_gain, clamp, HAS_CLAMP)
    tl.store(GX + offsets, d.to(GX.dtype.element_ty), mask=mask)


@triton.jit
def _gradient_bias_kernel(G, Y, GX, PARTIAL, rows, inner, channels, gain_hi, gain_lo, negative_gain_hi,
                          negative_gain_lo, clamp_hi, clamp_lo,
                          HAS_CLAMP: tl.constexpr, COMPUTE: tl.constexpr, INDEX_64: tl.constexpr,
                          BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, ROWS_PER_PROGRAM: tl.constexpr):
    """Program (pid_c, pid_r) covers BLOCK_C channels of ROWS_PER_PROGRAM rows, where a row r is
    one (outer, inner) position, writes grad_x there and PARTIAL[pid_r, c] = the sum over its rows."""
    gain, negative_gain, clamp = params(gain_hi, gain_lo, negative_gain_hi, negative_gain_lo, clamp_hi, clamp_lo,
                                         COMPUTE)
    pid_c = tl.program_id(0)
    pid_r = tl.program_id(1)
    if INDEX_64:
        pid_c = pid_c.to(tl.int64)
        pid_r = pid_r.to(tl.int64)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < channels
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=COMPUTE)
    for start in range(0, ROWS_PER_PROGRAM, BLOCK_R):
        r = pid_r * ROWS_PER_PROGRAM + start + tl.arange(0, BLOCK_R)
        offsets = ((r // inner) * channels * inner + r % inner)[:, None] + (c * inner)[None, :]
        mask = (r < rows)[:, None] & c_mask[None, :]
        dy = tl.load(G + offsets, mask=mask, other=0.0).to(COMPUTE)
        y = tl.load(Y + offsets, mask=mask, other=0.0).to(COMPUTE)
        d = tl.where(mask, gradient(dy, y, gain, negative_gain, clamp, HAS_CLAMP), 0.0)
        tl.store(GX + offsets, d.to(GX.dtype.element_ty), mask=mask)
        acc += d
    tl.store(PARTIAL + pid_r * channels + c, tl.sum(acc, axis=0), mask=c_mask)


def activation_scalars(negative_slope: float, gain: float, clamp: float | None) -> dict:
    """The kernels' scalar arguments: the output's slope on each side, and the clamp."""
    (gain_hi, gain_lo), (negative_gain_hi, negative_gain_lo) = split(gain), split(gain * negative_slope)
    clamp_hi, clamp_lo = split(0.0 if clamp is None else clamp)
    return dict(gain_hi=gain_hi, gain_lo=gain_lo, negative_gain_hi=negative_gain_hi,
                negative_gain_lo=negative_gain_lo, clamp_hi=clamp_hi, clamp_lo=clamp_lo, HAS_CLAMP=clamp is not None)


def forward(x: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor, inner: int, channels: int,
            negative_slope: float, gain: float, clamp: float | None) -> None:
    """y = activation(x + bias[channel]) for x, y dense in the same [outer, channels, inner] order."""
    numel = x.numel()
    grid = (triton.cdiv(numel, ELEMENTWISE_BLOCK),)
    _forward_kernel[grid](x, bias if bias is not None else x, y, numel, inner, channels,
                          HAS_BIAS=bias is not None, COMPUTE=compute_dtype(x), INDEX_64=numel > INT32_MAX,
                          BLOCK=ELEMENTWISE_BLOCK, **activation_scalars(negative_slope, gain, clamp))


def backward(grad: torch.Tensor, y: torch.Tensor, grad_x: torch.Tensor, inner: int, channels: int,
             negative_slope: float, gain: float, clamp: float | None, bias_grad: bool) -> torch.Tensor | None:
    """Writes grad_x; returns the bias gradient's float partial sums [programs, channels] if bias_grad."""
    numel = y.numel()
    index_64 = numel > INT32_MAX
    scalars = activation_scalars(negative_slope, gain, clamp)
    if not bias_grad:
        grid = (triton.cdiv(numel, ELEMENTWISE_BLOCK),)
        _gradient_kernel[grid](grad, y, grad_x, numel, COMPUTE=compute_dtype(y), INDEX_64=index_64,
                               BLOCK=ELEMENTWISE_BLOCK, **scalars)
        return None
    rows = numel // channels
    # Tile along the dimension that is contiguous in memory: channels when inner == 1, else rows.
    block_c = min(triton.next_power_of_2(channels), 64) if inner == 1 else 1
    block_r = max(16, min(ROWS_PER_PROGRAM, 4096 // block_c))
    programs_r = triton.cdiv(rows, ROWS_PER_PROGRAM)
    partial = torch.empty((programs_r, channels), dtype=math_dtype(y), device=y.device)
    grid = (triton.cdiv(channels, block_c), programs_r)
    _gradient_bias_kernel[grid](grad, y, grad_x, partial, rows, inner, channels, COMPUTE=compute_dtype(y),
                                INDEX_64=index_64, BLOCK_R=block_r, BLOCK_C=block_c,
                                ROWS_PER_PROGRAM=ROWS_PER_PROGRAM, **scalars)
    return partial
