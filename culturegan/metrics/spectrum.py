"""Periodic artifacts: regular high-frequency patterns (dot grids, lattices, checkerboards) show
as isolated peaks in the power spectrum (Durall et al., CVPR 2020, "Watch your up-convolution").

Such patterns are often local (a lattice where the sun was, a grid over the sky only), and in
the spectrum of a whole image a local pattern is a broad, faint bump. So the spectrum is taken
over PATCH x PATCH windows (half-overlapping, Hann-windowed, mean removed) at the image's own
resolution (up-sampling artifacts live at pixel periods 2 to 8; a patch of 32 puts periods up to
8 at least 4 bins from the origin, clear of the low-frequency slope a median window would see),
each patch's power normalised to one in the high band (frequencies above HIGH_BAND of Nyquist:
periods below 8 pixels), and averaged over every patch of a set (or of one image): a pattern
that recurs stays at its frequencies and adds up, while edges fall at other angles each time
and spread out. Flat patches (no high-band power) are left out.

A frequency is a peak when its mean power exceeds PEAK_FACTOR times its background, the larger
of the medians of its horizontal and of its vertical neighbours (PEAK_WINDOW bins, wrapped): an
isolated peak stands above both, while the line through the origin that a straight edge draws
(and the 1/f fall-off) is matched by one of them. The score is the share of the high band's
power that lies above the background at peaks. Compare it with real images of the target
culture (periodic_artifact_ratio), not with an absolute threshold: woven textiles have real
periodic structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.nn.filters import luminance

PATCH = 32
HIGH_BAND = 0.25  # of the Nyquist frequency
PEAK_FACTOR = 2.0
PEAK_WINDOW = 7
SHARE_FLOOR = 0.01  # peak shares below 1% of the high band's power compare as 1%
FLAT = 1e-10  # high-band power (luminance in [0, 1]) below which a patch counts as flat


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    if min(images.shape[-2:]) < PATCH:
        raise ValueError(f"periodic artifacts need images of at least {PATCH} x {PATCH} pixels, got "
                         f"{tuple(images.shape[-2:])}")


def _high_band(device: torch.device) -> torch.Tensor:
    """(PATCH, PATCH) bool over the unshifted FFT grid: frequencies above HIGH_BAND of Nyquist."""
    f = torch.fft.fftfreq(PATCH, device=device).abs() * 2  # 1 = Nyquist
    return (f[:, None].square() + f[None, :].square()).sqrt() > HIGH_BAND


@torch.no_grad()
def patch_spectra(images: torch.Tensor) -> torch.Tensor:
    """(N, P, PATCH, PATCH) luminance power spectra of each image's P half-overlapping patches
    (unshifted FFT grid, float64), each with unit power in the high band (flat patches: zero)."""
    _check_images(images)
    gray = luminance(images).double()[:, 0]
    patches = gray.unfold(1, PATCH, PATCH // 2).unfold(2, PATCH, PATCH // 2).flatten(1, 2)
    patches = patches - patches.mean((-2, -1), keepdim=True)
    hann = torch.hann_window(PATCH, periodic=False, dtype=torch.float64, device=gray.device)
    power = torch.fft.fft2(patches * torch.outer(hann, hann)).abs().square()
    total = (power * _high_band(gray.device)).sum((-2, -1), keepdim=True)
    return torch.where(total > FLAT, power / total.clamp_min(FLAT), torch.zeros_like(power))


def _wrapped_median(power: torch.Tensor, dim: int) -> torch.Tensor:
    """Running median over PEAK_WINDOW bins along `dim` (-1 or -2), wrapped (the spectrum is periodic)."""
    half = PEAK_WINDOW // 2
    moved = power.movedim(dim, -1)
    padded = torch.cat([moved[..., -half:], moved, moved[..., :half]], dim=-1)
    return padded.unfold(-1, PEAK_WINDOW, 1).median(-1).values.movedim(-1, dim)


def peak_share(spectra: torch.Tensor) -> float:
    """The share of the high-band power of the mean of (P, PATCH, PATCH) patch spectra that lies
    above its background at peaks (see the module's doc); 0 when every patch is flat."""
    spectra = spectra[spectra.flatten(1).sum(1) > 0]
    if len(spectra) == 0:
        return 0.0
    power = spectra.mean(0)
    background = torch.maximum(_wrapped_median(power, -1), _wrapped_median(power, -2))
    band = _high_band(power.device)
    excess = torch.where((power > PEAK_FACTOR * background) & band, power - background, torch.zeros_like(power))
    return float(excess.sum() / (power * band).sum())


def periodic_artifacts(images: torch.Tensor) -> dict:
    """{"set": the peak share over every patch of the (N, 3, H, W) images in [-1, 1] (of one
    size), "per_image": each image's own peak share (list)}."""
    spectra = patch_spectra(images)
    return {"set": peak_share(spectra.flatten(0, 1)), "per_image": [peak_share(s) for s in spectra]}


def periodic_artifact_ratio(images: torch.Tensor, real: torch.Tensor) -> dict:
    """The outputs' set peak share over that of real images of the target culture (both floored
    at SHARE_FLOOR): 1 when the outputs are as periodic as real images, 2 when twice as much.
    Real images are resized to the outputs' size first (the periods must be comparable)."""
    if real.shape[-2:] != images.shape[-2:]:
        real = F.interpolate(real.float(), size=images.shape[-2:], mode="bilinear", antialias=True,
                             align_corners=False)
    mine, theirs = periodic_artifacts(images), periodic_artifacts(real)
    return {"outputs": mine["set"], "real": theirs["set"],
            "ratio": max(mine["set"], SHARE_FLOOR) / max(theirs["set"], SHARE_FLOOR),
            "per_image": mine["per_image"]}
