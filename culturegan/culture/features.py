"""Culture features: colour, texture and line statistics of images, one fixed-length vector
per image and group, differentiable (so the culture loss can use them) and offline.

Images are (N, 3, H, W) RGB in [-1, 1] (culturegan's convention; the loaders produce it).

Every statistic is taken on area-downsampled copies of the image (SCALES: the image, and the
image seen 2 and 4 times further away), never on the full-resolution pixels alone. Statistics
of one fine scale are cheap to satisfy with a regular pattern: a dot grid raises a colour
spread, a lattice adds edges of any wanted density and orientation. A culture's look lives at
several scales at once (regions of colour, brush texture, outlines), and a pattern of period p
averages out of every copy downsampled by p or more, so it cannot fake the coarse statistics
and pays for the fine ones.

- colour (10), on the 2x copy (colour regions, not pixels): Lab mean and std (6), HSV
  saturation mean and std (2), Hasler-Susstrunk colourfulness, and the entropy of a soft
  64-colour palette histogram.
- texture (384 by default): per-channel mean and std (AdaIN's statistics) of a fixed random
  filter layer (kernels 3 and 5, 32 zero-mean unit-norm filters each, ReLU; seeded, needs no
  downloaded weights) applied at every scale (receptive fields of 3 to 20 pixels), computed by
  culturegan.ops.culture_stats; ``gram=True`` adds each bank's Gram matrix (upper triangle).
- line (37): at every scale, the colour gradient's magnitude mean and std, edge density, a
  magnitude-weighted 8-bin orientation histogram and its entropy (12 per scale); and a stroke
  width estimate (2 x area / perimeter of the dark mask, full resolution). The gradient is
  Di Zenzo's, of the three channels (the root of the structure tensor's largest eigenvalue and
  its orientation; on a grey image, luminance's): on luminance alone a red-green edge of one
  brightness is no edge, and a generator asked for a culture's edge statistics drew bands of
  changing hue along the horizons, of which the statistics saw only the small luminance steps
  (README, "Line statistics of the colour gradient").
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from culturegan import ops
from culturegan.nn.filters import area_downsample, luma, sobel, unit_rgb

GROUPS = ("colour", "texture", "line")
SCALES = (1, 2, 4)  # downsampling factors the statistics are taken at
COLOUR_SCALE = 2
TEXTURE_KERNELS = (3, 5)
TEXTURE_FILTERS = 32
TEXTURE_SEED = 0
EDGE_THRESHOLD = 0.1  # Sobel magnitude (on [0, 1] luminance) counted as an edge
ORIENTATION_BINS = 8
MIN_SIDE = 4 * max(SCALES)  # the coarsest copy is still 4 pixels across
# the side of the square a reference image is seen at (reference_view): CultureProfile.fit_folder's
# default image side, so a reference is seen as culture profiles see their images
REFERENCE_SIDE = 128


@dataclasses.dataclass
class CultureFeatures:
    """(N, d) feature vectors per group."""

    colour: torch.Tensor
    texture: torch.Tensor
    line: torch.Tensor

    def groups(self) -> dict[str, torch.Tensor]:
        return {group: getattr(self, group) for group in GROUPS}

    def all(self) -> torch.Tensor:
        return torch.cat([self.colour, self.texture, self.line], dim=1)


def check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) RGB, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [-1, 1], got {images.dtype}")
    if min(images.shape[2:]) < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE} x {MIN_SIDE} for the texture and line statistics "
                         f"at {max(SCALES)}x downsampling, got {tuple(images.shape[2:])}")


# ---------------------------------------------------------------------------------- colour

def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (N, 3, H, W) to CIE Lab (D65), differentiable."""
    linear = torch.where(rgb > 0.04045, ((rgb.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = rgb.new_tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = torch.einsum("ij,njhw->nihw", matrix, linear) / rgb.new_tensor([0.95047, 1.0, 1.08883]).view(1, 3, 1, 1)
    delta = 6 / 29
    f = torch.where(xyz > delta**3, xyz.clamp_min(delta**3) ** (1 / 3), xyz / (3 * delta**2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def colour_features(rgb: torch.Tensor) -> torch.Tensor:
    rgb = area_downsample(rgb, COLOUR_SCALE)
    lab = rgb_to_lab(rgb).flatten(2)
    high, low = rgb.amax(1), rgb.amin(1)
    saturation = ((high - low) / (high + 1e-6)).flatten(1)
    r, g, b = rgb.unbind(1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    colourfulness = (rg.std(1) ** 2 + yb.std(1) ** 2).sqrt() + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2).sqrt()
    return torch.cat([lab.mean(2) / 100, lab.std(2) / 100, saturation.mean(1, keepdim=True),
                      saturation.std(1, keepdim=True), colourfulness[:, None], _palette_entropy(rgb)[:, None]], 1)


def _palette_entropy(rgb: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """Entropy (bits) of a 64-colour histogram whose pixels spread over nearby bins
    (triangular weights), so that it is differentiable."""
    centres = torch.linspace(0, 1, levels, device=rgb.device, dtype=rgb.dtype)
    weights = (1 - (rgb.flatten(2)[..., None] - centres).abs() * (levels - 1)).clamp_min(0)  # (N, 3, P, L)
    joint = torch.einsum("npi,npj,npk->nijk", weights[:, 0], weights[:, 1], weights[:, 2]).flatten(1)
    p = joint / joint.sum(1, keepdim=True)
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1)


# --------------------------------------------------------------------------------- texture

def random_filters(seed: int = TEXTURE_SEED, device=None, dtype=torch.float32) -> list[torch.Tensor]:
    """The fixed multi-scale filter bank: per kernel size, TEXTURE_FILTERS zero-mean unit-norm
    3-channel filters drawn with `seed` (the same on every machine)."""
    generator = torch.Generator().manual_seed(seed)
    bank = []
    for k in TEXTURE_KERNELS:
        w = torch.randn(TEXTURE_FILTERS, 3, k, k, generator=generator, dtype=torch.float64)
        w = w - w.mean((1, 2, 3), keepdim=True)
        bank.append((w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).to(device=device, dtype=dtype))
    return bank


def texture_features(rgb: torch.Tensor, filters: list[torch.Tensor], gram: bool = False,
                     backend: str | None = None) -> torch.Tensor:
    parts = []
    for scale in SCALES:
        copy = area_downsample(rgb, scale)
        for w in filters:
            response = F.relu(F.conv2d(copy, w, padding=w.shape[-1] // 2))
            mean, std, g = ops.culture_stats(response, backend=backend)
            parts += [mean, std]
            if gram:
                rows, cols = torch.triu_indices(w.shape[0], w.shape[0], device=rgb.device)
                parts.append(g[:, rows, cols])
    return torch.cat(parts, 1)


# ------------------------------------------------------------------------------------ line

def line_features(rgb: torch.Tensor) -> torch.Tensor:
    return torch.cat([*(_edge_statistics(area_downsample(rgb, scale)) for scale in SCALES),
                      _stroke_width(luma(rgb))], 1)


def _edge_statistics(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 12) of the colour gradient of (N, 3, H, W) RGB: its magnitude's mean and std, edge
    density, orientation histogram and the histogram's entropy."""
    gx, gy = sobel(rgb)
    jxx, jyy, jxy = gx.square().sum(1), gy.square().sum(1), (gx * gy).sum(1)  # Di Zenzo's structure tensor
    # the epsilons keep flat pixels' magnitude near 1e-6, as luminance's sqrt(gx^2 + gy^2 + 1e-12)
    # did: a larger floor gives flat areas' noise orientations weight in the histogram
    largest = (jxx + jyy) / 2 + ((jxx - jyy).square() / 4 + jxy.square() + 1e-24).sqrt()
    # 48 = 3 channels x Sobel's 4^2: a grey step of height h has magnitude h
    magnitude = (largest / 48 + 1e-12).sqrt().flatten(1)
    edges = torch.sigmoid((magnitude - EDGE_THRESHOLD) * 50)  # a soft count: differentiable
    angle = (0.5 * torch.atan2(2 * jxy, jxx - jyy)).flatten(1) % math.pi  # orientation, not direction
    position = angle / math.pi * ORIENTATION_BINS
    bins = torch.arange(ORIENTATION_BINS, device=rgb.device, dtype=rgb.dtype)
    distance = (position[..., None] - bins - 0.5).abs()
    share = (1 - torch.minimum(distance, ORIENTATION_BINS - distance)).clamp_min(0)  # circular triangular bins
    histogram = (share * magnitude[..., None]).sum(1)
    histogram = histogram / histogram.sum(1, keepdim=True).clamp_min(1e-12)
    entropy = -(histogram * torch.log2(histogram.clamp_min(1e-12))).sum(1, keepdim=True)
    return torch.cat([magnitude.mean(1, keepdim=True), magnitude.std(1, keepdim=True),
                      edges.mean(1, keepdim=True), histogram, entropy], 1)


def _stroke_width(luminance: torch.Tensor) -> torch.Tensor:
    """(N, 1): 2 x area / perimeter of the soft dark mask (pixels darker than mean - std / 2), in
    image sides."""
    flat = luminance.flatten(1)
    dark = torch.sigmoid((flat.mean(1, keepdim=True) - 0.5 * flat.std(1, keepdim=True) - flat) * 50)
    dark_map = dark.view_as(luminance)
    perimeter = ((dark_map[..., 1:, :] - dark_map[..., :-1, :]).abs().flatten(1).sum(1)
                 + (dark_map[..., :, 1:] - dark_map[..., :, :-1]).abs().flatten(1).sum(1))
    return (2 * dark.sum(1) / (perimeter + 1.0) / min(luminance.shape[2:]))[:, None]


# ------------------------------------------------------------------------------ extraction

class CultureFeatureExtractor(torch.nn.Module):
    """extract() as a module holding its filter bank (a buffer: it follows .to())."""

    def __init__(self, seed: int = TEXTURE_SEED, gram: bool = False, backend: str | None = None):
        super().__init__()
        for k, w in zip(TEXTURE_KERNELS, random_filters(seed)):
            self.register_buffer(f"filters_{k}", w, persistent=False)
        self.seed, self.gram, self.backend = seed, gram, backend

    def forward(self, images: torch.Tensor) -> CultureFeatures:
        check_images(images)
        rgb = unit_rgb(images)
        filters = [getattr(self, f"filters_{k}") for k in TEXTURE_KERNELS]
        return CultureFeatures(colour_features(rgb), texture_features(rgb, filters, self.gram, self.backend),
                               line_features(rgb))

    def feature_dim(self) -> int:
        """The length of the CultureFeatures.all() vectors this extractor returns."""
        with torch.no_grad():
            return self(torch.zeros(1, 3, 32, 32, device=self.filters_3.device)).all().shape[1]


def reference_view(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, REFERENCE_SIDE, REFERENCE_SIDE): (N, 3, H, W) images in [-1, 1] resized (bicubic,
    antialiased, as PIL resizes culture profiles' images) so that the shorter side is
    REFERENCE_SIDE, then their centre square: every image's statistics at one scale."""
    height, width = images.shape[2:]
    ratio = REFERENCE_SIDE / min(height, width)
    size = (max(REFERENCE_SIDE, round(height * ratio)), max(REFERENCE_SIDE, round(width * ratio)))
    if size != (height, width):
        images = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
    top, left = (size[0] - REFERENCE_SIDE) // 2, (size[1] - REFERENCE_SIDE) // 2
    return images[:, :, top:top + REFERENCE_SIDE, left:left + REFERENCE_SIDE]


@torch.no_grad()
def reference_features(images: torch.Tensor, extractor: CultureFeatureExtractor) -> torch.Tensor:
    """(N, feature_dim): what a multi-culture generator's reference projection takes, the culture
    features (CultureFeatures.all()) of (N, 3, H, W) images in [-1, 1] seen through
    reference_view. Transfer (a reference file) and training (its batches' real images) both
    compute them here, so that the projection is trained on the features it is later given.
    References are inputs, never trained: no gradient; float32, outside autocast."""
    with torch.autocast(images.device.type, enabled=False):
        return extractor(reference_view(images.float())).all()


def extract(images: torch.Tensor, seed: int = TEXTURE_SEED, gram: bool = False,
            backend: str | None = None) -> CultureFeatures:
    """The colour, texture and line features of (N, 3, H, W) images in [-1, 1]."""
    check_images(images)
    return CultureFeatureExtractor(seed, gram, backend).to(images.device)(images)
