"""Applying a trained generator: Stylizer (a loaded model, for many images) and stylize() (one
call, for notebooks).

Any image size: the image is reflect-padded to the generator's multiple (4) and cropped back;
with ``tile`` set, images larger than a tile run in overlapping tiles whose instance norm uses
the statistics of the whole image (recorded on a copy downscaled to at most ``stats_pixels``),
so tiles agree and no seam shows. Grayscale inputs run as RGB; an alpha channel is carried
through unchanged. A multi-culture generator can be steered by a reference image or folder
instead of a target culture, and every generator at a strength below 1 (culturegan.transfer.steering).
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from PIL import Image

from culturegan.data import open_image, split_alpha, to_tensor
from culturegan.models.loading import Run, load_run
from culturegan.transfer.steering import check_strength, steer
from culturegan.transfer.tiling import pad_to_multiple, run_tiled_like_whole

MULTIPLE = 4  # two stride-2 convolutions down, two transposed up
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Stylizer:
    """A generator loaded once, applied to (N, 3, H, W) tensors in [-1, 1] or to PIL images.

    Args:
        checkpoint: anything culturegan.models.load_generator reads (a CycleGAN .pth, a converted
            .safetensors, a training run or checkpoint), or the Run load_run read from it.
        target_culture: for multi-culture generators, the culture to transfer to (required
            unless a reference is given); for a two-culture training run, its target (default)
            or its source (which uses the run's reverse generator); files that name no cultures
            take None.
        device: "cuda", "cpu" or None (CUDA when available).
        dtype: "fp32", "bf16" or "fp16" (autocast), or None (bf16 on CUDA, fp32 on the CPU).
        tile, overlap: tile size (a multiple of 4) and overlap in pixels; None runs whole images.
        stats_pixels: the largest pixel count the whole-image statistics pass may take
            (larger images are downscaled for it).
        reference: an image, or a folder of images, whose culture features set a multi-culture
            generator's style code instead of target_culture (a folder: its images' mean code).
        strength: in [0, 1], how far toward the target: 0 returns the input, 1 the plain transfer
            (multi-culture generators interpolate the style code from source_culture's, others
            blend pixels; see culturegan.transfer.steering).
        source_culture: the culture the inputs are in (multi-culture generators, for a strength
            strictly between 0 and 1).
    """

    def __init__(self, checkpoint: str | os.PathLike | Run, target_culture: str | None = None,
                 device: str | None = None, dtype: str | None = None, tile: int | None = None, overlap: int = 64,
                 stats_pixels: int = 1024 * 1024, batch_size: int = 4, reference: str | os.PathLike | None = None,
                 strength: float = 1.0, source_culture: str | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for, but no CUDA device is available")
        dtype = dtype or ("bf16" if self.device.type == "cuda" else "fp32")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if tile is not None and (tile < 16 or tile % MULTIPLE):
            raise ValueError(f"tile must be a multiple of {MULTIPLE} and >= 16, got {tile}")
        self.dtype, self.tile, self.overlap = DTYPES[dtype], tile, overlap
        self.stats_pixels, self.batch_size = stats_pixels, batch_size
        if reference is not None and target_culture is not None:
            raise ValueError("give the target either as target_culture or as a reference, not both")
        run = checkpoint if isinstance(checkpoint, Run) else load_run(checkpoint)
        # a reference replaces the target culture: the default (multi-culture: the only) generator
        name, target_index = run.generator_for(target_culture) if reference is None else (None, None)
        self.model, self.card = run.generator(name, device=self.device)
        self.steering = steer(run, self.model, target_index, reference, strength, source_culture)

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _network(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        if style is None:
            return self.model(x)
        return self.model.render(x, style.expand(x.shape[0], -1))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1], any H and W -> the transferred images, same shape, float32."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point in [-1, 1], got {images.dtype}")
        images = images.to(self.device, torch.float32)
        padded, (height, width) = pad_to_multiple(images, MULTIPLE)
        with self._autocast():
            output = self._steered(padded)
        return output[..., :height, :width].clamp(-1, 1)

    def _steered(self, x: torch.Tensor) -> torch.Tensor:
        """x transferred at the steering's strength (the formulas: culturegan.transfer.steering)."""
        steering = self.steering
        if steering.strength == 0:
            return x
        if steering.own is None:  # strength 1, or a generator without codes: (1 - s) x + s G(x), G(x) at s = 1
            return torch.lerp(x, self._render(x, steering.target), steering.strength)
        style = torch.lerp(steering.own, steering.target, steering.strength)
        reconstruction_error = x - self._render(x, steering.own)
        return self._render(x, style) + (1 - steering.strength) * reconstruction_error

    def _render(self, x: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """The generator's output for x under `style` (None: a generator without codes), whole or
        in tiles; each call records its own whole-image statistics, which depend on the style."""
        network = functools.partial(self._network, style=style)
        if self.tile is None or max(x.shape[-2:]) <= self.tile:
            return network(x).float()
        return torch.cat([run_tiled_like_whole(self.model, network, image[None], self.tile, self.overlap,
                                               self.stats_pixels, self.batch_size, MULTIPLE) for image in x])

    def image(self, picture: Image.Image, size: int | None = None) -> Image.Image:
        """A PIL image transferred: RGB, or RGBA with the input's alpha channel unchanged.
        `size` resizes it first so that its shorter side is `size` pixels."""
        rgb, alpha = split_alpha(picture)
        if size is not None:
            rgb, alpha = (_resized(part, size) if part is not None else None for part in (rgb, alpha))
        output = self(to_tensor(rgb)[None])[0]
        pixels = ((output + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
        result = Image.fromarray(pixels, "RGB")
        if alpha is not None:
            result.putalpha(alpha)
        return result


def _resized(image: Image.Image, size: int) -> Image.Image:
    scale = size / min(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.LANCZOS)


@functools.lru_cache(maxsize=4)
def _cached(checkpoint: str, target: str | None, device: str | None, dtype: str | None, reference: str | None,
            strength: float, source: str | None) -> Stylizer:
    return Stylizer(checkpoint, target, device, dtype, reference=reference, strength=strength, source_culture=source)


def stylize(image, checkpoint: str | os.PathLike, target_culture: str | None = None, device: str | None = None,
            dtype: str | None = None, size: int | None = None, reference: str | os.PathLike | None = None,
            strength: float = 1.0, source_culture: str | None = None):
    """Transfers one image: a PIL image or a file path gives a PIL image; a (3, H, W) or
    (N, 3, H, W) tensor in [-1, 1] gives a tensor. reference, strength and source_culture are
    Stylizer's. The model (and the reference's code) stay loaded for later calls with the same
    arguments."""
    stylizer = _cached(str(checkpoint), target_culture, device, dtype, None if reference is None else str(reference),
                       check_strength(strength), source_culture)
    if isinstance(image, (str, os.PathLike)):
        image = open_image(Path(image))
    if isinstance(image, Image.Image):
        return stylizer.image(image, size)
    if not torch.is_tensor(image):
        raise TypeError(f"stylize takes a PIL image, a path or a tensor, got {type(image).__name__}")
    if size is not None:
        raise ValueError("size applies to PIL images and files; resize tensors before calling")
    return stylizer(image[None])[0] if image.dim() == 3 else stylizer(image)
