"""Images from a StyleGAN2 generator, one per seed, as NVlabs' generate.py makes them.

    from culturegan.transfer.generate import generate_images, parse_seeds
    paths = generate_images("ffhq.pkl", parse_seeds("0-7"), "faces/", truncation_psi=0.7)

The generator is anything load_generator reads as a StyleGAN2 generator: an NVlabs snapshot
(its G_ema unless network="G"), a converted .safetensors, a state_dict of our Generator. Seed s
draws z = np.random.RandomState(s).randn(1, z_dim) and its image maps [-1, 1] to 8 bits as
``x * 127.5 + 128``, clamped and truncated, both as NVlabs do, so a seed gives the image NVlabs'
generate.py gives for the same network (up to float rounding between their ops and ours).
noise_mode 'random' draws its noise from torch's generator seeded with s, so a seed gives one
image, run after run, in every noise mode. Each image is made alone (batch 1), so it does not
depend on the other seeds asked for.

The output folder gets seed{s:04d}.png per seed and grid.png (the first GRID_TILES images, in seed
order, in a near-square grid), all at once or not at all (atomic_directory). An existing folder
is replaced only when it holds nothing but such images, from an earlier run.
"""

from __future__ import annotations

import collections
import math
import numbers
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from culturegan._files import atomic_directory
from culturegan._progress import progress_bar
from culturegan.data.images import TileGrid
from culturegan.models.loading import STYLEGAN2_GENERATOR, load_generator
from culturegan.models.stylegan2 import NOISE_MODES

SEED_LIMIT = 2 ** 32  # numpy's RandomState takes seeds 0 .. 2**32 - 1
MAX_SEEDS = 100_000  # images per call: a mistyped range (0-4294967295) fails at once, not out of memory
GRID_NAME = "grid.png"
GRID_TILES = 64  # grid.png's images: 8 x 8, 200 MB of pixels at 1024 px (all of MAX_SEEDS would be 300 GB)
OUTPUT_NAME = re.compile(r"seed\d{4,}\.png|grid\.png")  # what this module writes into a folder
_SEED_ITEM = re.compile(r"\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?")  # "7" or "0-7"
IMAGE_CHANNELS = (1, 3)  # grey and RGB PNGs


def parse_seeds(text: str) -> list[int]:
    """"0-7,10,12" -> [0, 1, ..., 7, 10, 12]; ValueError for a malformed item, a range that runs
    backwards, a seed outside 0 .. 2**32 - 1, a seed given twice, or more than MAX_SEEDS seeds."""
    seeds = []
    for item in text.split(","):
        match = _SEED_ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"seeds {text!r}: {item.strip()!r} is neither a seed nor a range A-B of seeds")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if last < first:
            raise ValueError(f"seeds {text!r}: the range {item.strip()} runs backwards")
        _check_seed(first)
        _check_seed(last)
        if len(seeds) + last - first >= MAX_SEEDS:
            raise ValueError(f"seeds {text!r} ask for more than {MAX_SEEDS:,} images at once")
        seeds.extend(range(first, last + 1))
    return check_seeds(seeds)


def check_seeds(seeds: Iterable[int]) -> list[int]:
    """The seeds as a list, or a ValueError naming one out of range or repeated."""
    seeds = list(seeds)
    if not 0 < len(seeds) <= MAX_SEEDS:
        raise ValueError(f"{len(seeds):,} seeds given; generate makes 1 to {MAX_SEEDS:,} images at once")
    for seed in seeds:
        _check_seed(seed)
    repeated = sorted(seed for seed, count in collections.Counter(seeds).items() if count > 1)
    if repeated:
        raise ValueError(f"seeds {repeated[:8]} are given more than once")
    return [int(seed) for seed in seeds]


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed {seed!r} is out of range: seeds are integers from 0 to {SEED_LIMIT - 1}")


def generate_images(checkpoint: str | os.PathLike, seeds: Iterable[int], out: str | os.PathLike,
                    truncation_psi: float = 1.0, noise_mode: str = "const", class_index: int | None = None,
                    network: str | None = None, device: str | None = None, grid: bool = True,
                    progress: bool = True) -> list[Path]:
    """Writes seed{s:04d}.png for every seed (and grid.png of the first GRID_TILES) into the
    folder `out`, all or none (see the module docstring); returns the paths written.
    truncation_psi 1 is no truncation; class_index picks the class of a conditional generator;
    network G_ema (default) or G of a snapshot; device "cuda" (the default when there is one) or
    "cpu"."""
    seeds = check_seeds(seeds)
    _check_settings(truncation_psi, noise_mode)
    out = Path(out)
    _check_output(out)
    generator, _ = load_stylegan2(checkpoint, device, "generate renders StyleGAN2 generators", network)
    check_image_channels(generator, checkpoint)
    labels = class_labels(generator, class_index)
    with atomic_directory(out) as folder:
        canvas = _grid_canvas(generator, len(seeds)) if grid else None
        for index, seed in enumerate(progress_bar(seeds, enabled=progress, unit="image")):
            image = render(generator, seed, truncation_psi, noise_mode, labels)
            Image.fromarray(image).save(folder / seed_file_name(seed))
            if canvas is not None and index < canvas.count:
                canvas.paste(index, image)
        if canvas is not None:
            Image.fromarray(canvas.pixels).save(folder / GRID_NAME)
    return [out / seed_file_name(seed) for seed in seeds] + ([out / GRID_NAME] if grid else [])


def seed_file_name(seed: int) -> str:
    return f"seed{seed:04d}.png"  # NVlabs' generate.py's names


@torch.no_grad()
def render(generator: torch.nn.Module, seed: int, truncation_psi: float = 1.0, noise_mode: str = "const",
           labels: torch.Tensor | None = None) -> np.ndarray:
    """The (H, W) or (H, W, C) uint8 image of `seed` (see the module docstring); labels (1,
    c_dim) for a conditional generator."""
    device = next(generator.parameters()).device
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, generator.z_dim)).to(device, torch.float32)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the noise of noise_mode 'random'
        image = generator(z, labels, truncation_psi=truncation_psi, noise_mode=noise_mode)
    return to_pixels(image)


def to_pixels(image: torch.Tensor) -> np.ndarray:
    """The (H, W) or (H, W, C) uint8 pixels of a generator's image (1, C, H, W): NVlabs' x * 127.5 +
    128, clamped and truncated."""
    pixels = (image.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def _grid_canvas(generator: torch.nn.Module, count: int) -> TileGrid:
    """The near-square canvas of grid.png, for the first GRID_TILES of `count` images (black where
    the last row has no image)."""
    size = generator.img_resolution
    shape = (size, size) if generator.img_channels == 1 else (size, size, generator.img_channels)
    return TileGrid.near_square(min(count, GRID_TILES), shape)


def load_stylegan2(checkpoint: str | os.PathLike, device: str | None, refusal: str,
                   network: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(generator, card) of the StyleGAN2 generator in `checkpoint` (a file or run load_generator
    reads; `network` G_ema or G of a snapshot) on `device` (None: default_device()). Any other
    generator has no mapping network, hence no latent space: ValueError ending in `refusal`
    ("<command> takes StyleGAN2 generators")."""
    device = device or default_device()
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA device is available")
    generator, card = load_generator(checkpoint, network, device=device)
    if card["architecture"]["kind"] != STYLEGAN2_GENERATOR:
        raise ValueError(f"{checkpoint} holds a {card['description']}, which has no mapping network; {refusal}")
    return generator, card


def check_image_channels(generator: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """The generator's images can be written: grey or RGB."""
    if generator.img_channels not in IMAGE_CHANNELS:
        raise ValueError(f"{checkpoint} makes {generator.img_channels}-channel images; images are written with 1 "
                         "(grey) or 3 (RGB) channels")


def _check_settings(truncation_psi: float, noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise mode {noise_mode!r} is not one of {', '.join(NOISE_MODES)}")
    if isinstance(truncation_psi, bool) or not isinstance(truncation_psi, (int, float)) or not math.isfinite(
            truncation_psi):
        raise ValueError(f"truncation must be a finite number (1: none, 0.7: NVlabs' usual), got {truncation_psi!r}")


def _check_output(out: Path) -> None:
    """`out` may be replaced: it is new, or a folder of this module's images only."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file, not a folder")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if not (p.is_file() and OUTPUT_NAME.fullmatch(p.name)))
        if others:
            raise ValueError(f"output folder {out} holds other files ({', '.join(others[:5])}); generate replaces "
                             "the whole folder: choose a new or empty one")


def class_labels(generator: torch.nn.Module, class_index: int | None) -> torch.Tensor | None:
    """The one-hot label (1, c_dim) of class_index, or None for an unconditional generator."""
    if generator.c_dim == 0:
        if class_index is not None:
            raise ValueError(f"class {class_index} was given, but this generator is unconditional")
        return None
    if class_index is None:
        raise ValueError(f"this generator is conditional on {generator.c_dim} classes: give a class (0 to "
                         f"{generator.c_dim - 1})")
    if isinstance(class_index, bool) or not isinstance(class_index, numbers.Integral):  # numpy's integers are
        raise ValueError(f"class {class_index!r} is not a class index (an integer from 0 to {generator.c_dim - 1})")
    if not 0 <= class_index < generator.c_dim:
        raise ValueError(f"class {int(class_index)} is out of range: this generator has classes 0 to "
                         f"{generator.c_dim - 1}")
    labels = torch.zeros(1, generator.c_dim, device=next(generator.parameters()).device)
    labels[0, int(class_index)] = 1
    return labels


def default_device() -> str:
    """CUDA where there is a GPU, else the CPU (generate's and blend's default)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["GRID_TILES", "check_image_channels", "check_seeds", "class_labels", "default_device", "generate_images",
           "load_stylegan2", "parse_seeds", "render", "seed_file_name", "to_pixels"]
