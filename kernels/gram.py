"""Triton kernel of gram (installed as culturegan.kernels.gram).

Program (n, i, j) computes tile (i, j) of sample n's Gram matrix F F^T over the H*W
positions with float32 (float64 for float64) accumulation, and writes it and its mirror
(j, i): each off-diagonal tile is computed once, the programs with j < i exit at once.
float32 products are exact IEEE products (no TF32), so results match the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_C = 32  # tile edge: tl.dot needs >= 16 on GPUs
BLOCK_K = 32


@triton.jit
def _gram_kernel(X, G, channels, spatial, stride_n, stride_c, stride_s, COMPUTE: tl.constexpr,
                 DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1)
    j = tl.program_id(2)
    if j >= i:
        rows_i = i * BLOCK_C + tl.arange(0, BLOCK_C)
        rows_j = j * BLOCK_C + tl.arange(0, BLOCK_C)
        acc = tl.zeros([BLOCK_C, BLOCK_C], dtype=COMPUTE)
        for start in range(0, spatial, BLOCK_K):
            k = start + tl.arange(0, BLOCK_K)
            k_mask = (k < spatial)[None, :]
            base = X + n * stride_n + k.to(tl.int64)[None, :] * stride_s
            a = tl.load(base + rows_i.to(tl.int64)[:, None] * stride_c, mask=(rows_i < channels)[:, None] & k_mask,
                        other=0.0)
            b = tl.load(base + rows_j.to(tl.int64)[:, None] * stride_c, mask=(rows_j < channels)[:, None] & k_mask,
                        other=0.0)
            if UPCAST:
                a, b = a.to(COMPUTE), b.to(COMPUTE)
            acc += tl.dot(a, tl.trans(b), input_precision=DOT_PRECISION, out_dtype=COMPUTE)
        if j == i:  # entries (r, s) and (s, r) summed in different orders: keep one, exactly
            acc = tl.where(rows_i[:, None] <= rows_j[None, :], acc, tl.trans(acc))
        out = G + n * channels * channels
        mask = (rows_i < channels)[:, None] & (rows_j < channels)[None, :]
        tl.store(out + rows_i[:, None] * channels + rows_j[None, :], acc.to(G.dtype.element_ty), mask=mask)
        if j > i:
            tl.store(out + rows_j[None, :] * channels + rows_i[:, None], acc.to(G.dtype.element_ty), mask=mask)


def forward(features: torch.Tensor, gram: torch.Tensor) -> None:
    """gram[n] = features[n] @ features[n]^T for features (N, C, S) of any strides; gram (N, C, C)
    contiguous, in the compute dtype (float32, or float64 for float64 features)."""
    samples, channels, spatial = features.shape
    tiles = triton.cdiv(channels, BLOCK_C)
    compute = tl.float64 if features.dtype == torch.float64 else tl.float32
    # Triton's interpreter (CPU tensors) multiplies bfloat16 tiles wrongly (numpy has no
    # bfloat16): it gets float32 tiles, exact for bfloat16 values. GPUs use bfloat16 tensor cores.
    upcast = features.dtype == torch.bfloat16 and features.device.type == "cpu"
    # float32 operands ask for IEEE products, not TF32; half operands multiply exactly anyway.
    precision = "ieee" if features.dtype in (torch.float32, torch.float64) or upcast else None
    _gram_kernel[(samples, tiles, tiles)](features, gram, channels, spatial, features.stride(0), features.stride(1),
                                          features.stride(2), COMPUTE=compute, DOT_PRECISION=precision,
                                          UPCAST=upcast, BLOCK_C=BLOCK_C, BLOCK_K=BLOCK_K)
