"""The held-out evaluation during training (TrainConfig.eval_every): the images of eval_data,
loaded once, and the measures of the current generator's outputs on them, taken by the measuring
core `culturegan evaluate` uses (culturegan.metrics.measure_transfer) and cut to the numbers a run
logs (culturegan.metrics.headline). Left out, to keep it cheap: the cycle checks (they transfer
every output back once per perturbation, and need a reverse generator) and the Fréchet distances
(eigendecompositions per feature group; the KIDs are logged).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from culturegan import metrics
from culturegan.data import find_cultures, load_images
from culturegan.training.config import TrainConfig

BATCH = 16  # held-out images per generator call


def held_out_cultures(config: TrainConfig, trained: list[str]) -> list[str]:
    """The culture folders of config.eval_data, checked: the measured direction's source and
    target must be among them and among the run's `trained` cultures."""
    cultures = [folder.name for folder in find_cultures(config.eval_data)]
    direction = (config.source, config.target)
    untrained = [c for c in direction if c not in trained]
    if untrained:
        raise ValueError(f"eval_every: the run trains on {trained}, not on {untrained} (source and target name the "
                         "direction the held-out evaluation measures)")
    missing = [c for c in direction if c not in cultures]
    if missing:
        raise ValueError(f"eval_data {config.eval_data} has no folder for {missing} (it has {cultures})")
    return cultures


class HeldOutSet:
    """The first eval_count images of every culture of eval_data at the training crop size: the
    source's are transferred, the target's are the real images the outputs are compared with, and
    all of them fit the culture classifiers, as `culturegan evaluate` uses its reference set."""

    def __init__(self, config: TrainConfig, cultures: list[str]):
        self.source, self.target = config.source, config.target
        self.images = {c: load_images(config.eval_data, c, config.crop_size, config.eval_count) for c in cultures}
        small = {c: len(images) for c, images in self.images.items() if len(images) < 2}
        if small:
            raise ValueError(f"eval_data {config.eval_data}: the held-out evaluation needs at least 2 images per "
                             f"culture, found {small}")

    def evaluate(self, transfer: Callable[[torch.Tensor], torch.Tensor], device: torch.device) -> dict[str, float]:
        """The headline measures of transfer(source images), computed on `device`."""
        inputs = self.images[self.source]
        outputs = torch.cat([transfer(part).float().cpu() for part in inputs.split(BATCH)])
        results = metrics.measure_transfer(inputs, outputs, self.images[self.target], self.images, self.source,
                                           self.target, device=device, frechet=False)
        return metrics.headline(results)
