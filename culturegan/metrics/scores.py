"""Culture-consistency metrics of transferred images, each a plain function of feature tensors
or image tensors (N, 3, H, W) in [-1, 1]:

- recognisability: a nearest-centroid culture classifier (fitted on the culture datasets'
  training images) and, per transferred image, whether it lands in the target culture and its
  relative margin between source and target; and whether one set is classified as the target
  more often than another by more than chance (a one-sided Fisher exact test);
- distribution distance: KID (unbiased, fine on tens of images) and the Frechet distance
  between feature distributions (flagged unreliable below 10 images per feature);
- content preservation: SSIM of low-pass luminance, and the F1 of edge maps (2-pixel tolerance);
- cycle consistency error and diversity;
- deception rate: the share of outputs a discriminator takes for real.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from culturegan.nn.filters import gaussian_blur, luminance, sobel

VARIANCE_FLOOR = 1e-3  # of the features' mean variance: constant features must not dominate


# ----------------------------------------------------------------------- recognisability

def within_culture_scale(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """(d,) the pooled within-culture standard deviation of each feature (floored at a share of
    the mean): the unit in which the metrics compare features, the same for every run evaluated
    against one reference set."""
    small = [name for name, values in features.items() if values.shape[0] < 2]
    if small:
        raise ValueError(f"culture(s) {small} have fewer than 2 images")
    within = torch.cat([v.double() - v.double().mean(0) for v in features.values()])
    variance = within.square().sum(0) / max(1, within.shape[0] - len(features))
    return variance.clamp_min(VARIANCE_FLOOR * variance.mean().clamp_min(1e-12)).sqrt()


@dataclasses.dataclass
class NearestCentroid:
    """Culture means of standardised features (each feature divided by its pooled within-culture
    standard deviation): a classifier that needs no tuning and generalises from small sets."""

    cultures: list[str]
    means: torch.Tensor  # (K, d)
    scale: torch.Tensor  # (d,)

    @classmethod
    def fit(cls, features: dict[str, torch.Tensor]) -> NearestCentroid:
        if len(features) < 2:
            raise ValueError(f"a culture classifier needs at least 2 cultures, got {list(features)}")
        means = torch.stack([v.double().mean(0) for v in features.values()])
        return cls(list(features), means, within_culture_scale(features))

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """(N, K) standardised Euclidean distance of each image to each culture, per feature."""
        scaled = features.double() / self.scale
        return torch.cdist(scaled, self.means / self.scale) / self.scale.numel() ** 0.5

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.distances(features).argmin(1)


def recognisability(classifier: NearestCentroid, features: torch.Tensor, source: str, target: str) -> dict:
    """How recognisably the transferred images (their features) belong to `target`:
    target_rate (the share classified as target), the assignment counts per culture, and the
    mean relative margin (d_source - d_target) / (d_source + d_target), in [-1, 1]."""
    for name in (source, target):
        if name not in classifier.cultures:
            raise ValueError(f"culture {name!r} is not among the classifier's {classifier.cultures}")
    distances = classifier.distances(features)
    predicted = distances.argmin(1)
    s, t = classifier.cultures.index(source), classifier.cultures.index(target)
    margin = (distances[:, s] - distances[:, t]) / (distances[:, s] + distances[:, t]).clamp_min(1e-12)
    counts = torch.bincount(predicted, minlength=len(classifier.cultures))
    return {"target_rate": float((predicted == t).double().mean()),
            "assigned": dict(zip(classifier.cultures, counts.tolist())),
            "margin": float(margin.mean())}


def more_often_p(hits: int, count: int, other_hits: int, other_count: int) -> float:
    """One-sided Fisher exact test that `hits` of `count` images is a higher rate than
    `other_hits` of `other_count`: the chance that the first set would hold `hits` or more of
    all the hits if they were shared out between the two sets at random (1: no evidence; a small
    value: more than chance). One image of 72 against none of 72 is p = 0.5."""
    for name, value in (("hits", hits), ("count", count), ("other_hits", other_hits), ("other_count", other_count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if hits > count or other_hits > other_count:
        raise ValueError(f"hits must not exceed their count, got {hits} of {count} and {other_hits} of {other_count}")
    total, successes = count + other_count, hits + other_hits
    tail = sum(math.comb(successes, k) * math.comb(total - successes, count - k)
               for k in range(hits, min(successes, count) + 1))
    return tail / math.comb(total, count)


def confusion(classifier: NearestCentroid, features: dict[str, torch.Tensor]) -> torch.Tensor:
    """(K, K) counts: rows the true culture of held-out images, columns the assigned one."""
    matrix = torch.zeros(len(classifier.cultures), len(classifier.cultures), dtype=torch.long)
    for name, values in features.items():
        matrix[classifier.cultures.index(name)] += torch.bincount(classifier.predict(values),
                                                                  minlength=len(classifier.cultures))
    return matrix


# -------------------------------------------------------------------- distribution distance

def _standardised(x: torch.Tensor, reference: torch.Tensor,
                  scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets centred on the reference and divided by `scale` (within_culture_scale of the
    reference cultures), or by the reference set's own standard deviation."""
    mean = reference.double().mean(0)
    if scale is None:
        scale = within_culture_scale({"reference": reference})
    return (x.double() - mean) / scale, (reference.double() - mean) / scale


def kid(features: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """Kernel inception distance: the unbiased MMD^2 with the cubic polynomial kernel
    (x.y / d + 1)^3, on standardised features (see _standardised). 0 for one distribution
    (on average; small negative values are noise), larger the farther apart."""
    if features.shape[0] < 2 or reference.shape[0] < 2:
        raise ValueError("KID needs at least 2 images on each side")
    x, y = _standardised(features, reference, scale)
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = x.shape[0], y.shape[0]
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def frechet_distance(features: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor | None = None) -> dict:
    """{"value": the Frechet distance of Gaussians fitted to the standardised features,
    "reliable": whether both sets have at least 10 images per feature}."""
    x, y = _standardised(features, reference, scale)
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
    cov_y = torch.cov(y.T).reshape(y.shape[1], y.shape[1])
    # Tr(sqrt(C_x C_y)) = Tr(sqrt(C_x^1/2 C_y C_x^1/2)), a symmetric PSD matrix
    values, vectors = torch.linalg.eigh(cov_x)
    root = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root @ cov_y @ root).clamp_min(0).sqrt().sum()
    value = (mu_x - mu_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * cross
    return {"value": float(value.clamp_min(0)), "reliable": min(x.shape[0], y.shape[0]) >= 10 * x.shape[1]}


# ------------------------------------------------------------------- content preservation

def psnr(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(N,) peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2), at most 126 dB
    (equal images: a finite number, which JSON can hold)."""
    if outputs.shape != inputs.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and inputs {tuple(inputs.shape)} differ in shape")
    mse = (outputs.double() - inputs.double()).square().flatten(1).mean(1).clamp_min(1e-12)
    return (10 * torch.log10(4.0 / mse)).float()


def ssim_lowpass(outputs: torch.Tensor, inputs: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """(N,) SSIM of the luminance of outputs and inputs after a Gaussian low-pass (sigma 2): the
    layout of light and dark, not the texture a style changes. 1 for an unchanged image."""
    if outputs.shape != inputs.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and inputs {tuple(inputs.shape)} differ in shape")
    a, b = gaussian_blur(luminance(outputs), sigma), gaussian_blur(luminance(inputs), sigma)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = gaussian_blur(a, 1.5), gaussian_blur(b, 1.5)
    var_a = gaussian_blur(a * a, 1.5) - mu_a**2
    var_b = gaussian_blur(b * b, 1.5) - mu_b**2
    cov = gaussian_blur(a * b, 1.5) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim.flatten(1).mean(1)


def edge_map(images: torch.Tensor, sigma: float = 2.0, share: float = 0.1) -> torch.Tensor:
    """(N, 1, H, W) bool: the strongest `share` of Sobel magnitudes of the smoothed luminance."""
    smooth = gaussian_blur(luminance(images), sigma)
    gx, gy = sobel(smooth)
    magnitude = (gx.square() + gy.square()).sqrt().flatten(1)
    threshold = magnitude.quantile(1 - share, dim=1, keepdim=True).clamp_min(1e-3)
    return (magnitude >= threshold).view_as(smooth)


def edge_f1(outputs: torch.Tensor, inputs: torch.Tensor, tolerance: int = 2) -> torch.Tensor:
    """(N,) F1 of the outputs' edges against the inputs' edges, an edge pixel matching within
    `tolerance` pixels."""
    out, ref = edge_map(outputs).float(), edge_map(inputs).float()
    size = 2 * tolerance + 1
    near_ref = F.max_pool2d(ref, size, 1, tolerance)
    near_out = F.max_pool2d(out, size, 1, tolerance)
    precision = (out * near_ref).flatten(1).sum(1) / out.flatten(1).sum(1).clamp_min(1)
    recall = (ref * near_out).flatten(1).sum(1) / ref.flatten(1).sum(1).clamp_min(1)
    return 2 * precision * recall / (precision + recall).clamp_min(1e-12)


# ------------------------------------------------------------------------ cycle, diversity

def cycle_error(reconstructions: torch.Tensor, inputs: torch.Tensor) -> float:
    """Mean absolute difference of reconstructions and inputs, in [0, 1] pixel units."""
    return float((reconstructions.float() - inputs.float()).abs().mean() / 2)


def diversity(features: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """Mean pairwise distance of the outputs' standardised features, relative to that of the
    reference (real target) images: about 1 when outputs vary as much as real ones, near 0
    for collapsed outputs."""
    x, y = _standardised(features, reference, scale)
    return float(mean_pairwise_distance(x) / mean_pairwise_distance(y).clamp_min(1e-12))


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """The mean Euclidean distance between the rows of (N, d) features (float64): their spread."""
    if x.shape[0] < 2:
        raise ValueError(f"a spread needs at least 2 images, got {x.shape[0]}")
    return torch.pdist(x.double()).mean()


def deception_rate(logits: torch.Tensor, gan_mode: str = "lsgan") -> float:
    """Share of images whose mean patch logit the discriminator scores as real (lsgan: above
    0.5, halfway between its fake 0 and real 1 targets; vanilla and hinge: above 0)."""
    threshold = 0.5 if gan_mode == "lsgan" else 0.0
    return float((logits.float().flatten(1).mean(1) > threshold).double().mean())
