"""The line-structure loss: a transferred image keeps its input's lines, whatever colours and
textures the target culture gives them (as ChipGAN constrains ink-wash strokes by the photo's
edges).

At each scale s (the [0, 1] RGB image area-downsampled by s), the colour structure tensor
J = G_1 * sum_c (gx_c^2, gy_c^2, gx_c gy_c) of the three channels (Di Zenzo's), integrated over
a 1-pixel Gaussian, is rescaled to T = J / sqrt(tr J + eps^2): a field whose trace is about the
gradient magnitude and which carries each edge's orientation (polarity and colour do not
matter). The loss is one minus the cosine similarity of the output's and the input's fields,
per image, averaged over images and scales:

    L_structure = lambda_structure * mean_s mean_n (1 - <T_s(G(x)_n), T_s(x_n)> / (|T_s(G(x)_n)| |T_s(x_n)|))

with <A, B> = sum over pixels of A_xx B_xx + A_yy B_yy + 2 A_xy B_xy. It is zero for the
identity and for any global change of contrast (a low-contrast ink-wash rendering keeps its
lines), and it charges both for lines removed (a house that vanishes, 1 for a blank image) and
for lines added where the input has none (a lattice over a flat sky): the added energy grows
the output's norm and not the inner product. Each pixel weighs by its edge strength, so an
image's lines count far more than the grain of its flat areas; an absolute contrast floor
instead lets a photo's sensor noise outweigh its lines. All three channels count: on luminance
alone, a generator hides a pattern in chroma (a red-green pixel grid of constant brightness)
for free. The squared derivatives come from one-pixel differences (gx gy from the two
diagonals: (d1^2 - d2^2) / 4), not from Sobel or any central difference, which is blind to a
one-pixel checkerboard: the very pattern transposed convolutions draw. The input is a
constant: only the output gets a gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from culturegan.nn.filters import area_downsample, gaussian_blur, unit_rgb

SCALES = (1, 2, 4)  # downsampling factors: fine strokes, shapes, layout
EPSILON = 0.01  # gradient magnitude (RGB in [0, 1]) below which the field's trace falls off quadratically
INTEGRATION_SIGMA = 1.0  # pixels at each scale: a line's two sides are one structure
MIN_SIDE = 4  # pixels the coarsest scale must leave
FLAT = 1e-6  # a field norm below this is a flat image


def check_scales(scales, image_side: int | None = None, key: str = "structure_scales") -> tuple[int, ...]:
    """scales as a tuple of distinct positive integers; with image_side, also small enough that
    the coarsest copy keeps MIN_SIDE pixels. Errors name `key` (the setting that holds them)."""
    scales = tuple(scales)
    if not scales or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales) \
            or len(set(scales)) != len(scales):
        raise ValueError(f"{key} must be distinct positive integers (downsampling factors), got {scales}")
    if image_side is not None and image_side // max(scales) < MIN_SIDE:
        raise ValueError(f"{key}: scale {max(scales)} is too large for {image_side}-pixel images (the coarsest "
                         f"copy must keep {MIN_SIDE} pixels: at most {image_side // MIN_SIDE})")
    return scales


def structure_fields(images: torch.Tensor, scales=SCALES) -> list[torch.Tensor]:
    """Per scale, the (N, 3, H/s, W/s) structure field (xx, yy, xy), trace about the gradient
    magnitude, of images in [-1, 1]."""
    rgb = unit_rgb(images)
    fields = []
    for scale in scales:
        j = gaussian_blur(_squared_derivatives(area_downsample(rgb, scale)), INTEGRATION_SIGMA)
        fields.append(j / (j[:, :1] + j[:, 1:2] + EPSILON**2).sqrt())
    return fields


def field_dissimilarity(made: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """(N,) one minus the cosine similarity of two (N, 3, H, W) structure fields (the xy
    component counts twice: it stands for both off-diagonal entries of the tensor); 0 when both
    images are flat, 1 when only one is."""
    weights = made.new_tensor([1.0, 1.0, 2.0]).view(1, 3, 1, 1)
    inner = (made * wanted * weights).flatten(1).sum(1)
    made_squares, wanted_squares = ((f.square() * weights).flatten(1).sum(1) for f in (made, wanted))
    both_flat = (made_squares < FLAT**2) & (wanted_squares < FLAT**2)
    # FLAT^2 under the roots: the square root's gradient at 0 is infinite, and a flat output would
    # send NaN to the generator
    norms = ((made_squares + FLAT**2) * (wanted_squares + FLAT**2)).sqrt()
    return torch.where(both_flat, 0.0, 1 - inner / norms)


def _squared_derivatives(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W): gx^2, gy^2 and gx gy of (N, C, H, W), summed over channels, from one-pixel
    differences (borders replicated: no edge at the image's border)."""
    p = F.pad(x, (0, 1, 0, 1), mode="replicate")
    dx = p[..., :-1, 1:] - p[..., :-1, :-1]
    dy = p[..., 1:, :-1] - p[..., :-1, :-1]
    diagonal = p[..., 1:, 1:] - p[..., :-1, :-1]  # about gx + gy
    anti = p[..., 1:, :-1] - p[..., :-1, 1:]  # about gy - gx
    parts = [dx.square(), dy.square(), (diagonal.square() - anti.square()) / 4]
    return torch.cat([part.sum(1, keepdim=True) for part in parts], 1)


class StructureLoss(torch.nn.Module):
    """lambda_structure * the mean structure-field dissimilarity of outputs to their inputs."""

    def __init__(self, weight: float = 1.0, scales=SCALES):
        super().__init__()
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"lambda_structure must be a finite number >= 0, got {weight}")
        self.weight, self.scales = weight, check_scales(scales)

    def forward(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if self.weight == 0:
            return outputs.new_zeros(())
        if outputs.shape != inputs.shape or outputs.dim() != 4:
            raise ValueError(f"outputs and inputs must be (N, C, H, W) of one shape, got {tuple(outputs.shape)} and "
                             f"{tuple(inputs.shape)}")
        check_scales(self.scales, min(outputs.shape[-2:]))
        with torch.no_grad():
            wanted = structure_fields(inputs, self.scales)
        made = structure_fields(outputs, self.scales)
        return self.weight * torch.stack([field_dissimilarity(m, w).mean() for m, w in zip(made, wanted)]).mean()
