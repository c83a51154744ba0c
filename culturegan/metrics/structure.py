"""Does each output still show its own input? Content retrieval and input dependence, in a
structure space that ignores colour and texture.

A structure map is where an image's boundaries are, at a coarse scale: the image resized to
STRUCTURE_SIZE pixels (so the same scale of structure is compared at any image size), blurred
(sigma 1 px there, 1/64 of the side: the fine texture a style adds is gone), its colour gradient
magnitude (the Di Zenzo norm over R, G and B, so a boundary counts whichever colours the style
gives its two sides, and a light/dark inversion changes nothing), square-rooted (a painted
outline and a soft photographic edge weigh alike) and blurred again (sigma 2 px: a boundary
moved by a pixel or two still matches). Maps are compared by correlation.

- content_retrieval: rank all inputs by their map's correlation with each output's map; a
  generator that keeps its input's layout retrieves it first (the identity scores 100%), one
  that ignores its input scores chance (1/N).
- collapse_ratio: how far apart the outputs are from each other relative to the inputs (1: as
  varied as the inputs; 0: one picture for all), in any feature space.
- closer_to_another_output: per output, whether another output is nearer to it than its own input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.nn.filters import gaussian_blur, sobel, unit_rgb
from culturegan.metrics.scores import mean_pairwise_distance

STRUCTURE_SIZE = 64
TEXTURE_SIGMA = 1.0  # pixels at STRUCTURE_SIZE: removes texture before the gradient
TOLERANCE_SIGMA = 2.0  # pixels at STRUCTURE_SIZE: how far a boundary may move and still match


def _check_pair(outputs: torch.Tensor, inputs: torch.Tensor) -> None:
    if outputs.shape[0] != inputs.shape[0]:
        raise ValueError(f"{outputs.shape[0]} outputs for {inputs.shape[0]} inputs: they must pair up")
    if outputs.shape[0] < 2:
        raise ValueError("input dependence needs at least 2 images")


@torch.no_grad()
def structure_maps(images: torch.Tensor) -> torch.Tensor:
    """(N, STRUCTURE_SIZE ** 2) structure maps of (N, 3, H, W) images in [-1, 1], each centred
    and scaled to unit norm (so that the dot product of two maps is their correlation; a flat
    image gives a zero map)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
    rgb = F.interpolate(unit_rgb(images), size=(STRUCTURE_SIZE, STRUCTURE_SIZE), mode="bilinear",
                        antialias=True, align_corners=False)
    gx, gy = sobel(gaussian_blur(rgb, TEXTURE_SIGMA))
    magnitude = (gx.square() + gy.square()).sum(1, keepdim=True).sqrt().sqrt()
    maps = gaussian_blur(magnitude, TOLERANCE_SIGMA).flatten(1).double()
    maps = maps - maps.mean(1, keepdim=True)
    return maps / maps.norm(dim=1, keepdim=True).clamp_min(1e-12)


def content_retrieval(outputs: torch.Tensor, inputs: torch.Tensor) -> dict:
    """Each output's own input ranked among all inputs by structure correlation.

    Returns top1 (share ranked first), mrr (mean reciprocal rank), chance_top1 and chance_mrr
    (what a generator that ignores its input scores on average), own_correlation (mean
    correlation of outputs with their own inputs) and ranks (per output, 1 = own input first;
    ties count against the output, so identical outputs rank last)."""
    _check_pair(outputs, inputs)
    return _ranked(structure_maps(outputs), structure_maps(inputs))


def _ranked(output_maps: torch.Tensor, input_maps: torch.Tensor) -> dict:
    similarity = output_maps @ input_maps.T
    own = similarity.diagonal()
    ranks = (similarity >= own[:, None]).sum(1)
    n = len(ranks)
    return {"top1": float((ranks == 1).double().mean()), "mrr": float((1 / ranks.double()).mean()),
            "chance_top1": 1 / n, "chance_mrr": sum(1 / k for k in range(1, n + 1)) / n,
            "own_correlation": float(own.mean()), "ranks": ranks.tolist()}


def collapse_ratio(outputs: torch.Tensor, inputs: torch.Tensor) -> float:
    """Mean pairwise distance of the outputs' feature vectors (N, d) over that of their inputs'
    (in the same units): 1 when outputs are as varied as the inputs, 0 when all are one."""
    _check_pair(outputs, inputs)
    return float(mean_pairwise_distance(outputs) / mean_pairwise_distance(inputs).clamp_min(1e-12))


def closer_to_another_output(outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """(N,) bool per output feature vector: some other output is nearer to it than its own input
    is (the outputs resemble each other more than the photos they came from)."""
    _check_pair(outputs, inputs)
    between = torch.cdist(outputs.double(), outputs.double())
    between.fill_diagonal_(float("inf"))
    own = (outputs.double() - inputs.double()).norm(dim=1)
    return between.min(1).values < own


def input_dependence(outputs: torch.Tensor, inputs: torch.Tensor) -> dict:
    """Content retrieval plus the structure-space collapse ratio and per-output flags of paired
    (N, 3, H, W) outputs and inputs in [-1, 1]."""
    _check_pair(outputs, inputs)
    out_maps, in_maps = structure_maps(outputs), structure_maps(inputs)
    flagged = closer_to_another_output(out_maps, in_maps)
    return {"retrieval": _ranked(out_maps, in_maps), "collapse_ratio": collapse_ratio(out_maps, in_maps),
            "closer_to_another_output": float(flagged.double().mean()),
            "flagged": flagged.nonzero().flatten().tolist()}
