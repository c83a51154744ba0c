"""Reading culture images: every file a culture folder may hold, as RGB, or a clear error."""

from __future__ import annotations

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
