"""What the Triton kernels share: the compute dtype, the int32 index limit, full-precision
scalar arguments, and the tiling of a per-(n, c) plane.

Triton passes Python floats as float32, which would round the parameters of float64 math: a
host-side `split` sends a float as two float32 halves, and `join` adds them back in the kernel.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

# Offsets beyond this need int64 indexing (INDEX_64 kernels).
INT32_MAX = 2**31 - 1


def math_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the kernels accumulate in for t: float64 for float64, else float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def compute_dtype(t: torch.Tensor) -> tl.dtype:
    """math_dtype(t) as a Triton dtype (the COMPUTE argument of the kernels)."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


class PlaneTiling:
    """How a program (n, channel block) walks a sample's [C, spatial] plane of a dense tensor.

    Contiguous (memory order [N, C, spatial]): tiles along the spatial positions, few channels
    each. Channels innermost (channels_last, [N, spatial, C]): tiles along the channels.
    """

    def __init__(self, t: torch.Tensor, channels_innermost: bool):
        samples, self.channels = t.shape[:2]
        self.spatial = t.numel() // (samples * self.channels)
        if channels_innermost:
            self.stride_c, self.stride_s = 1, self.channels
            self.block_c = min(triton.next_power_of_2(self.channels), 64)
        else:
            self.stride_c, self.stride_s = self.spatial, 1
            self.block_c = min(triton.next_power_of_2(self.channels), 4)
        self.block_s = max(16, min(triton.next_power_of_2(self.spatial), 4096 // self.block_c))
        self.grid = (samples, triton.cdiv(self.channels, self.block_c))


def split(value: float) -> tuple[float, float]:
    """(hi, lo), two float32 values with hi + lo == value to about 48 bits."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


@triton.jit
def join(hi, lo, COMPUTE: tl.constexpr):
    """The value split into hi + lo, in the COMPUTE dtype. In float32 the sum rounds back to hi
    (|lo| is at most half an ulp of hi). One return of one type: compiled Triton refuses a
    function whose returns differ in type, even in branches of a constexpr test."""
    return tl.cast(hi, COMPUTE) + tl.cast(lo, COMPUTE)
