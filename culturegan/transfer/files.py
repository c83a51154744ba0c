"""Transferring image files and folders: each input read (EXIF orientation applied), transferred
and written atomically under the output folder with the input's name and format, its colour
profile and metadata (culturegan.transfer.writing). An input is never overwritten; an
unreadable file is reported and skipped, and the rest are done."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from PIL import Image

from culturegan._progress import progress_bar
from culturegan.data import ImageReadError, is_image_file, open_image
from culturegan.transfer.stylizer import Stylizer
from culturegan.transfer.writing import DEFAULT_QUALITY, check_quality, read_metadata, save_image

ALPHA_FORMATS = (".png", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class TransferReport:
    written: list[Path] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)  # "path: why"

    def summary(self) -> str:
        lines = [f"transferred {len(self.written)} image(s)"]
        if self.failed:
            lines += [f"skipped {len(self.failed)}:"] + [f"  {entry}" for entry in self.failed]
        return "\n".join(lines)


def list_inputs(source: str | os.PathLike) -> tuple[Path, list[Path]]:
    """(the folder names are relative to, the image files): one file, or a folder's images (recursively)."""
    source = Path(source)
    if source.is_file():
        return source.parent, [source]
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if is_image_file(p))
        if not files:
            raise ValueError(f"{source} holds no image files")
        return source, files
    raise FileNotFoundError(f"input {source} does not exist")


def transfer_files(stylizer: Stylizer, source: str | os.PathLike, output: str | os.PathLike,
                   size: int | None = None, side_by_side: bool = False, progress: bool = True,
                   quality: int = DEFAULT_QUALITY) -> TransferReport:
    """Transfers every input image into `output` (same relative names; .png where the input's
    format cannot keep an alpha channel). `quality` (1-100) applies to JPEG and lossy WebP."""
    check_quality(quality)
    root, files = list_inputs(source)
    output = Path(output)
    if output.resolve() == root.resolve():
        raise ValueError(f"--output {output} is the input folder: the results would overwrite the inputs")
    report = TransferReport()
    for path in progress_bar(files, enabled=progress, unit="image"):
        destination = output / path.relative_to(root)
        if destination.resolve() == path.resolve():
            report.failed.append(f"{path}: the output would overwrite the input (choose another --output)")
            continue
        try:
            picture = open_image(path)
        except ImageReadError as error:
            report.failed.append(str(error))
            continue
        result = stylizer.image(picture, size)
        if side_by_side:
            result = _side_by_side(picture, result)
        if result.mode == "RGBA" and destination.suffix.lower() not in ALPHA_FORMATS:
            destination = destination.with_suffix(".png")
        try:
            report.written.append(save_image(result, destination, read_metadata(path, picture), quality))
        except (OSError, ValueError) as error:  # e.g. metadata Pillow cannot write back: this file fails, not the run
            report.failed.append(f"{path}: could not write {destination}: {error}")
    return report


def _side_by_side(picture: Image.Image, result: Image.Image) -> Image.Image:
    source = picture.convert(result.mode).resize(result.size, Image.Resampling.LANCZOS)
    canvas = Image.new(result.mode, (2 * result.width, result.height))
    canvas.paste(source, (0, 0))
    canvas.paste(result, (result.width, 0))
    return canvas
