"""Triton kernel of gram, which culture_stats runs with STATS (installed as culturegan.kernels.gram).

Program (n, i, j) computes tile (i, j) of sample n's Gram matrix F F^T over the H*W
positions with float32 (float64 for float64) accumulation, and writes it and its mirror
(j, i): each off-diagonal tile is computed once, the programs with j < i exit at once.
float32 products are exact IEEE products (no TF32), so results match the reference.

With STATS, the diagonal programs (i == j) also keep the moments of their rows from the tiles
they load anyway (shifted by each row's first element, merged per tile with Chan's formula, as
kernels/feature_stats.py does): mean, std and Gram from one read of x (kernels/culture_stats.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from culturegan.kernels.common import compute_dtype, join, split

BLOCK_C = 32  # tile edge: tl.dot needs >= 16 on GPUs
BLOCK_K = 32


@triton.jit
def _gram_kernel(X, G, MEAN, STD, channels, spatial, stride_n, stride_c, stride_s, eps_hi, eps_lo, correction,
                 COMPUTE: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, STATS: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1)
    j = tl.program_id(2)
    if j >= i:
        rows_i = i * BLOCK_C + tl.arange(0, BLOCK_C)
        rows_j = j * BLOCK_C + tl.arange(0, BLOCK_C)
        row_mask = rows_i < channels
        sample = X + n * stride_n
        acc = tl.zeros([BLOCK_C, BLOCK_C], dtype=COMPUTE)
        if STATS:
            shift = tl.load(sample + rows_i.to(tl.int64) * stride_c, mask=row_mask, other=0.0).to(COMPUTE)
            count = tl.zeros([BLOCK_C], dtype=COMPUTE)
            mean = tl.zeros([BLOCK_C], dtype=COMPUTE)
            m2 = tl.zeros([BLOCK_C], dtype=COMPUTE)
        for start in range(0, spatial, BLOCK_K):
            k = start + tl.arange(0, BLOCK_K)
            k_mask = (k < spatial)[None, :]
            base = sample + k.to(tl.int64)[None, :] * stride_s
            a = tl.load(base + rows_i.to(tl.int64)[:, None] * stride_c, mask=row_mask[:, None] & k_mask, other=0.0)
            b = tl.load(base + rows_j.to(tl.int64)[:, None] * stride_c, mask=(rows_j < channels)[:, None] & k_mask,
                        other=0.0)
            if UPCAST:
                a, b = a.to(COMPUTE), b.to(COMPUTE)
            acc += tl.dot(a, tl.trans(b), input_precision=DOT_PRECISION, out_dtype=COMPUTE)
            if STATS:
                shifted = tl.where(row_mask[:, None] & k_mask, a.to(COMPUTE) - shift[:, None], 0.0)
                tile_count = tl.minimum(spatial - start, BLOCK_K).to(COMPUTE)
                tile_mean = tl.sum(shifted, axis=1) / tile_count
                deviation = tl.where(k_mask, shifted - tile_mean[:, None], 0.0)
                total = count + tile_count
                delta = tile_mean - mean
                weight = tile_count / total
                mean += delta * weight
                m2 += tl.sum(deviation * deviation, axis=1) + delta * delta * count * weight
                count = total
        if j == i:  # entries (r, s) and (s, r) summed in different orders: keep one, exactly
            acc = tl.where(rows_i[:, None] <= rows_j[None, :], acc, tl.trans(acc))
            if STATS:
                out = n * channels + rows_i
                tl.store(MEAN + out, (shift + mean).to(MEAN.dtype.element_ty), mask=row_mask)
                std = tl.sqrt(m2 / (count - correction) + join(eps_hi, eps_lo, COMPUTE))
                tl.store(STD + out, std.to(STD.dtype.element_ty), mask=row_mask)
        out = G + n * channels * channels
        mask = row_mask[:, None] & (rows_j < channels)[None, :]
        tl.store(out + rows_i[:, None] * channels + rows_j[None, :], acc.to(G.dtype.element_ty), mask=mask)
        if j > i:
            tl.store(out + rows_j[None, :] * channels + rows_i[:, None], acc.to(G.dtype.element_ty), mask=mask)


def forward(features: torch.Tensor, gram: torch.Tensor, stats: tuple | None = None) -> None:
    """gram[n] = features[n] @ features[n]^T for features (N, C, S) of any strides; gram (N, C, C)
    contiguous, in the compute dtype (float32, or float64 for float64 features). With
    stats = (mean, std, unbiased, eps) (culture_stats), also writes the rows' mean and std (N, C)."""
    samples, channels, spatial = features.shape
    tiles = triton.cdiv(channels, BLOCK_C)
    # Triton's interpreter (CPU tensors) multiplies bfloat16 tiles wrongly (numpy has no
    # bfloat16): it gets float32 tiles, exact for bfloat16 values. GPUs use bfloat16 tensor cores.
    upcast = features.dtype == torch.bfloat16 and features.device.type == "cpu"
    # float32 operands ask for IEEE products, not TF32; half operands multiply exactly anyway.
    precision = "ieee" if features.dtype in (torch.float32, torch.float64) or upcast else None
    mean, std, unbiased, eps = stats if stats is not None else (gram, gram, False, 0.0)
    _gram_kernel[(samples, tiles, tiles)](features, gram, mean, std, channels, spatial, features.stride(0),
                                          features.stride(1), features.stride(2), *split(eps), 1.0 if unbiased else 0.0,
                                          COMPUTE=compute_dtype(features), DOT_PRECISION=precision, UPCAST=upcast,
                                          STATS=stats is not None, BLOCK_C=BLOCK_C, BLOCK_K=BLOCK_K)
