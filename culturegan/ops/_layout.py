"""The memory layouts and math dtype the channel-wise kernels take (mirrors csrc/common/layout.h).

A tensor is seen as a dense [outer, channels, inner] array: NC* contiguous (inner = H*W) or
channels innermost (channels_last; inner = 1). Other strided tensors are copied to contiguous.
The fake kernels use the same rules, so compiled graphs see the strides the kernels produce.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class ChannelLayout(NamedTuple):
    tensor: torch.Tensor  # the input itself, or a contiguous copy of it
    outer: int
    channels: int
    inner: int


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernels compute in: float32 for the half types and float32, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def is_channels_innermost(t: torch.Tensor) -> bool:
    return t.movedim(1, -1).is_contiguous()


def channel_layout(x: torch.Tensor) -> ChannelLayout:
    channels = x.shape[1]
    if not x.is_contiguous() and is_channels_innermost(x):
        return ChannelLayout(x, x.numel() // channels, channels, 1)
    x = x.contiguous()
    return ChannelLayout(x, x.shape[0], channels, x.numel() // (x.shape[0] * channels))


def empty_in_kernel_layout(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor with the shape, dtype and strides of a kernel output for input x:
    channels innermost if x is (and not NC* contiguous), else contiguous, with the canonical
    strides of that layout. (empty_like would copy x's strides, and a size-1 batch may carry
    any batch stride, as oneDNN's outputs do; F.pad and the convolutions then take the tensor
    for NCHW and copy it.)"""
    if x.is_contiguous() or not is_channels_innermost(x):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return torch.empty(x.movedim(1, -1).shape, dtype=x.dtype, device=x.device).movedim(-1, 1)


def match_layout(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`t` in the same element order as `like` (a tensor in a kernel layout), copied if needed."""
    if like.is_contiguous():
        return t.contiguous()
    if is_channels_innermost(t):
        return t
    return t.movedim(1, -1).contiguous().movedim(-1, 1)
