"""Sample grids: one row per image (input, output, cycle reconstruction), saved as PNG."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from culturegan._files import atomic_path

GAP = 2  # pixels of white between tiles


def grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """(H, W, 3) uint8 image of the rows of (3, h, w) tiles in [-1, 1]."""
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError("a sample grid needs rows of equal length")
    _, height, width = rows[0][0].shape
    columns = len(rows[0])
    canvas = np.full((len(rows) * (height + GAP) - GAP, columns * (width + GAP) - GAP, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            pixels = ((tile.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu()
            top, left = r * (height + GAP), c * (width + GAP)
            canvas[top:top + height, left:left + width] = pixels.numpy()
    return canvas


def save_grid(rows: list[list[torch.Tensor]], path: str | os.PathLike) -> np.ndarray:
    """Writes grid(rows) to path (PNG), atomically; returns the grid."""
    image = grid(rows)
    with atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
    return image
