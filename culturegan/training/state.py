"""Training state that a resumed run needs: the image pools, the sample stream, checkpoints.

Checkpoints are directories ``step-00001000/`` holding ``state.safetensors`` (every tensor:
model weights, optimiser moments, image pools, RNG states) and ``state.json`` (everything
else: step, configuration, optimiser hyper-parameters, schedulers, Python RNG). A checkpoint is
written into a temporary directory and renamed when complete, so a run killed mid-write
leaves the previous checkpoints intact; only the last `keep_last` are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Sampler

from culturegan.models.weights import load_weights

FORMAT_VERSION = 1


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


def save_checkpoint(directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep_last: int) -> Path:
    final = directory / f"step-{step:08d}"
    temporary = directory / f".step-{step:08d}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(temporary / "state.safetensors"))
    (temporary / "state.json").write_text(json.dumps({"format_version": FORMAT_VERSION, "step": step, **meta},
                                                     indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    for old in sorted(directory.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    complete = sorted(p for p in directory.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        meta = json.loads((path / "state.json").read_text())
        tensors = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError, SafetensorError) as error:
        raise ValueError(f"{path}: not a readable culturegan checkpoint ({error})") from error
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    return tensors, meta


def subset(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], name: str, path: Path) -> None:
    """module's weights from a checkpoint's `name.*` tensors, or an error listing what does not fit."""
    load_weights(module, subset(tensors, name), f"{path} ({name})")
