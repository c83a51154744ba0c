"""culturegan.data: reading culture images in every mode, and `culturegan data clean`."""

import hashlib
import importlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from culturegan import cli
from culturegan.data import ImageReadError, clean, find_cultures, open_rgb, perceptual_hash, write_manifest
from culturegan.data.clean import (HASH_BITS, MANIFEST_NAME, MULTI_INDEX_MAX_DISTANCE, _bits_set_by_table,
                                   _index_kept, _scan_kept, near_duplicates)


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


def sequential_rule(hashes, distance):
    """The rule cleaning keeps to, as plainly as it can be written: each hash, in order, against
    every kept one; a near duplicate names the nearest (of equals, the earliest)."""
    kept, result = [], []
    for index, value in enumerate(hashes):
        nearest = min(((bin(value ^ hashes[k]).count("1"), k) for k in kept), default=None)
        if nearest is not None and nearest[0] <= distance:
            result.append((nearest[1], nearest[0]))
        else:
            kept.append(index)
            result.append((-1, 0))
    return result


def clustered_hashes(seed, count):
    """Hashes in a few tight clusters: chains (B near A, C near B but not A), equal distances
    to two kept hashes, exact repeats."""
    rng = np.random.default_rng(seed)
    centres = [int(c) for c in rng.integers(0, 2**64, 6, dtype=np.uint64, endpoint=False)]
    hashes = []
    for _ in range(count):
        value = hashes[rng.integers(len(hashes))] if hashes and rng.random() < 0.4 else centres[rng.integers(6)]
        for bit in rng.choice(HASH_BITS, rng.integers(0, 9), replace=False):
            value ^= 1 << int(bit)
        hashes.append(value)
    return hashes


@pytest.mark.parametrize("distance", [0, 1, 4, MULTI_INDEX_MAX_DISTANCE, MULTI_INDEX_MAX_DISTANCE + 1, 12, 64, 99])
def test_near_duplicates_follow_the_sequential_rule(distance):
    for seed in range(12):
        hashes = clustered_hashes(seed, 40 + 20 * seed)
        nearest, bits = near_duplicates(np.array(hashes, dtype=np.uint64), distance)
        assert list(zip(nearest.tolist(), bits.tolist())) == sequential_rule(hashes, distance), seed


@pytest.mark.parametrize("search", [
    _index_kept,  # multi-index hashing
    _scan_kept,
])
def test_both_searches_on_a_chain_and_a_tie(search):
    chain = [0, 0b1111, 0b1111_1111]  # the middle one is 4 bits from each neighbour
    tie = [0b11_1111 << 20, 0b111 << 20]  # 3 bits from the first hash and from the one before
    nearest, bits = search(np.array(chain + tie, dtype=np.uint64), 4)
    # The middle is dropped for the first, so the third, 8 bits from the first, is kept; of the
    # two kept hashes 3 bits away, the last names the earlier.
    assert nearest.tolist() == [-1, 0, -1, -1, 0]
    assert bits.tolist() == [0, 4, 0, 0, 3]
    assert search(np.array([], dtype=np.uint64), 4)[0].size == 0


def test_popcount_table_for_numpy_1_counts_every_bit():
    values = np.array([0, 1, 2**63, 2**64 - 1, 0x8000_0000_0000_0001, 0xF0F0], dtype=np.uint64)
    assert _bits_set_by_table(values).tolist() == [0, 1, 1, 64, 2, 8]
    random = np.random.default_rng(0).integers(0, 2**64, 1000, dtype=np.uint64, endpoint=False)
    assert _bits_set_by_table(random).tolist() == [bin(int(v)).count("1") for v in random]


def test_perceptual_hash_has_64_bits():
    hashes = [perceptual_hash(textured(seed)) for seed in range(16)]
    assert all(0 <= h < 2**64 and bin(h).count("1") == 32 for h in hashes)  # half above the median of 64
    bits_used = np.bitwise_or.reduce(np.array(hashes, dtype=np.uint64))
    assert bits_used == np.uint64(2**64 - 1)


def test_manifest_records_64_bit_hashes_and_their_format(dataset, tmp_path):
    document = json.loads(write_manifest(clean(dataset), tmp_path / "manifest.json").read_text())
    assert document["settings"]["perceptual_hash"].startswith("pHash: 64 bits")
    hashes = [entry["phash"] for entry in document["entries"] if entry["phash"]]
    assert len(hashes) == 10 and all(len(h) == 16 and bin(int(h, 16)).count("1") == 32 for h in hashes)


def test_workers_do_not_change_the_manifest(dataset, tmp_path, caplog):
    in_process = write_manifest(clean(dataset, workers=0), tmp_path / "0.json").read_text()
    with caplog.at_level("INFO", logger="culturegan.data.clean"):
        pooled = write_manifest(clean(dataset, workers=2), tmp_path / "2.json").read_text()
    assert "in 2 processes" in caplog.text
    assert pooled == in_process


def test_cli_clean_takes_workers(dataset, capsys):
    assert cli.main(["data", "clean", str(dataset), "--workers", "2"]) == 0
    assert "near duplicate of ukiyoe/wave.png" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--workers", "-1"], "workers must be >= 0"),
    (["--near-duplicate-distance", "-1"], "near_duplicate_distance must be >= 0"),
])
def test_cli_bad_settings_exit_2_and_write_nothing(dataset, capsys, arguments, message):
    before = file_hashes(dataset)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "clean", str(dataset), *arguments])
    assert exit_info.value.code == 2
    assert f"culturegan data clean: {message}" in capsys.readouterr().err
    assert file_hashes(dataset) == before  # no manifest, nothing else


def test_a_dataset_without_images_is_an_error_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "cultures"
    (root / "ink_wash").mkdir(parents=True)
    (root / "ukiyoe" / "notes.txt").parent.mkdir()
    (root / "ukiyoe" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no images in the culture folders of .*ink_wash, ukiyoe"):
        clean(root)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "clean", str(root)])
    assert exit_info.value.code == 2 and "no images" in capsys.readouterr().err
    assert not (root / MANIFEST_NAME).exists() and sorted(p.name for p in root.rglob("*")) == [
        "ink_wash", "notes.txt", "ukiyoe"]


def test_bad_workers_raise_before_any_image_is_read(monkeypatch):
    module = importlib.import_module("culturegan.data.clean")  # culturegan.data.clean is also the function
    monkeypatch.setattr(module, "_list_images", lambda root: pytest.fail("read the folder"))
    with pytest.raises(ValueError, match="workers must be >= 0"):
        clean(".", workers=-2)


def test_a_file_that_cannot_be_read_is_rejected_not_fatal(dataset, monkeypatch):
    read_bytes = Path.read_bytes

    def refuse_one(path):
        if path.name == "other.bmp":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", refuse_one)
    by_name = {entry.path.split("/")[-1]: entry for entry in clean(dataset, workers=0).entries}
    assert not by_name["other.bmp"].kept and by_name["other.bmp"].reason == "unreadable: Permission denied"
    assert by_name["wave.png"].kept
