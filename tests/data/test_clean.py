"""culturegan.data: reading culture images in every mode, and `culturegan data clean`."""

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from culturegan import cli
from culturegan.data import ImageReadError, clean, find_cultures, open_rgb, perceptual_hash, write_manifest


def textured(seed, size=(96, 80)):
    """A picture with structure (gradients and blobs) that perceptual hashes can tell apart."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    channels = [np.sin(x / rng.uniform(3, 12) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 12)) for _ in range(3)]
    array = (np.stack(channels, -1) * 120 + 128).clip(0, 255).astype(np.uint8)
    return Image.fromarray(array, "RGB")


def save(image, path, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


@pytest.fixture
def dataset(tmp_path):
    """Two cultures with one file of every kind cleaning must tell apart."""
    root = tmp_path / "cultures"
    ink, ukiyoe = root / "ink_wash", root / "ukiyoe"
    save(textured(1), ink / "rgb.png")
    save(textured(2).convert("L"), ink / "gray.jpg", quality=95)
    save(textured(3).convert("RGBA"), ink / "alpha.png")
    save(textured(4).convert("CMYK"), ink / "cmyk.jpg", quality=95)
    save(Image.fromarray(np.asarray(textured(5).convert("L"), dtype=np.uint16) * 257), ink / "deep.png")
    save(textured(6).convert("P"), ink / "palette.png")
    save(textured(7).resize((40, 30)), ink / "small.png")
    (ink / "notes.txt").write_text("not an image")
    (ink / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    buffer = io.BytesIO()
    textured(8).save(buffer, "JPEG", quality=90)
    (ukiyoe / "truncated.jpg").parent.mkdir(parents=True)
    (ukiyoe / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    save(textured(9), ukiyoe / "wave.png")
    (ukiyoe / "wave_copy.png").write_bytes((ukiyoe / "wave.png").read_bytes())
    save(textured(9), ukiyoe / "wave_reencoded.webp", quality=80)  # same picture, other codec
    save(textured(10), ukiyoe / "other.bmp")
    (root / "empty_culture").mkdir()
    return root


def file_hashes(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_open_rgb_converts_every_mode(dataset):
    for name in ("rgb.png", "gray.jpg", "alpha.png", "cmyk.jpg", "deep.png", "palette.png"):
        image, mode = open_rgb(dataset / "ink_wash" / name)
        assert image.mode == "RGB" and image.size == (96, 80), name
    assert open_rgb(dataset / "ink_wash" / "deep.png")[1].startswith("I")
    deep = np.asarray(open_rgb(dataset / "ink_wash" / "deep.png")[0], dtype=np.int16)
    gray = np.asarray(textured(5).convert("L"), dtype=np.int16)
    assert np.abs(deep[..., 0] - gray).max() <= 1  # 16-bit scaled back to 8 bits, not clipped


def test_open_rgb_applies_exif_orientation(tmp_path):
    image = textured(11, size=(60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: shown as 40 x 60
    path = save(image, tmp_path / "rotated.jpg", exif=exif)
    assert open_rgb(path)[0].size == (40, 60)


@pytest.mark.parametrize("name", ["garbage.png", "truncated.jpg"])
def test_unreadable_files_raise_a_clear_error(dataset, name):
    path = next(dataset.rglob(name))
    with pytest.raises(ImageReadError, match=name):
        open_rgb(path)


def test_perceptual_hash_tells_pictures_apart_and_survives_reencoding():
    a, b = textured(1), textured(2)
    buffer = io.BytesIO()
    a.save(buffer, "JPEG", quality=70)
    reencoded = Image.open(buffer)
    distance = lambda u, v: bin(perceptual_hash(u) ^ perceptual_hash(v)).count("1")  # noqa: E731
    assert distance(a, reencoded) <= 4
    assert distance(a, a.resize((48, 40))) <= 4
    assert distance(a, b) > 12


def test_clean_keeps_and_rejects_with_reasons(dataset):
    before = file_hashes(dataset)
    report = clean(dataset, min_side=64)
    by_name = {entry.path.split("/")[-1]: entry for entry in report.entries}
    assert "notes.txt" not in by_name
    for kept in ("rgb.png", "gray.jpg", "alpha.png", "cmyk.jpg", "deep.png", "palette.png", "wave.png", "other.bmp"):
        assert by_name[kept].kept, (kept, by_name[kept].reason)
    assert by_name["gray.jpg"].reason == "converted from L to RGB in memory"
    assert by_name["rgb.png"].reason == ""
    expected = {"small.png": "too small: 40x30", "garbage.png": "unreadable", "truncated.jpg": "unreadable",
                "wave_copy.png": "exact duplicate of ukiyoe/wave.png",
                "wave_reencoded.webp": "near duplicate of ukiyoe/wave.png"}
    for name, reason in expected.items():
        assert not by_name[name].kept and by_name[name].reason.startswith(reason), (name, by_name[name].reason)
    assert report.settings["empty_cultures"] == ["empty_culture"]
    assert "empty_culture: 0 kept" in report.summary()
    assert file_hashes(dataset) == before, "cleaning changed the user's files"


def test_manifest_is_written_atomically_and_lists_the_kept_files(dataset, tmp_path):
    report = clean(dataset)
    path = write_manifest(report, tmp_path / "out" / "manifest.json")
    document = json.loads(path.read_text())
    assert set(document["cultures"]) == {"empty_culture", "ink_wash", "ukiyoe"}
    assert "ukiyoe/wave.png" in document["cultures"]["ukiyoe"]
    assert len(document["entries"]) == len(report.entries)
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temporary file left


def test_cli_clean_writes_the_manifest_into_the_root(dataset, capsys):
    assert cli.main(["data", "clean", str(dataset), "--min-side", "64"]) == 0
    out = capsys.readouterr().out
    assert "rejected" in out and "manifest:" in out
    assert (dataset / "culturegan-manifest.json").is_file()


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "is not a folder"),
    (lambda tmp: (tmp / "flat").mkdir() or tmp / "flat", "no culture folders"),
])
def test_bad_roots_raise_clear_errors(tmp_path, make, message):
    root = make(tmp_path)
    with pytest.raises((FileNotFoundError, ValueError), match=message):
        find_cultures(root)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "clean", str(root)])
    assert exit_info.value.code == 2


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="min_side must be >= 1"):
        clean(".", min_side=0)
