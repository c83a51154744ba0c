"""Training state that a resumed run needs beside the models and optimisers: the image pools
and the sample stream (checkpoints themselves: culturegan.models.checkpoints)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): once full, each new image
    is returned as is or, with probability 1/2, swapped for a stored older one. Images may
    carry a label (their target culture), which travels with them."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.images, self.labels = size, rng, [], []

    def query(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """The images to show the discriminator (and their labels, when labels are given)."""
        images = images.detach()
        if self.size == 0:
            return images if labels is None else (images, labels)
        carried = labels if labels is not None else images.new_zeros(len(images), dtype=torch.long)
        chosen = list(zip(images, carried))
        for position, entry in enumerate(chosen):
            if len(self.images) < self.size:
                self.images.append(entry[0].clone())
                self.labels.append(entry[1].clone())
            elif self.rng.random() < 0.5:
                index = self.rng.randrange(self.size)
                chosen[position] = (self.images[index].clone(), self.labels[index].clone())
                self.images[index], self.labels[index] = entry[0].clone(), entry[1].clone()
        out = torch.stack([image for image, _ in chosen])
        return out if labels is None else (out, torch.stack([label for _, label in chosen]))

    def state(self) -> dict[str, torch.Tensor]:
        return {"images": torch.stack(self.images).cpu(), "labels": torch.stack(self.labels).cpu()} \
            if self.images else {}

    def restore(self, state: dict[str, torch.Tensor], device) -> None:
        self.images = [image.to(device) for image in state.get("images", ())]
        self.labels = [label.to(device) for label in state.get("labels", ())]


class SampleStream(Sampler):
    """An endless stream of (epoch, index) pairs: each epoch a seeded permutation, of which rank
    r of w takes every w-th element. Starting at `position` (samples this rank already drew)
    resumes the stream exactly."""

    def __init__(self, size: int, seed: int, position: int = 0, rank: int = 0, world: int = 1):
        self.size, self.seed, self.position, self.rank, self.world = size, seed, position, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_epoch = len(range(self.rank, self.size, self.world))
        epoch, offset = divmod(self.position, per_epoch)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            for index in order[self.rank::self.world][offset:].tolist():
                yield epoch, index
            epoch, offset = epoch + 1, 0
