"""Is the cycle carried by content or by hidden signal? CycleGAN can meet its cycle loss by
hiding the input in low-amplitude, high-frequency signal of its output that a person cannot see
(Chu, Zhmoginov, Sandler 2017, "CycleGAN, a master of steganography"): the reconstruction is
good while the output does not show the input. Such a code does not survive what a picture
survives. Each perturbation here changes a transferred image less than a person would notice
(a JPEG round-trip at quality 90 without chroma subsampling, 2% Gaussian noise, a
1-pixel blur); the cycle is run again
from the perturbed image, and the reconstruction error compared with the unperturbed one.
A reconstruction carried by visible content barely moves; a large rise means hidden signal.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from culturegan.nn.filters import gaussian_blur
from culturegan.metrics.scores import cycle_error

JPEG_QUALITY = 90
NOISE_STD = 0.02  # of the [0, 1] pixel range
BLUR_SIGMA = 0.7  # pixels: a 1-pixel blur


def jpeg_round_trip(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1], each saved as a JPEG (Pillow's encoder, 4:4:4) and decoded again."""
    decoded = []
    for image in images:
        pixels = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=quality, subsampling=0)
        decoded.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"), dtype=np.float32))
    return (torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2) / 127.5 - 1).to(images.device)


def gaussian_noise(images: torch.Tensor, std: float = NOISE_STD, seed: int = 0) -> torch.Tensor:
    """Images plus seeded Gaussian noise of `std` (in [0, 1] pixel units), clamped to [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32) * (2 * std)
    return (images.float() + noise.to(images.device)).clamp(-1, 1)


def blur(images: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Images blurred by a Gaussian of `sigma` pixels."""
    return gaussian_blur(images.float(), sigma)


PERTURBATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    f"jpeg q{JPEG_QUALITY}": jpeg_round_trip, f"noise {NOISE_STD:.0%}": gaussian_noise, "blur 1 px": blur}


def hidden_signal(back: Callable[[torch.Tensor], torch.Tensor], outputs: torch.Tensor, inputs: torch.Tensor,
                  reconstructions: torch.Tensor | None = None) -> dict:
    """The cycle error of back(outputs) against the inputs, clean and after each perturbation of
    the outputs: {"clean": e, "perturbed": {name: e}, "change": {name: the perturbation's own mean
    |change| of the outputs}, all in [0, 1] pixel units, and "amplification": the largest rise of
    the error over the perturbation's own change, (perturbed - clean) / change: about 1 or less
    when the reconstruction follows what is visible (a copy back scores 1 for noise), far above 1
    when an invisible change moves it}. `reconstructions`: back(outputs), when already computed."""
    if outputs.shape != inputs.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and inputs {tuple(inputs.shape)} differ in shape")
    clean = cycle_error(back(outputs) if reconstructions is None else reconstructions, inputs)
    perturbed, change = {}, {}
    for name, perturb in PERTURBATIONS.items():
        moved = perturb(outputs)
        change[name] = float((moved - outputs.float()).abs().mean() / 2)
        perturbed[name] = cycle_error(back(moved), inputs)
    amplification = max((perturbed[name] - clean) / max(change[name], 1e-12) for name in PERTURBATIONS)
    return {"clean": clean, "perturbed": perturbed, "change": change, "amplification": amplification}
