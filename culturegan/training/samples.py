"""Sample grids: one row per image (input, output, cycle reconstruction), saved as PNG."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from culturegan._files import atomic_path
from culturegan.data.images import TileGrid

GAP = 2  # pixels of white between tiles


def grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """(H, W, 3) uint8 image of the rows of (3, h, w) tiles in [-1, 1]."""
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError("a sample grid needs rows of equal length")
    _, height, width = rows[0][0].shape
    canvas = TileGrid(len(rows) * len(rows[0]), len(rows[0]), (height, width, 3), gap=GAP, fill=255)
    for index, tile in enumerate(tile for row in rows for tile in row):
        pixels = ((tile.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu()
        canvas.paste(index, pixels.numpy())
    return canvas.pixels


def save_grid(rows: list[list[torch.Tensor]], path: str | os.PathLike) -> np.ndarray:
    """Writes grid(rows) to path (PNG), atomically; returns the grid."""
    image = grid(rows)
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return image
