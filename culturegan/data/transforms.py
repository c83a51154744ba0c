"""Augmentation of culture images, as the research lists it, every parameter configurable.

Defaults are CycleGAN's (``--preprocess resize_and_crop``: load 286, crop 256, horizontal
flip); rotation, scale and colour jitter are off unless asked for. The transforms work on PIL
images with a per-sample random.Random, so a seed reproduces an epoch exactly, in any number
of DataLoader workers.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch
from PIL import Image, ImageEnhance

from culturegan.data.images import to_tensor


@dataclasses.dataclass(frozen=True)
class Augment:
    load_size: int = 286  # the shorter side is resized to this first
    crop_size: int = 256  # then a square crop of this side
    random_crop: bool = True  # where the crop lies: random, or the centre (evaluation, profiles)
    flip: bool = True  # horizontal flip with probability 1/2
    rotation: float = 0.0  # uniform in [-rotation, rotation] degrees (reflect-filled borders)
    scale: tuple[float, float] = (1.0, 1.0)  # the load size is multiplied by a uniform factor in this range
    brightness: float = 0.0  # factors uniform in [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0  # shift uniform in [-hue, hue] of a full turn, hue <= 0.5

    def __post_init__(self):
        if self.crop_size < 1 or self.load_size < self.crop_size:
            raise ValueError(f"need 1 <= crop_size <= load_size, got crop_size={self.crop_size}, "
                             f"load_size={self.load_size}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range (low, high) with 0 < low <= high, got {self.scale}")
        for name in ("rotation", "brightness", "contrast", "saturation", "hue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.hue > 0.5:
            raise ValueError(f"hue must be <= 0.5 (half a turn), got {self.hue}")

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        """The augmented image as a (3, crop, crop) float32 tensor in [-1, 1]."""
        image = self._resize(image, rng)
        if self.rotation:
            image = _rotate_reflect(image, rng.uniform(-self.rotation, self.rotation))
        if self.random_crop:
            left = rng.randint(0, image.width - self.crop_size)
            top = rng.randint(0, image.height - self.crop_size)
        else:
            left, top = (image.width - self.crop_size) // 2, (image.height - self.crop_size) // 2
        image = image.crop((left, top, left + self.crop_size, top + self.crop_size))
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(self._jitter(image, rng))

    def _resize(self, image: Image.Image, rng: random.Random) -> Image.Image:
        side = max(self.crop_size, round(self.load_size * rng.uniform(*self.scale)))
        width, height = image.size
        ratio = side / min(width, height)
        size = (max(side, round(width * ratio)), max(side, round(height * ratio)))
        return image.resize(size, Image.Resampling.BICUBIC)

    def _jitter(self, image: Image.Image, rng: random.Random) -> Image.Image:
        for amount, enhancer in ((self.brightness, ImageEnhance.Brightness), (self.contrast, ImageEnhance.Contrast),
                                 (self.saturation, ImageEnhance.Color)):
            if amount:
                image = enhancer(image).enhance(rng.uniform(max(0.0, 1 - amount), 1 + amount))
        if self.hue:
            hsv = np.asarray(image.convert("HSV")).copy()
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(rng.uniform(-self.hue, self.hue) * 256)) % 256
            image = Image.fromarray(hsv, "HSV").convert("RGB")
        return image


def _rotate_reflect(image: Image.Image, degrees: float) -> Image.Image:
    """Rotation whose corners show the mirrored image, not black wedges (which a culture's
    colour statistics would learn)."""
    width, height = image.size
    padded = np.pad(np.asarray(image), ((height // 2, height // 2), (width // 2, width // 2), (0, 0)), mode="reflect")
    rotated = Image.fromarray(padded).rotate(degrees, resample=Image.Resampling.BILINEAR)
    return rotated.crop((width // 2, height // 2, width // 2 + width, height // 2 + height))
