"""conv2d_resample: a 2-D convolution with FIR up- or downsampling (StyleGAN2's), with its reference.

NVlabs' semantics (stylegan2-ada-pytorch torch_utils/ops/conv2d_resample.py). With f the
resampling filter (setup_filter) of size (fw, fh), the output is, in this order:

    1. upfirdn2d(x, f, up, padding=p, gain=up**2)      when up == 1: only the padding p
    2. conv2d(., weight, groups)                       correlation; convolution if not flip_weight
    3. upfirdn2d(., f, down)                           only when down > 1

where p is `padding`, given on the upsampled grid, widened so that the blurs keep the image's
size: by ((fw + up - 1) // 2, (fw - up) // 2) per axis for up > 1 and ((fw - down + 1) // 2,
(fw - down) // 2) for down > 1. A 3x3 convolution with padding 1 maps H to H * up // down.
The reference computes that order. The fast backends compute the same function in the order
that does the least work (the filter and the convolution commute):

    1x1 kernel, down > 1     blur-downsample, then the convolution at the low resolution
    1x1 kernel, up > 1       the convolution at the low resolution, then upsample
    down > 1                 blur with p, then a strided convolution (no discarded outputs)
    up > 1                   a transposed convolution with stride up (no multiplications by the
                             inserted zeros), then blur with gain up**2 (then downsample)
    neither                  one conv2d with symmetric padding, or an explicit pad or crop first

The filtering is ops.upfirdn2d and the convolution ATen's (cuDNN, oneDNN; on the cpu backend
culturegan::conv2d_cpu for groups = 1), both on the call's backend; every step is
differentiable to any order, so R1 and path-length penalties differentiate through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _autocast, _backends, _checks, _conv
from culturegan.ops.upfirdn2d import (TRITON_FIRST_ON_CUDA, _check_filter, _padding, filter_size, upfirdn2d,
                                      upfirdn2d_reference)

Padding = tuple[int, int, int, int]  # (x0, x1, y0, y1), NVlabs' order


def resampling_padding(f: torch.Tensor | None, up: int, down: int, padding: Padding) -> Padding:
    """`padding` on the upsampled grid, widened as NVlabs does so that the blurs of up- and
    downsampling keep the image's size."""
    filter_w, filter_h = filter_size(f)
    padx0, padx1, pady0, pady1 = padding
    if up > 1:
        padx0, padx1 = padx0 + (filter_w + up - 1) // 2, padx1 + (filter_w - up) // 2
        pady0, pady1 = pady0 + (filter_h + up - 1) // 2, pady1 + (filter_h - up) // 2
    if down > 1:
        padx0, padx1 = padx0 + (filter_w - down + 1) // 2, padx1 + (filter_w - down) // 2
        pady0, pady1 = pady0 + (filter_h - down + 1) // 2, pady1 + (filter_h - down) // 2
    return padx0, padx1, pady0, pady1


def output_size(x_size: tuple[int, int], kernel_size: tuple[int, int], f: torch.Tensor | None, up: int, down: int,
                padding: Padding) -> tuple[int, int]:
    """(height, width) of conv2d_resample's output for x's (height, width) and the weight's
    (kH, kW); `padding` as the user gives it (resampling_padding widens it). Below 1 when
    the output would be empty."""
    filter_w, filter_h = filter_size(f)
    padx0, padx1, pady0, pady1 = resampling_padding(f, up, down, padding)
    sizes = []
    for size, kernel, taps, pads in ((x_size[0], kernel_size[0], filter_h, pady0 + pady1),
                                     (x_size[1], kernel_size[1], filter_w, padx0 + padx1)):
        size = size * up + pads - (taps - 1 if up > 1 else 0) - (kernel - 1)  # steps 1 and 2
        sizes.append((size - taps) // down + 1 if down > 1 else size)  # step 3
    return sizes[0], sizes[1]


def _factor(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 (one factor for both axes), got {value!r}")
    return value


def check_resampling(x: torch.Tensor, kernel_size: tuple[int, int], f, up, down, padding) -> tuple:
    """(f, up, down, padding) checked for x and a kernel of kernel_size: f a fixed filter on
    x's device, factors ints >= 1, NVlabs' padding forms, a non-empty output."""
    f = _check_filter(f, x)
    up, down, padding = _factor(up, "up"), _factor(down, "down"), _padding(padding)
    height, width = output_size(tuple(x.shape[2:]), kernel_size, f, up, down, padding)
    if height < 1 or width < 1:
        raise ValueError(f"the output would be empty: x {tuple(x.shape)}, kernel {kernel_size}, filter "
                         f"{filter_size(f)} (w, h), up {up}, down {down}, padding {padding} (x0, x1, y0, y1)")
    return f, up, down, padding


def _check_weight(x: torch.Tensor, weight, groups) -> int:
    _checks.check_channel_tensor(weight, "weight", min_dim=4, max_dim=4)
    _checks.check_same_device(weight, "weight", x, "x")
    _checks.check_same_dtype(weight, "weight", x, "x")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    out_channels, in_per_group = weight.shape[:2]
    if in_per_group * groups != x.shape[1] or out_channels % groups:
        raise ValueError(f"weight (C_out, C_in / groups, kH, kW) has shape {tuple(weight.shape)}: with groups "
                         f"{groups} it takes {in_per_group * groups} input channels and C_out must divide by "
                         f"groups, but x has {x.shape[1]} channels (shape {tuple(x.shape)})")
    return groups


def _check(x, weight, f, up, down, padding, groups, flip_weight, flip_filter) -> tuple:
    _checks.check_channel_tensor(x, "x", min_dim=4, max_dim=4)
    groups = _check_weight(x, weight, groups)
    f, up, down, padding = check_resampling(x, tuple(weight.shape[2:]), f, up, down, padding)
    return x, weight, f, up, down, padding, groups, bool(flip_weight), bool(flip_filter)


def conv2d_resample_reference(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor | None = None, up: int = 1,
                              down: int = 1, padding=0, groups: int = 1, flip_weight: bool = True,
                              flip_filter: bool = False) -> torch.Tensor:
    """The definition, in its plain order: upsample and pad, convolve, downsample (autograd by torch)."""
    padding = resampling_padding(f, up, down, _padding(padding))
    x = upfirdn2d_reference(x, f if up > 1 else None, up, 1, padding, flip_filter, up ** 2)
    x = F.conv2d(x, weight if flip_weight else weight.flip([2, 3]), groups=groups)
    return upfirdn2d_reference(x, f, 1, down, 0, flip_filter) if down > 1 else x


# ------------------------------------------------------------------------- fast backends

def _convolve(backend: str, x: torch.Tensor, weight: torch.Tensor, groups: int, flip_weight: bool, stride: int = 1,
              padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """ATen's convolution (the cpu backend's culturegan::conv2d_cpu where it applies: groups 1)."""
    weight = weight if flip_weight else weight.flip([2, 3])
    if groups == 1:
        return _conv.convolve(x, weight, None, stride, padding, "zeros", 1, backend=backend)
    return F.conv2d(x, weight, None, stride, padding, 1, groups)


def _transposed_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(C_out, C_in / g, kH, kW) as conv_transpose2d's (C_in, C_out / g, kH, kW): transposed per group."""
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    weight = weight.reshape(groups, out_channels // groups, in_per_group, kernel_h, kernel_w).transpose(1, 2)
    return weight.reshape(groups * in_per_group, out_channels // groups, kernel_h, kernel_w)


def _upsampled(backend, x, weight, f, up, down, padding, groups, flip_weight, flip_filter):
    """A transposed convolution with stride `up` (which skips the inserted zeros), then the blur."""
    kernel_h, kernel_w = weight.shape[2:]
    # The transposed convolution's output already extends kernel - 1 samples before the
    # upsampled grid and kernel - up after it: the blur pads (or crops) the rest.
    padx0, padx1, pady0, pady1 = (pad - extent for pad, extent in
                                  zip(padding, (kernel_w - 1, kernel_w - up, kernel_h - 1, kernel_h - up)))
    # What both sides crop is cropped by the transposed convolution itself (its padding).
    crop_x, crop_y = max(min(-padx0, -padx1), 0), max(min(-pady0, -pady1), 0)
    # conv_transpose2d is a true convolution: flipping makes it the correlation flip_weight asks for.
    weight = _transposed_weight(weight, groups)
    x = F.conv_transpose2d(x, weight.flip([2, 3]) if flip_weight else weight, None, up, (crop_y, crop_x), 0, groups)
    x = upfirdn2d(x, f, 1, 1, (padx0 + crop_x, padx1 + crop_x, pady0 + crop_y, pady1 + crop_y), flip_filter, up ** 2,
                  backend=backend)
    return upfirdn2d(x, f, 1, down, 0, flip_filter, backend=backend) if down > 1 else x


def conv2d_resample_fast(backend: str, x, weight, f, up, down, padding, groups, flip_weight,
                         flip_filter) -> torch.Tensor:
    """The fast order of the module docstring on one backend, for checked arguments (modulated_conv2d's
    folded convolution calls it directly)."""
    padding = resampling_padding(f, up, down, padding)
    pointwise = tuple(weight.shape[2:]) == (1, 1)
    if pointwise and down > 1 and up == 1:
        x = upfirdn2d(x, f, 1, down, padding, flip_filter, backend=backend)
        return _convolve(backend, x, weight, groups, flip_weight)
    if pointwise and up > 1 and down == 1:
        x = _convolve(backend, x, weight, groups, flip_weight)
        return upfirdn2d(x, f, up, 1, padding, flip_filter, up ** 2, backend=backend)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, 1, 1, padding, flip_filter, backend=backend)
        return _convolve(backend, x, weight, groups, flip_weight, stride=down)
    if up > 1:
        return _upsampled(backend, x, weight, f, up, down, padding, groups, flip_weight, flip_filter)
    padx0, padx1, pady0, pady1 = padding
    if padx0 == padx1 >= 0 and pady0 == pady1 >= 0:
        return _convolve(backend, x, weight, groups, flip_weight, padding=(pady0, padx0))
    # Uneven or negative padding: NVlabs' own way, upfirdn2d's pad then crop. (F.pad crops first,
    # so a crop larger than x fails even where the other side's padding leaves an output.)
    return _convolve(backend, upfirdn2d(x, None, 1, 1, padding, backend=backend), weight, groups, flip_weight)


OP = _backends.declare(_backends.Op("conv2d_resample", _check, conv2d_resample_reference, conv2d_resample_fast,
                                    auto_order=TRITON_FIRST_ON_CUDA))


@_autocast.lowered
def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding=0, groups: int = 1, flip_weight: bool = True, flip_filter: bool = False, *,
                    backend: str | None = None) -> torch.Tensor:
    """A 2-D convolution with FIR upsampling by `up` before it and downsampling by `down` after
    it, as NVlabs' conv2d_resample (see the module docstring for the exact definition).

    Args:
        x: (N, C_in, H, W) float16/bfloat16/float32/float64 tensor (contiguous or channels_last).
        weight: (C_out, C_in / groups, kH, kW), x's dtype and device.
        f: the resampling filter from ops.setup_filter (2-D, or 1-D separable; on x's device, no
            gradient), or None (no blur: zero insertion and plain striding).
        up, down: ints >= 1, one factor for both axes (both > 1 upsamples, then downsamples).
        padding: an int, an (x, y) pair or (x0, x1, y0, y1) on the upsampled grid; negative crops.
        groups: as F.conv2d's.
        flip_weight: True correlates (F.conv2d's convention), False convolves (flips the kernel).
        flip_filter: correlate with f instead of convolving.
        backend: "cuda", "triton", "cpu", "reference" or "auto" (see culturegan.ops).

    Returns:
        (N, C_out, H', W') in x's dtype. Differentiable to any order in x and weight.
    """
    return OP(x, weight, f, up, down, padding, groups, flip_weight, flip_filter, backend=backend)
