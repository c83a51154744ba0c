"""Judge features: culture statistics that the culture loss never sees, so that a transfer is
not judged by the very numbers it was optimised on.

The culture loss (culturegan.culture) uses colour moments, random-filter texture statistics
and Sobel line statistics. The judge uses other, low-dimensional robust statistics:

- hue: a 12-bin hue histogram weighted by saturation (which colours, not how much colour);
- ltp: the histograms of rotation-invariant uniform local ternary patterns (Tan and Triggs,
  2010), their upper and lower halves (10 bins each: micro-texture);
- glcm: grey-level co-occurrence contrast, homogeneity, energy and correlation at distances 1
  and 4 (mid-scale structure).

The texture groups (ltp, glcm) are taken on the luminance seen twice as far away (TEXTURE_SCALE)
and the patterns count a neighbour only when it differs by at least PATTERN_THRESHOLD: a judge
of culture must not change its mind over what a person does not see. With plain LBP on the
full-resolution pixels (this module until 2026-12-02), real held-out 64-pixel ukiyo-e blurred by
half a pixel were judged kente, and blurred by one pixel or resampled 2x down and up, impressionist:
every pattern of a flat fill's grain flips when the grain is smoothed away, and no threshold
told grain from a drawn edge. A generator's outputs are never pixel-sharp, so that judge named
their sharpness, not their culture. tests/metrics/test_metrics.py holds the judge to its
verdicts on real images of every culture under those changes.

40 numbers per image, computed without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.culture.features import check_images
from culturegan.nn.filters import area_downsample, luminance, unit_rgb

JUDGE_GROUPS = ("hue", "ltp", "glcm")
# Which judge measured a record (training runs' held-out evaluations carry it): 2, ternary
# patterns and co-occurrences on the luminance seen twice as far away (2026-12-02); 1 (unmarked),
# plain LBP and co-occurrences on the full-resolution pixels, which read sharpness, not culture.
JUDGE_VERSION = 2
HUE_BINS = 12
GLCM_LEVELS = 16
GLCM_DISTANCES = (1, 4)
TEXTURE_SCALE = 2  # ltp and glcm on the luminance area-downsampled by this factor
# a neighbour is brighter (darker) by at least this much luminance in [0, 1]; between two 8-bit
# steps, so that float rounding never decides whether an edge of exactly 8 levels counts
PATTERN_THRESHOLD = 7.5 / 255


def hue_histogram(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 12) saturation-weighted hue histogram, normalised to sum 1 (uniform for gray images)."""
    high, _ = rgb.max(1)
    low, _ = rgb.min(1)
    chroma = high - low
    r, g, b = rgb.unbind(1)
    safe = chroma.clamp_min(1e-6)
    hue = torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    saturation = chroma / high.clamp_min(1e-6)
    bins = (hue / 6 * HUE_BINS).long().clamp(0, HUE_BINS - 1).flatten(1)
    weights = saturation.flatten(1)
    histogram = torch.zeros(rgb.shape[0], HUE_BINS, dtype=rgb.dtype, device=rgb.device).scatter_add_(1, bins, weights)
    total = histogram.sum(1, keepdim=True)
    return torch.where(total > 1e-6, histogram / total.clamp_min(1e-6), torch.full_like(histogram, 1 / HUE_BINS))


def ltp_histogram(gray: torch.Tensor, threshold: float = PATTERN_THRESHOLD) -> torch.Tensor:
    """(N, 20) rotation-invariant uniform local ternary patterns (8 neighbours, radius 1): the
    upper pattern (neighbours brighter by `threshold` or more) and the lower one (darker by as
    much), each a 10-bin histogram of codes 0..8 by their number of set neighbours, 9 for
    non-uniform patterns."""
    padded = F.pad(gray[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    height, width = gray.shape[-2:]
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    differences = torch.stack([padded[:, y:y + height, x:x + width] - gray for y, x in ring], dim=1)
    return torch.cat([_uniform_pattern_histogram(differences >= threshold, gray.dtype),
                      _uniform_pattern_histogram(differences <= -threshold, gray.dtype)], 1)


def _uniform_pattern_histogram(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, 10) shares of the (N, 8, H, W) ring patterns by rotation-invariant uniform code."""
    transitions = (bits != bits.roll(1, dims=1)).sum(1)
    codes = torch.where(transitions <= 2, bits.sum(1), torch.full_like(transitions, 9))
    histogram = F.one_hot(codes.flatten(1), 10).sum(1).to(dtype)
    return histogram / histogram.sum(1, keepdim=True)


def glcm_statistics(gray: torch.Tensor) -> torch.Tensor:
    """(N, 8): contrast, homogeneity, energy, correlation of the symmetric horizontal+vertical
    co-occurrence matrix of 16 grey levels, at each distance in GLCM_DISTANCES."""
    levels = (gray * GLCM_LEVELS).long().clamp(0, GLCM_LEVELS - 1)
    i, j = torch.meshgrid(torch.arange(GLCM_LEVELS, device=gray.device, dtype=gray.dtype),
                          torch.arange(GLCM_LEVELS, device=gray.device, dtype=gray.dtype), indexing="ij")
    columns = []
    for d in GLCM_DISTANCES:
        pairs = [(levels[:, :, :-d], levels[:, :, d:]), (levels[:, :-d, :], levels[:, d:, :])]
        counts = torch.zeros(gray.shape[0], GLCM_LEVELS * GLCM_LEVELS, dtype=gray.dtype, device=gray.device)
        for a, b in pairs:
            for first, second in ((a, b), (b, a)):  # symmetric
                index = (first * GLCM_LEVELS + second).flatten(1)
                counts.scatter_add_(1, index, torch.ones_like(index, dtype=gray.dtype))
        p = (counts / counts.sum(1, keepdim=True)).view(-1, GLCM_LEVELS, GLCM_LEVELS)
        mean_i, mean_j = (p * i).sum((1, 2)), (p * j).sum((1, 2))
        std_i = ((p * (i - mean_i[:, None, None]) ** 2).sum((1, 2))).sqrt()
        std_j = ((p * (j - mean_j[:, None, None]) ** 2).sum((1, 2))).sqrt()
        covariance = (p * (i - mean_i[:, None, None]) * (j - mean_j[:, None, None])).sum((1, 2))
        columns += [(p * (i - j) ** 2).sum((1, 2)) / (GLCM_LEVELS - 1) ** 2,
                    (p / (1 + (i - j).abs())).sum((1, 2)),
                    p.square().sum((1, 2)),
                    covariance / (std_i * std_j).clamp_min(1e-6)]
    return torch.stack(columns, dim=1)


@torch.no_grad()
def judge_features(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"hue": (N, 12), "ltp": (N, 20), "glcm": (N, 8)} of (N, 3, H, W) images in [-1, 1]."""
    check_images(images)
    gray = area_downsample(luminance(images), TEXTURE_SCALE)[:, 0]
    return {"hue": hue_histogram(unit_rgb(images)), "ltp": ltp_histogram(gray), "glcm": glcm_statistics(gray)}
