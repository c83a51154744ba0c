"""Which feature groups tell a dataset's cultures apart: nearest-profile classification.

An image is assigned to the culture whose profile is nearest (Mahalanobis distance of one
group, or the sum of the groups' distances each divided by the root of its length). A group
separates the cultures when images it never saw while fitting the profiles land in their own
culture: ``separation`` measures that by k-fold cross-validation, for every group and for all
of them together, with the confusion matrices. A nearest-centroid rule on low-dimensional
statistics is deliberately simple: fitted on small culture sets it generalises where
high-dimensional classifiers over-fit.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from culturegan.culture.features import GROUPS, CultureFeatures
from culturegan.culture.profile import CultureProfile, folder_features

ALL = "all"


def distances(features: CultureFeatures, profiles: list[CultureProfile], group: str = ALL) -> torch.Tensor:
    """(N, K) distance of each image to each profile, in one group or in all (each group's
    Mahalanobis distance divided by the root of its length, then summed)."""
    groups = GROUPS if group == ALL else (group,)
    if group != ALL and group not in GROUPS:
        raise ValueError(f"unknown feature group {group!r}; expected one of {', '.join(GROUPS)} or {ALL!r}")
    columns = []
    for profile in profiles:
        total = 0
        for g in groups:
            total = total + profile.distance(features, g) / math.sqrt(getattr(features, g).shape[1])
        columns.append(total)
    return torch.stack(columns, dim=1)


def classify(features: CultureFeatures, profiles: list[CultureProfile], group: str = ALL) -> torch.Tensor:
    """(N,) index of the nearest profile of each image."""
    return distances(features, profiles, group).argmin(dim=1)


@dataclasses.dataclass
class Separation:
    """Cross-validated nearest-profile accuracy per group ("colour", "texture", "line", "all")
    and confusion matrices (rows: true culture, columns: assigned culture)."""

    cultures: list[str]
    accuracy: dict[str, float]
    confusion: dict[str, torch.Tensor]

    def table(self) -> str:
        lines = [f"{'group':8} accuracy   (chance {1 / len(self.cultures):.2f}, {len(self.cultures)} cultures)"]
        lines += [f"{group:8} {value:.3f}" for group, value in self.accuracy.items()]
        return "\n".join(lines)


def separation(features: dict[str, CultureFeatures], folds: int = 2, seed: int = 0) -> Separation:
    """k-fold cross-validated nearest-profile classification of every culture's images
    (`features`: culture name -> its images' features, at least 2 * folds images each)."""
    if len(features) < 2:
        raise ValueError(f"separation needs at least 2 cultures, got {list(features)}")
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    names = list(features)
    generator = torch.Generator().manual_seed(seed)
    assignments = {}
    for name in names:
        count = features[name].colour.shape[0]
        if count < 2 * folds:
            raise ValueError(f"culture {name!r} has {count} images; {folds}-fold separation needs at least "
                             f"{2 * folds}")
        assignments[name] = torch.randperm(count, generator=generator) % folds
    confusion = {g: torch.zeros(len(names), len(names), dtype=torch.long) for g in (*GROUPS, ALL)}
    for fold in range(folds):
        profiles = [CultureProfile.fit(name, _select(features[name], assignments[name] != fold)) for name in names]
        for truth, name in enumerate(names):
            held_out = _select(features[name], assignments[name] == fold)
            for group, matrix in confusion.items():
                matrix[truth] += torch.bincount(classify(held_out, profiles, group), minlength=len(names))
    accuracy = {g: float(m.diagonal().sum() / m.sum()) for g, m in confusion.items()}
    return Separation(names, accuracy, confusion)


def _select(features: CultureFeatures, mask: torch.Tensor) -> CultureFeatures:
    return CultureFeatures(**{g: getattr(features, g)[mask] for g in GROUPS})


def folder_separation(root, cultures: list[str] | None = None, size: int = 128, folds: int = 2,
                      manifest=None, progress: bool = True) -> Separation:
    """separation() of a dataset's culture folders (default: all of them); `progress`: a bar
    per folder while its features are extracted, on a terminal."""
    from culturegan.data.clean import find_cultures

    names = cultures or [folder.name for folder in find_cultures(root)]
    return separation({name: folder_features(root, name, size, manifest=manifest, progress=progress)
                       for name in names}, folds)
