"""Transferred files are faithful: JPEG at quality 95 with full-resolution colour, lossless WebP
and TIFF kept lossless, and the input's colour profile, EXIF (less its orientation, applied)
and PNG text carried to the output."""

import io

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms, JpegImagePlugin, PngImagePlugin

from culturegan import cli
from culturegan.data import open_image
from culturegan.transfer import Stylizer, transfer_files

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
CAMERA = "culturegan test camera"
TAKEN = "2024:05:17 10:30:00"


@pytest.fixture(scope="module")
def stylizer(generator_file):
    return Stylizer(generator_file, device="cpu")


def _fine_texture(height: int, width: int) -> np.ndarray:
    """One-pixel stripes in every channel: what blurs first at low quality or subsampled colour."""
    y, x = np.mgrid[:height, :width]
    return np.stack([(x % 2) * 255, (y % 2) * 255, ((x + y) % 3) * 120], -1).astype(np.uint8)


def _exif(orientation: int, width: int, height: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = CAMERA
    exif[ExifTags.Base.Orientation] = orientation
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = TAKEN
    details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight] = width, height
    return exif


def _assert_carried_exif(image: Image.Image) -> None:
    exif = image.getexif()
    assert exif.get(ExifTags.Base.Orientation, 1) == 1  # applied to the pixels already
    assert exif[ExifTags.Base.Make] == CAMERA
    details = exif.get_ifd(ExifTags.IFD.Exif)
    assert details[ExifTags.Base.DateTimeOriginal] == TAKEN
    assert (details[ExifTags.Base.ExifImageWidth], details[ExifTags.Base.ExifImageHeight]) == image.size


def _quantization_at(quality: int) -> dict:
    """The quantisation tables Pillow writes at `quality`."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", quality=quality, subsampling=0)
    return Image.open(buffer).quantization


def _mean_error(image: Image.Image, exact: Image.Image) -> float:
    return float(np.abs(np.asarray(image, float) - np.asarray(exact, float)).mean())


def test_a_rotated_phone_jpeg_keeps_its_texture_profile_and_exif_upright(stylizer, tmp_path):
    upright = _fine_texture(48, 64)
    (tmp_path / "in").mkdir()
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    stored.save(tmp_path / "in" / "phone.jpg", quality=100, subsampling=0, icc_profile=SRGB,
                exif=_exif(6, *stored.size))
    transfer_files(stylizer, tmp_path / "in", tmp_path / "out", progress=False)
    transfer_files(stylizer, tmp_path / "in", tmp_path / "pairs", side_by_side=True, progress=False)

    output = Image.open(tmp_path / "out" / "phone.jpg")
    assert output.size == (64, 48)
    assert JpegImagePlugin.get_sampling(output) == 0 and output.quantization == _quantization_at(95)
    assert output.info["icc_profile"] == SRGB
    _assert_carried_exif(output)
    # the right way up: near the upright picture's transfer, far from the turned-around one's
    exact = stylizer.image(open_image(tmp_path / "in" / "phone.jpg"))
    assert _mean_error(output, stylizer.image(Image.fromarray(upright))) < 6
    assert _mean_error(output, stylizer.image(Image.fromarray(upright[::-1, ::-1].copy()))) > 20
    # the fine texture survives: Pillow's defaults (quality 75, 4:2:0 colour) lose most of it
    defaults = io.BytesIO()
    exact.save(defaults, "JPEG")
    assert _mean_error(output, exact) < 5 < _mean_error(Image.open(defaults), exact) / 3

    pair = Image.open(tmp_path / "pairs" / "phone.jpg")
    assert pair.size == (128, 48) and JpegImagePlugin.get_sampling(pair) == 0
    assert pair.info["icc_profile"] == SRGB
    _assert_carried_exif(pair)


def test_quality_is_chosen_and_checked(stylizer, generator_file, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    Image.fromarray(_fine_texture(24, 32)).save(tmp_path / "in" / "a.jpg")
    transfer_files(stylizer, tmp_path / "in", tmp_path / "out", quality=60, progress=False)
    assert Image.open(tmp_path / "out" / "a.jpg").quantization == _quantization_at(60)
    for bad in (0, 101, 9.5, True):
        with pytest.raises(ValueError, match=f"quality must be an integer from 1 to 100, got {bad}"):
            transfer_files(stylizer, tmp_path / "in", tmp_path / "bad", quality=bad, progress=False)
    assert cli.main(["transfer", "--checkpoint", str(generator_file), "--input", str(tmp_path / "in"),
                     "--output", str(tmp_path / "cli"), "--device", "cpu", "--quality", "80"]) == 0
    assert Image.open(tmp_path / "cli" / "a.jpg").quantization == _quantization_at(80)
    with pytest.raises(SystemExit) as error:
        cli.main(["transfer", "--checkpoint", str(generator_file), "--input", str(tmp_path / "in"),
                  "--output", str(tmp_path / "cli0"), "--device", "cpu", "--quality", "0"])
    assert error.value.code == 2
    assert "culturegan transfer: quality must be an integer from 1 to 100, got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "cli0").exists()


def test_png_keeps_alpha_text_profile_and_exif_but_not_a_grey_profile(stylizer, tmp_path):
    (tmp_path / "in").mkdir()
    rgba = np.random.default_rng(0).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    text = PngImagePlugin.PngInfo()
    text.add_text("Title", "Waves at dawn")
    text.add_itxt("Description", "Hokusai-Stil, Morgengrauen", lang="de", tkey="Beschreibung")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "art.png", pnginfo=text, icc_profile=SRGB,
                                       exif=_exif(1, 30, 20))
    grey_profile = SRGB[:16] + b"GRAY" + SRGB[20:]  # the header's colour space is what is checked
    Image.fromarray(rgba[..., 0], "L").save(tmp_path / "in" / "grey.png", icc_profile=grey_profile)
    transfer_files(stylizer, tmp_path / "in", tmp_path / "out", progress=False)

    art = Image.open(tmp_path / "out" / "art.png")
    assert art.mode == "RGBA" and np.array_equal(np.asarray(art)[..., 3], rgba[..., 3])
    assert art.text == {"Title": "Waves at dawn", "Description": "Hokusai-Stil, Morgengrauen"}
    assert (art.text["Description"].lang, art.text["Description"].tkey) == ("de", "Beschreibung")
    assert art.info["icc_profile"] == SRGB
    _assert_carried_exif(art)
    grey = Image.open(tmp_path / "out" / "grey.png")
    assert grey.mode == "RGB" and "icc_profile" not in grey.info  # a grey profile would misdescribe RGB


def test_webp_stays_lossless_or_lossy_and_tiff_keeps_its_compression(stylizer, tmp_path):
    (tmp_path / "in").mkdir()
    rgba = Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 32, 4), dtype=np.uint8), "RGBA")
    rgb = Image.fromarray(_fine_texture(24, 32))
    metadata = {"icc_profile": SRGB, "exif": _exif(1, 32, 24)}
    rgba.save(tmp_path / "in" / "sticker.webp", lossless=True, **metadata)
    rgb.save(tmp_path / "in" / "photo.webp", quality=90, **metadata)
    turned = rgba.transpose(Image.Transpose.ROTATE_270)  # orientation 8 turns it back
    turned.save(tmp_path / "in" / "scan.tif", compression="tiff_lzw", icc_profile=SRGB, exif=_exif(8, *turned.size))
    transfer_files(stylizer, tmp_path / "in", tmp_path / "out", progress=False)

    for name, chunk in (("sticker.webp", b"VP8L"), ("photo.webp", b"VP8 ")):
        data = (tmp_path / "out" / name).read_bytes()
        assert [name for name in _chunks(data) if name in (b"VP8L", b"VP8 ")] == [chunk]
        webp = Image.open(tmp_path / "out" / name)
        assert webp.info["icc_profile"] == SRGB
        _assert_carried_exif(webp)
    exact = stylizer.image(rgba)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "sticker.webp")), np.asarray(exact))

    scan = Image.open(tmp_path / "out" / "scan.tif")
    assert scan.mode == "RGBA" and scan.info["compression"] == "tiff_lzw" and scan.info["icc_profile"] == SRGB
    assert np.array_equal(np.asarray(scan), np.asarray(exact))
    tags = scan.getexif()  # Pillow writes a TIFF's main EXIF tags, not its sub-directories
    assert tags[ExifTags.Base.ImageWidth] == 32  # the written file's layout, not the input's
    assert tags[ExifTags.Base.Make] == CAMERA and ExifTags.Base.Orientation not in tags


def _chunks(webp: bytes) -> list[bytes]:
    """The top-level chunk names of a WebP file."""
    names, position = [], 12
    while position + 8 <= len(webp):
        size = int.from_bytes(webp[position + 4:position + 8], "little")
        names.append(webp[position:position + 4])
        position += 8 + size + size % 2
    return names
