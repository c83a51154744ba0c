"""Fixed image filters that the culture features, the losses and the metrics share: [-1, 1]
images to [0, 1] RGB or luminance, area downsampling, a separable Gaussian blur and Sobel
gradients, on (N, C, H, W) tensors of any channel count; all differentiable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SOBEL = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def unit_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float32 in [0, 1] from images in [-1, 1]."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def luma(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) Rec. 601 luma of (N, 3, H, W) RGB in [0, 1]."""
    return 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) Rec. 601 luma in [0, 1] of images in [-1, 1]."""
    return luma(unit_rgb(images))


def area_downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """x averaged over factor x factor blocks (a trailing partial block is dropped): the image as
    seen `factor` times further away, where any pattern of period <= factor averages out."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel of (N, C, H, W) blurred by a Gaussian of `sigma` pixels (reflected borders;
    the radius is clipped so that images of any size above 1 pixel can be reflected)."""
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-t.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(horizontal, vertical) Sobel derivatives of each channel of (N, C, H, W), borders replicated
    (a step of height h across a straight edge gives 4h; divide by 4 for the step's height)."""
    channels = x.shape[1]
    kernel = torch.tensor(SOBEL, dtype=x.dtype, device=x.device)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kernel.view(1, 1, 3, 3).expand(channels, 1, 3, 3), groups=channels)
    gy = F.conv2d(padded, kernel.T.reshape(1, 1, 3, 3).expand(channels, 1, 3, 3), groups=channels)
    return gx, gy
