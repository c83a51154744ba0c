"""Running an image-to-image network on images of any size: reflection padding to the
network's multiple, and overlapping tiles blended with linear ramps for images too big for
one pass. Tiles are normalised with the whole image's instance-norm statistics
(culturegan.nn.SharedNormStatistics), so they agree in tone and the seams do not show.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from culturegan.nn import SharedNormStatistics

Network = Callable[[torch.Tensor], torch.Tensor]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(x reflect-padded on the bottom and right to multiples of `multiple`, its original size)."""
    height, width = x.shape[-2:]
    bottom, right = -height % multiple, -width % multiple
    if bottom or right:
        mode = "reflect" if bottom < height and right < width else "replicate"  # reflect needs pad < size
        x = F.pad(x, (0, right, 0, bottom), mode=mode)
    return x, (height, width)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `length`, neighbours overlapping by at
    least `overlap` (the last tile is moved back to end at the border). Starts are multiples of
    `multiple` (length and tile must be too), so a strided network sees every tile on the
    whole image's sampling grid."""
    if length <= tile:
        return [0]
    step = (tile - overlap) // multiple * multiple
    if step <= 0:
        raise ValueError(f"tile {tile} with overlap {overlap} leaves no step on a grid of {multiple}")
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def ramp(size: int, start: int, length: int, overlap: int) -> torch.Tensor:
    """(size,) blending weights of a tile at `start` in an axis of `length`: rising linearly
    over `overlap` pixels from each edge that has a neighbour, 1 at the image's borders."""
    position = torch.arange(size, dtype=torch.float32) + 0.5
    weight = torch.ones(size)
    if start > 0:
        weight = torch.minimum(weight, position / overlap)
    if start + size < length:
        weight = torch.minimum(weight, (size - position) / overlap)
    return weight


def run_tiled(network: Network, x: torch.Tensor, tile: int, overlap: int, batch_size: int = 4,
              multiple: int = 4) -> torch.Tensor:
    """network(x) for one (1, C, H, W) image, computed in tiles of tile x tile pixels and
    blended; H, W and tile are multiples of `multiple` (the network's total stride)."""
    if x.shape[0] != 1:
        raise ValueError(f"run_tiled takes one image at a time, got a batch of {x.shape[0]}")
    if not 0 <= overlap < tile // 2 + 1:
        raise ValueError(f"overlap must be in [0, tile/2], got {overlap} for tile {tile}")
    height, width = x.shape[-2:]
    boxes = [(top, left) for top in tile_starts(height, tile, overlap, multiple)
             for left in tile_starts(width, tile, overlap, multiple)]
    output = weights = None
    for first in range(0, len(boxes), batch_size):
        chosen = boxes[first:first + batch_size]
        tiles = torch.cat([x[..., top:top + tile, left:left + tile] for top, left in chosen])
        results = network(tiles).float()
        if output is None:
            output = x.new_zeros((1, results.shape[1], height, width), dtype=torch.float32)
            weights = x.new_zeros((1, 1, height, width), dtype=torch.float32)
        for (top, left), result in zip(chosen, results):
            rows, columns = result.shape[-2:]
            window = (ramp(rows, top, height, max(overlap, 1))[:, None]
                      * ramp(columns, left, width, max(overlap, 1))[None, :]).to(x.device)
            output[..., top:top + rows, left:left + columns] += result * window
            weights[..., top:top + rows, left:left + columns] += window
    return output / weights


def _downscaled(image: torch.Tensor, pixels: int, multiple: int) -> torch.Tensor:
    """image, area-downscaled to at most `pixels` pixels (sides kept multiples of `multiple`)."""
    height, width = image.shape[-2:]
    if height * width <= pixels:
        return image
    factor = math.sqrt(pixels / (height * width))
    size = [max(multiple, int(side * factor) // multiple * multiple) for side in (height, width)]
    return F.interpolate(image, size=size, mode="area")


def run_tiled_like_whole(model: torch.nn.Module, network: Network, x: torch.Tensor, tile: int, overlap: int,
                         stats_pixels: int, batch_size: int = 4, multiple: int = 4) -> torch.Tensor:
    """run_tiled, every tile normalised with the instance-norm statistics of the whole image
    (recorded on it, or on a copy downscaled to `stats_pixels`); `network` calls `model`."""
    with SharedNormStatistics(model) as shared:
        network(_downscaled(x, stats_pixels, multiple))
        shared.freeze()
        return run_tiled(network, x, tile, overlap, batch_size, multiple)
