"""Argument checks shared by all ops (mirrors csrc/common/checks.h).

They run before any backend is chosen, so every backend rejects bad input with the same
clear message: TypeError for a wrong type or dtype, ValueError for a wrong shape, value or
device.
"""

from __future__ import annotations

import math

import torch

FLOATING_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def check_floating(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOATING_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {t.dtype}")


def check_channel_tensor(x: object, name: str, min_dim: int = 2, max_dim: int = 4) -> torch.Tensor:
    """A floating tensor (N, C, ...) with channels on dim 1 and no empty dimension."""
    x = check_tensor(x, name)
    if not min_dim <= x.dim() <= max_dim:
        counts = {0: f"{min_dim}", 1: f"{min_dim} or {max_dim}"}.get(max_dim - min_dim, f"{min_dim} to {max_dim}")
        raise ValueError(f"{name} must have {counts} dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); every dimension must be >= 1")
    check_floating(x, name)
    return x


def check_same_device(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; move both to the same device")


def check_same_dtype(t: torch.Tensor, name: str, ref: torch.Tensor, ref_name: str) -> None:
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; cast it with .to({ref_name}.dtype)")


def check_channel_vector(v: object, name: str, x: torch.Tensor, x_name: str) -> torch.Tensor:
    """A per-channel vector (bias, scale, ...) for x, whose channels are dim 1."""
    v = check_tensor(v, name)
    check_same_device(v, name, x, x_name)
    check_same_dtype(v, name, x, x_name)
    if v.dim() != 1 or v.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must have shape ({x.shape[1]},) to match {x_name}'s channel dimension, "
                         f"got shape {tuple(v.shape)}")
    return v


def check_number(value: object, name: str, *, minimum: float, inclusive: bool = True) -> float:
    """A finite real number >= minimum (or > minimum when not inclusive)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        raise ValueError(f"{name} must be {'>=' if inclusive else '>'} {minimum}, got {value}")
    return float(value)
