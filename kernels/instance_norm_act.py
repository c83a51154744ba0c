"""Triton kernel of instance_norm_act's backward (installed as culturegan.kernels.instance_norm_act).

Program (n, channel block) sums g' and g' (z - mean) over the sample's positions, then walks
them again to write dz (mirrors csrc/ops/instance_norm_act.h; the plane is tiled as in
feature_stats, kernels/common.py's PlaneTiling).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import PlaneTiling, compute_dtype, join, split


@triton.jit
def _activated_grad_tile(G, Z, n, start, c, c_mask, mean, scale, beta, slope, spatial, stride_n, stride_c, stride_s,
                         COMPUTE: tl.constexpr, BLOCK_S: tl.constexpr):
    """The tile of positions start.. : (offsets, mask, z, g'), g' = dL/dy * act'(pre)."""
    s = start + tl.arange(0, BLOCK_S)
    mask = (s < spatial)[:, None] & c_mask[None, :]
    offsets = n * stride_n + s.to(tl.int64)[:, None] * stride_s + c.to(tl.int64)[None, :] * stride_c
    z = tl.load(Z + offsets, mask=mask, other=0.0).to(COMPUTE)
    grad = tl.load(G + offsets, mask=mask, other=0.0).to(COMPUTE)
    pre = (z - mean[None, :]) * scale[None, :] + beta[None, :]
    return offsets, mask, z, tl.where(pre > 0, grad, grad * slope)


@triton.jit
def _backward_kernel(G, Z, OUT, MEAN, STD, GAMMA, BETA, GRAD_GAMMA, GRAD_BETA, spatial, channels, stride_n, stride_c,
                     stride_s, slope_hi, slope_lo, COMPUTE: tl.constexpr, BLOCK_S: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = c < channels
    params = n * channels + c
    mean = tl.load(MEAN + params, mask=c_mask, other=0.0)
    std = tl.load(STD + params, mask=c_mask, other=1.0)
    scale = tl.load(GAMMA + params, mask=c_mask, other=0.0) / std
    beta = tl.load(BETA + params, mask=c_mask, other=0.0)
    slope = join(slope_hi, slope_lo, COMPUTE)
    sum_grad = tl.zeros([BLOCK_C], dtype=COMPUTE)
    sum_grad_centered = tl.zeros([BLOCK_C], dtype=COMPUTE)
    for start in range(0, spatial, BLOCK_S):
        _, mask, z, g = _activated_grad_tile(G, Z, n, start, c, c_mask, mean, scale, beta, slope, spatial, stride_n,
                                             stride_c, stride_s, COMPUTE, BLOCK_S)
        sum_grad += tl.sum(g, axis=0)
        sum_grad_centered += tl.sum(tl.where(mask, g * (z - mean[None, :]), 0.0), axis=0)
    tl.store(GRAD_GAMMA + params, sum_grad_centered / std, mask=c_mask)
    tl.store(GRAD_BETA + params, sum_grad, mask=c_mask)
    k_centered = -scale * sum_grad_centered / (std * std * spatial)
    k_constant = -scale * sum_grad / spatial
    for start in range(0, spatial, BLOCK_S):
        offsets, mask, z, g = _activated_grad_tile(G, Z, n, start, c, c_mask, mean, scale, beta, slope, spatial,
                                                   stride_n, stride_c, stride_s, COMPUTE, BLOCK_S)
        dz = scale[None, :] * g + k_centered[None, :] * (z - mean[None, :]) + k_constant[None, :]
        tl.store(OUT + offsets, dz.to(OUT.dtype.element_ty), mask=mask)


def backward(grad: torch.Tensor, z: torch.Tensor, out: torch.Tensor, parameters: tuple, grad_gamma: torch.Tensor,
             grad_beta: torch.Tensor, channels_innermost: bool, negative_slope: float | None) -> None:
    """Writes out (z's layout) and the (N, C) grad_gamma, grad_beta. grad and z share one dense
    layout; parameters = (mean, std, gamma, beta), contiguous (N, C) in the math type."""
    tiling = PlaneTiling(z, channels_innermost)
    slope_hi, slope_lo = split(1.0 if negative_slope is None else negative_slope)
    _backward_kernel[tiling.grid](grad, z, out, *parameters, grad_gamma, grad_beta, tiling.spatial, tiling.channels,
                                  tiling.channels * tiling.spatial, tiling.stride_c, tiling.stride_s, slope_hi,
                                  slope_lo, COMPUTE=compute_dtype(z), BLOCK_S=tiling.block_s, BLOCK_C=tiling.block_c)
