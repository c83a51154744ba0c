"""Triton kernel of channel_affine (installed as culturegan.kernels.channel_affine).

y = act((x - center[n, c]) * scale[n, c] + shift[n, c]) over a dense [outer, C, inner] array
(see culturegan/ops/_layout.py); mirrors csrc/ops/channel_affine.h.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import INT32_MAX, compute_dtype, join, split

BLOCK = 1024


@triton.jit
def _affine_kernel(X, CENTER, SCALE, SHIFT, Y, numel, inner, channels, sample_size, slope_hi, slope_lo,
                   COMPUTE: tl.constexpr, CHANNELS_INNERMOST: tl.constexpr, ACTIVATE: tl.constexpr, INDEX_64: tl.constexpr,
                   BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offsets = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    if CHANNELS_INNERMOST:
        params = (offsets // sample_size) * channels + offsets % channels
    else:
        params = offsets // inner
    x = tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE)
    center = tl.load(CENTER + params, mask=mask, other=0.0)
    scale = tl.load(SCALE + params, mask=mask, other=0.0)
    shift = tl.load(SHIFT + params, mask=mask, other=0.0)
    y = (x - center) * scale + shift
    if ACTIVATE:
        y = tl.where(y > 0, y, y * join(slope_hi, slope_lo, COMPUTE))
    tl.store(Y + offsets, y.to(Y.dtype.element_ty), mask=mask)


def forward(x: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, y: torch.Tensor,
            inner: int, negative_slope: float | None) -> None:
    """Writes y (x's layout) from x laid out as [outer, C, inner] and contiguous (N, C)
    parameters in x's math type."""
    numel = x.numel()
    slope_hi, slope_lo = split(0.0 if negative_slope is None else negative_slope)
    _affine_kernel[(triton.cdiv(numel, BLOCK),)](
        x, center, scale, shift, y, numel, inner, x.shape[1], numel // x.shape[0], slope_hi,
        slope_lo, COMPUTE=compute_dtype(x), CHANNELS_INNERMOST=inner == 1 and x.dim() > 2,
        ACTIVATE=negative_slope is not None, INDEX_64=numel > INT32_MAX - BLOCK, BLOCK=BLOCK)
