"""CultureImages: the images of a culture dataset (ROOT/<culture>/<images>) as a torch Dataset,
and the DataLoader that serves them on one device or under DistributedDataParallel."""

from __future__ import annotations

import json
import random
import signal
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from culturegan.data.clean import find_cultures
from culturegan.data.images import ImageReadError, is_image_file, open_rgb
from culturegan.data.transforms import Augment


class CultureImages(Dataset):
    """Items are dicts: ``image`` (3, crop, crop) in [-1, 1], ``culture`` (its index in
    ``self.cultures``) and ``path``.

    Args:
        root: the dataset folder.
        cultures: the culture names to use (default: every sub-folder); unknown names raise.
        manifest: a `culturegan data clean` manifest: only its kept files are used.
        augment: the augmentation (CycleGAN's defaults).
        seed: with the epoch (``set_epoch``) and the index, seeds each item's augmentation.

    A file that turns out unreadable when loaded is skipped with a warning (the next readable
    item is served instead), never a crash; a dataset with nothing readable raises.
    """

    def __init__(self, root, cultures: list[str] | None = None, manifest=None, augment: Augment = Augment(),
                 seed: int = 0):
        self.root = Path(root)
        available = [folder.name for folder in find_cultures(self.root)]
        unknown = sorted(set(cultures or ()) - set(available))
        if unknown:
            raise ValueError(f"unknown culture(s) {', '.join(unknown)} in {self.root}; it has: {', '.join(available)}")
        self.cultures = list(cultures or available)
        self.items = self._list(manifest)
        empty = [c for c in self.cultures if not any(label == self.cultures.index(c) for _, label in self.items)]
        if empty:
            raise ValueError(f"culture folder(s) {', '.join(empty)} in {self.root} hold no usable image")
        self.augment, self.seed, self.epoch = augment, seed, 0
        self._unreadable: set[int] = set()

    def _list(self, manifest) -> list[tuple[Path, int]]:
        if manifest is not None:
            kept = json.loads(Path(manifest).read_text())["cultures"]
            return [(self.root / path, index) for index, culture in enumerate(self.cultures)
                    for path in kept.get(culture, [])]
        return [(path, index) for index, culture in enumerate(self.cultures)
                for path in sorted(p for p in (self.root / culture).rglob("*") if is_image_file(p))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        """Item `index`, augmented for the dataset's epoch; or, for an (epoch, index) pair (what
        culturegan.training's sampler yields), for that epoch."""
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        for offset in range(len(self.items)):
            candidate = (index + offset) % len(self.items)
            if candidate in self._unreadable:
                continue
            path, label = self.items[candidate]
            try:
                image, _ = open_rgb(path)
            except ImageReadError as error:
                self._unreadable.add(candidate)
                warnings.warn(f"skipping {error}", RuntimeWarning, stacklevel=2)
                continue
            rng = random.Random(hash((self.seed, epoch, candidate)))
            return {"image": self.augment(image, rng), "culture": label, "path": str(path)}
        raise RuntimeError(f"no readable image left in {self.root}")


def centre_cropped(root, culture: str, size: int, manifest=None) -> CultureImages:
    """One culture folder's images without random augmentation: the shorter side resized to
    `size`, the centre square kept (for culture profiles and evaluation)."""
    return CultureImages(root, [culture], manifest,
                         Augment(load_size=size, crop_size=size, flip=False, random_crop=False))


def load_images(root, culture: str, size: int, count: int | None = None) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1]: a culture folder's images, shorter side resized to `size`
    and centre-cropped, in file order (the first `count`)."""
    images = centre_cropped(root, culture, size)
    total = len(images) if count is None else min(count, len(images))
    # its own generator: a loader without one draws its seed from the global RNG, which would move
    # a training run's random stream (the trainer loads its held-out images this way)
    batches = DataLoader(torch.utils.data.Subset(images, range(total)), batch_size=16, generator=torch.Generator())
    return torch.cat([batch["image"] for batch in batches])


def ignore_stop_signals(worker_id: int) -> None:
    """A DataLoader worker's init: ignore SIGTERM and SIGINT. A batch scheduler sends SIGTERM to
    every process of a job, a terminal's Ctrl-C sends SIGINT to its whole process group, and
    `timeout` signals its group: a worker killed by one makes the main process fail ("DataLoader
    worker is killed by signal") before it can save the checkpoint the signal asks for. The main
    process shuts its workers down itself, and they exit when it is gone; a worker that hangs
    takes SIGKILL (DataLoader's own last resort, SIGTERM, no longer stops it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: Dataset, batch_size: int, workers: int = 4, shuffle: bool = True, seed: int = 0,
                drop_last: bool = True, shard: bool = True) -> DataLoader:
    """A DataLoader with worker processes, pinned memory when CUDA is there, and, with `shard`, a
    DistributedSampler (each rank its share) when torch.distributed is initialised; shard=False
    gives every rank every item (statistics that every rank must agree on)."""
    sampler = None
    if shard and torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last, generator=generator,
                      persistent_workers=workers > 0, worker_init_fn=ignore_stop_signals)
