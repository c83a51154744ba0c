"""Writing transferred images faithfully. JPEG and lossy WebP are encoded at `quality` (95 by
default) and JPEG keeps full-resolution colour (no chroma subsampling), so fine stroke texture
and thin coloured lines survive; lossless WebP stays lossless and TIFF keeps its lossless
compression. The output carries its input's RGB colour profile, EXIF and PNG text chunks, less
what no longer holds for the new pixels: the orientation (applied when the input was opened
upright), the tags that describe the original file's pixel layout, and the EXIF thumbnail
(Pillow never writes it back; it would show the untransferred photo).

Pillow writes what each format allows: ICC and EXIF in JPEG, PNG, WebP and TIFF; for TIFF only
EXIF's main tags (camera, date, author), not its sub-directories (exposure, GPS).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from PIL import ExifTags, Image, PngImagePlugin

from culturegan._files import atomic_path

DEFAULT_QUALITY = 95
TIFF_SUFFIXES = (".tif", ".tiff")
LOSSLESS_TIFF_COMPRESSIONS = ("raw", "tiff_lzw", "tiff_deflate", "tiff_adobe_deflate", "packbits")

# Tags about the source file rather than the picture: its pixel layout (a TIFF's EXIF is its own
# file header), the orientation already applied, and the thumbnail's location. The colour
# profile travels on its own, and XMP may repeat the orientation.
_SOURCE_FILE_TAGS = frozenset(getattr(ExifTags.Base, name) for name in (
    "NewSubfileType", "SubfileType", "ImageWidth", "ImageLength", "BitsPerSample", "Compression",
    "PhotometricInterpretation", "FillOrder", "StripOffsets", "Orientation", "SamplesPerPixel", "RowsPerStrip",
    "StripByteCounts", "PlanarConfiguration", "Predictor", "ColorMap", "TileWidth", "TileLength", "TileOffsets",
    "TileByteCounts", "SubIFDs", "ExtraSamples", "SampleFormat", "JPEGTables", "JpegIFOffset", "JpegIFByteCount",
    "YCbCrSubSampling", "InterColorProfile", "XMLPacket"))


@dataclasses.dataclass(frozen=True)
class SourceMetadata:
    """What a transferred image keeps of its input file."""

    icc_profile: bytes | None = None  # RGB profiles only: the output is RGB(A)
    exif: bytes | None = None  # without the source file's tags (_SOURCE_FILE_TAGS)
    text: dict[str, str] = dataclasses.field(default_factory=dict)  # PNG text chunks
    lossless: bool = False  # a lossless WebP
    compression: str | None = None  # a TIFF's lossless compression


def check_quality(quality: int) -> None:
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer from 1 to 100, got {quality!r}")


def read_metadata(path: Path, picture: Image.Image) -> SourceMetadata:
    """The metadata of the image file `path`, which open_image read upright as `picture`."""
    suffix = path.suffix.lower()
    compression = picture.info.get("compression")
    return SourceMetadata(
        icc_profile=_rgb_profile(picture.info.get("icc_profile")),
        exif=_picture_exif(_tiff_tags(path) if suffix in TIFF_SUFFIXES else picture.getexif().tobytes()),
        text=_text_chunks(picture.info) if suffix == ".png" else {},
        lossless=suffix == ".webp" and _is_lossless_webp(path),
        compression=compression if compression in LOSSLESS_TIFF_COMPRESSIONS else None)


def save_image(image: Image.Image, destination: Path, metadata: SourceMetadata, quality: int) -> Path:
    """Writes `image` atomically in the format its suffix names (PNG for an unknown one)."""
    image_format = Image.registered_extensions().get(destination.suffix.lower(), "PNG")
    options = {key: value for key, value in _format_options(image_format, image, metadata, quality).items()
               if value is not None}
    with atomic_path(destination) as temporary:
        image.save(temporary, format=image_format, **options)
    return destination


def _format_options(image_format: str, image: Image.Image, metadata: SourceMetadata, quality: int) -> dict:
    carried = {"icc_profile": metadata.icc_profile, "exif": _sized_exif(metadata.exif, image.size)}
    if image_format == "JPEG":
        return {**carried, "quality": quality, "subsampling": 0}
    if image_format == "WEBP":
        return {**carried, **({"lossless": True} if metadata.lossless else {"quality": quality})}
    if image_format == "PNG":
        return {**carried, "pnginfo": _png_text(metadata.text)}
    if image_format == "TIFF":
        return {**carried, "compression": metadata.compression}
    return {}


def _rgb_profile(profile: bytes | None) -> bytes | None:
    """The ICC profile if it describes RGB (its header's colour space): a grey or CMYK input is
    transferred to RGB, which that profile would misdescribe."""
    return profile if profile and profile[16:20] == b"RGB " else None


def _text_chunks(info: dict) -> dict[str, str]:
    """A PNG's text chunks: in Pillow's `info` for a PNG they are the values that are strings. An
    EXIF kept as text (ImageMagick's raw profile) is left out: it is written as an EXIF chunk."""
    return {key: value for key, value in info.items() if isinstance(value, str) and key != "Raw profile type exif"}


def _tiff_tags(path: Path) -> bytes:
    """A TIFF's tags (its EXIF), which the upright copy open_image returns no longer holds; read
    while the file is open, as Pillow loads a TIFF's EXIF sub-directories from it lazily."""
    with Image.open(path) as tiff:
        return tiff.getexif().tobytes()


def _picture_exif(exif: bytes) -> bytes | None:
    tags = Image.Exif()
    tags.load(exif)
    for tag in _SOURCE_FILE_TAGS & tags.keys():
        del tags[tag]
    return tags.tobytes() if len(tags) else None


def _sized_exif(exif: bytes | None, size: tuple[int, int]) -> bytes | None:
    """The EXIF with its pixel dimensions, where it records them, set to the written image's."""
    if exif is None:
        return None
    tags = Image.Exif()
    tags.load(exif)
    if ExifTags.IFD.Exif in tags:
        details = tags.get_ifd(ExifTags.IFD.Exif)
        for tag, value in zip((ExifTags.Base.ExifImageWidth, ExifTags.Base.ExifImageHeight), size):
            if tag in details:
                details[tag] = value
    return tags.tobytes()


def _png_text(text: dict[str, str]) -> PngImagePlugin.PngInfo:
    chunks = PngImagePlugin.PngInfo()
    for key, value in text.items():
        chunks.add_text(key, value)  # international (iTXt) values keep their language and translated key
    return chunks


def _is_lossless_webp(path: Path) -> bool:
    """Whether the WebP's image chunk is VP8L (lossless) rather than VP8 (lossy); Pillow does not say."""
    with open(path, "rb") as file:
        file.seek(12)  # past "RIFF", the size and "WEBP"
        while len(header := file.read(8)) == 8:
            chunk, size = header[:4], int.from_bytes(header[4:], "little")
            if chunk in (b"VP8 ", b"VP8L"):
                return chunk == b"VP8L"
            file.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even size
    return False
