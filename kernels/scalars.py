"""Scalar kernel arguments at full precision (shared by the Triton kernels).

Triton passes Python floats as float32, which would round the parameters of float64 math: a
host-side `split` sends a float as two float32 halves, and `join` adds them back in the kernel.
"""

from __future__ import annotations

import numpy as np
import triton
import triton.language as tl


def split(value: float) -> tuple[float, float]:
    """(hi, lo), two float32 values with hi + lo == value to about 48 bits."""
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


@triton.jit
def join(hi, lo, COMPUTE: tl.constexpr):
    """The value split into hi + lo, in the COMPUTE dtype."""
    if COMPUTE == tl.float64:
        return tl.cast(hi, tl.float64) + tl.cast(lo, tl.float64)
    return hi
