"""Triton kernel of norm_act_backward (installed as culturegan.kernels.norm_act_backward).

Program (n, channel block) sums g' and g' (z - mean) over the sample's positions, then walks
them again to write dz (mirrors csrc/ops/norm_act_backward.h; strides as in feature_stats).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.scalars import join, split


@triton.jit
def _activated_grad(grad, z, mean, scale, beta, slope):
    pre = (z - mean[None, :]) * scale[None, :] + beta[None, :]
    return tl.where(pre > 0, grad, grad * slope)


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
        s = start + tl.arange(0, BLOCK_S)
        mask = (s < spatial)[:, None] & c_mask[None, :]
        offsets = n * stride_n + s.to(tl.int64)[:, None] * stride_s + c.to(tl.int64)[None, :] * stride_c
        z = tl.load(Z + offsets, mask=mask, other=0.0).to(COMPUTE)
        g = _activated_grad(tl.load(G + offsets, mask=mask, other=0.0).to(COMPUTE), z, mean, scale, beta, slope)
        sum_grad += tl.sum(g, axis=0)
        sum_grad_centered += tl.sum(tl.where(mask, g * (z - mean[None, :]), 0.0), axis=0)
    tl.store(GRAD_GAMMA + params, sum_grad_centered / std, mask=c_mask)
    tl.store(GRAD_BETA + params, sum_grad, mask=c_mask)
    k_centered = -scale * sum_grad_centered / (std * std * spatial)
    k_constant = -scale * sum_grad / spatial
    for start in range(0, spatial, BLOCK_S):
        s = start + tl.arange(0, BLOCK_S)
        mask = (s < spatial)[:, None] & c_mask[None, :]
        offsets = n * stride_n + s.to(tl.int64)[:, None] * stride_s + c.to(tl.int64)[None, :] * stride_c
        z = tl.load(Z + offsets, mask=mask, other=0.0).to(COMPUTE)
        g = _activated_grad(tl.load(G + offsets, mask=mask, other=0.0).to(COMPUTE), z, mean, scale, beta, slope)
        dz = scale[None, :] * g + k_centered[None, :] * (z - mean[None, :]) + k_constant[None, :]
        tl.store(OUT + offsets, dz.to(OUT.dtype.element_ty), mask=mask)


def backward(grad: torch.Tensor, z: torch.Tensor, out: torch.Tensor, parameters: tuple, grad_gamma: torch.Tensor,
             grad_beta: torch.Tensor, channels_innermost: bool, negative_slope: float | None) -> None:
    """Writes out (z's layout) and the (N, C) grad_gamma, grad_beta. grad and z share one dense
    layout; parameters = (mean, std, gamma, beta), contiguous (N, C) in the math type."""
    samples, channels = z.shape[:2]
    spatial = z.numel() // (samples * channels)
    if channels_innermost:
        stride_c, stride_s = 1, channels
        block_c = min(triton.next_power_of_2(channels), 64)
    else:
        stride_c, stride_s = spatial, 1
        block_c = min(triton.next_power_of_2(channels), 4)
    block_s = max(16, min(triton.next_power_of_2(spatial), 4096 // block_c))
    slope_hi, slope_lo = split(1.0 if negative_slope is None else negative_slope)
    grid = (samples, triton.cdiv(channels, block_c))
    _backward_kernel[grid](grad, z, out, *parameters, grad_gamma, grad_beta, spatial, channels, channels * spatial,
                           stride_c, stride_s, slope_hi, slope_lo,
                           COMPUTE=tl.float64 if z.dtype == torch.float64 else tl.float32, BLOCK_S=block_s,
                           BLOCK_C=block_c)
