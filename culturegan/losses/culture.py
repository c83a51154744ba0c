"""The culture loss: how far generated images are from the target culture's profile.

    L_culture = lambda_culture * sum_g w_g * mean_n max(0, distance_g(features_g(G(x)_n), profile_g) / sqrt(d_g) - 1)

over the feature groups (colour, texture, line) with per-group weights; lambda_culture = 0
turns it off (for ablations). The distance is the profile's Mahalanobis distance, so each
group counts in units of the culture's own spread; dividing by the root of the group's length
d_g (the distance a typical image of the culture has) puts every group, whatever its length, on
the scale of about 1 for an image of the culture, beside the adversarial and cycle terms.

Only the distance beyond that of a typical image of the culture is charged (the hinge at 1): an
output that already looks like a member of the culture is free to differ from the culture's
mean. Charging the whole distance pulls every output toward the one mean feature vector, the
same colours, texture and edge statistics for every photo: one picture for all inputs.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from culturegan.culture import GROUPS, CultureFeatureExtractor, CultureProfile


TYPICAL_DISTANCE = 1.0  # a culture's own images lie about this far (per root feature) from its mean


@dataclasses.dataclass(frozen=True)
class CultureLossWeights:
    culture: float = 1.0  # lambda_culture; 0 disables the loss
    colour: float = 1.0
    texture: float = 1.0
    line: float = 1.0

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"culture loss weight {name} must be a finite number >= 0, got {value}")


class CultureLoss(torch.nn.Module):
    """Culture loss of a batch of generated images against one target culture's profile (or,
    with ``profiles`` and ``targets``, each image against its own target culture)."""

    def __init__(self, weights: CultureLossWeights = CultureLossWeights(),
                 extractor: CultureFeatureExtractor | None = None):
        super().__init__()
        self.weights = weights
        self.extractor = extractor or CultureFeatureExtractor()

    def forward(self, images: torch.Tensor, profiles: CultureProfile | list[CultureProfile],
                targets: torch.Tensor | None = None) -> torch.Tensor:
        if self.weights.culture == 0:
            return images.new_zeros(())
        profiles = [profiles] if isinstance(profiles, CultureProfile) else list(profiles)
        if targets is None:
            if len(profiles) != 1:
                raise ValueError("several profiles need `targets`: each image's target culture index")
            targets = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        if targets.shape != (images.shape[0],) or int(targets.max()) >= len(profiles) or int(targets.min()) < 0:
            raise ValueError(f"targets must be (N,) indices into the {len(profiles)} profiles, got "
                             f"{tuple(targets.shape)} with values {targets.tolist()}")
        features = self.extractor(images)
        total = images.new_zeros(())
        for group in GROUPS:
            weight = getattr(self.weights, group)
            if weight == 0:
                continue
            distances = torch.zeros(images.shape[0], device=images.device, dtype=features.colour.dtype)
            for index, profile in enumerate(profiles):
                mask = targets == index
                if mask.any():
                    distances = torch.where(mask, profile.distance(features, group), distances)
            excess = distances / math.sqrt(getattr(features, group).shape[1]) - TYPICAL_DISTANCE
            total = total + weight * excess.clamp_min(0).mean()
        return self.weights.culture * total
