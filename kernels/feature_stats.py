"""Triton kernel of feature_stats (installed as culturegan.kernels.feature_stats).

Program (n, channel block) walks the sample's spatial positions in tiles; each tile's mean and
squared deviations from it come from the tile itself, and tiles merge (Chan et al.) into
running moments: one read of x, never E[x^2] - E[x]^2. Values are shifted by each channel's
first element first, so a large common offset (features of mean 1000) does not cost the tile
sums their precision. Mirrors csrc/ops/feature_stats.h.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import PlaneTiling, compute_dtype, join, split


@triton.jit
def _stats_kernel(X, MEAN, STD, spatial, channels, stride_n, stride_c, stride_s, eps_hi, eps_lo,
                  correction, COMPUTE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < channels
    shift = tl.load(X + n * stride_n + c.to(tl.int64) * stride_c, mask=c_mask, other=0.0).to(COMPUTE)
    count = tl.zeros([BLOCK_C], dtype=COMPUTE)
    mean = tl.zeros([BLOCK_C], dtype=COMPUTE)
    m2 = tl.zeros([BLOCK_C], dtype=COMPUTE)
    for start in range(0, spatial, BLOCK_S):
        s = start + tl.arange(0, BLOCK_S)
        mask = (s < spatial)[:, None] & c_mask[None, :]
        offsets = n * stride_n + s.to(tl.int64)[:, None] * stride_s + c.to(tl.int64)[None, :] * stride_c
        x = tl.where(mask, tl.load(X + offsets, mask=mask, other=0.0).to(COMPUTE) - shift[None, :], 0.0)
        tile_count = tl.minimum(spatial - start, BLOCK_S).to(COMPUTE)
        tile_mean = tl.sum(x, axis=0) / tile_count
        deviation = tl.where(mask, x - tile_mean[None, :], 0.0)
        tile_m2 = tl.sum(deviation * deviation, axis=0)
        total = count + tile_count
        delta = tile_mean - mean
        weight = tile_count / total
        mean += delta * weight
        m2 += tile_m2 + delta * delta * count * weight
        count = total
    std = tl.sqrt(m2 / (count - correction) + join(eps_hi, eps_lo, COMPUTE))
    out = n * channels + c
    tl.store(MEAN + out, (shift + mean).to(MEAN.dtype.element_ty), mask=c_mask)
    tl.store(STD + out, std.to(STD.dtype.element_ty), mask=c_mask)


def forward(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channels_innermost: bool, unbiased: bool,
            eps: float) -> None:
    """Writes mean and std, (N, C), of x (N, C, ...): contiguous, or channels innermost when
    channels_innermost."""
    tiling = PlaneTiling(x, channels_innermost)
    _stats_kernel[tiling.grid](x, mean, std, tiling.spatial, tiling.channels, tiling.channels * tiling.spatial,
                               tiling.stride_c, tiling.stride_s, *split(eps), 1.0 if unbiased else 0.0,
                               COMPUTE=compute_dtype(x), BLOCK_S=tiling.block_s, BLOCK_C=tiling.block_c)
