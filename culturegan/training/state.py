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

FORMAT_VERSION = 1


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): once full, each new image
    is returned as is or, with probability 1/2, swapped for a stored older one."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.images = size, rng, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self.rng.random() < 0.5:
                index = self.rng.randrange(self.size)
                out.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> torch.Tensor | None:
        return torch.stack(self.images).cpu() if self.images else None

    def restore(self, stacked: torch.Tensor | None, device) -> None:
        self.images = [] if stacked is None else [image.to(device) for image in stacked]


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
    """module's weights from a checkpoint, or an error listing what does not match."""
    state = subset(tensors, name)
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: checkpoint's {name} does not fit this model (another architecture?): "
                         f"missing {missing[:8]}, unexpected {unexpected[:8]}, other shapes {wrong[:8]}")
    module.load_state_dict(state)
