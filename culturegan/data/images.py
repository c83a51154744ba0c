"""Reading culture images: every file a culture folder may hold, as RGB, or a clear error; and
TileGrid, the canvas that training's sample grids and generate's grid.png are pasted into."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file that is not a readable image (corrupt, truncated, or another format)."""


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def open_rgb(path: Path) -> tuple[Image.Image, str]:
    """(the image as 8-bit RGB, its original mode), EXIF orientation applied.

    Grayscale, 16-bit, palette, CMYK and alpha images are converted in memory (alpha is
    composited on white, as a print of the image would show it); the file is never changed.
    Raises ImageReadError naming the file and what is wrong with it.
    """
    image = open_image(path)
    return to_rgb(image), image.mode


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit RGB image as a (3, H, W) float32 tensor in [-1, 1], culturegan's convention."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def open_image(path: Path) -> Image.Image:
    """The decoded image in its own mode, EXIF orientation applied, or ImageReadError."""
    try:
        with Image.open(path) as probe:
            probe.verify()  # header and, for PNG, the chunks' checksums
        with Image.open(path) as image:
            image.load()  # decodes every pixel: truncated files fail here
            return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"{path}: not a readable image ({error})") from error


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(the colour as 8-bit RGB, not composited; the alpha channel or None)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return to_rgb(image), None


def to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        return image.point(lambda value: value / 256).convert("L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


class TileGrid:
    """A canvas for `count` tiles of one shape ((H, W) or (H, W, C) uint8), row by row, `columns` to
    a row, `gap` pixels of `fill` between them (and in the last row's empty places). It is
    allocated once, so tiles can be pasted as they are made instead of all kept until the end."""

    def __init__(self, count: int, columns: int, tile_shape: tuple[int, ...], gap: int = 0, fill: int = 0):
        self.count, self.columns, self.tile_shape, self.gap = count, columns, tuple(tile_shape), gap
        height, width = self.tile_shape[:2]
        rows = math.ceil(count / columns)
        self.pixels = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap) + self.tile_shape[2:],
                              fill, np.uint8)

    @classmethod
    def near_square(cls, count: int, tile_shape: tuple[int, ...], gap: int = 0, fill: int = 0) -> TileGrid:
        """ceil(sqrt(count)) columns: as many rows as columns, or one fewer."""
        return cls(count, math.ceil(math.sqrt(count)), tile_shape, gap, fill)

    def paste(self, index: int, tile: np.ndarray) -> None:
        if tile.shape != self.tile_shape or not 0 <= index < self.count:
            raise ValueError(f"tile {index} of shape {tuple(tile.shape)}: this grid holds {self.count} tiles of shape "
                             f"{self.tile_shape}")
        height, width = self.tile_shape[:2]
        top, left = index // self.columns * (height + self.gap), index % self.columns * (width + self.gap)
        self.pixels[top:top + height, left:left + width] = tile
