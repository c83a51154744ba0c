"""culturegan.data: augmentation, the CultureImages dataset and its loader."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from culturegan.data import Augment, CultureImages, clean, make_loader, write_manifest

SMALL = Augment(load_size=40, crop_size=32)


def picture(seed, size=(60, 48)):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    channels = [np.sin(x / rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 9)) for _ in range(3)]
    return Image.fromarray((np.stack(channels, -1) * 100 + 128).clip(0, 255).astype(np.uint8), "RGB")


@pytest.fixture
def dataset_root(tmp_path):
    root = tmp_path / "cultures"
    for culture, seeds in (("ink_wash", (1, 2, 3)), ("kente", (4, 5))):
        (root / culture).mkdir(parents=True)
        for seed in seeds:
            picture(seed).save(root / culture / f"{seed}.png")
    return root


def test_augment_defaults_are_cyclegans():
    augment = Augment()
    assert (augment.load_size, augment.crop_size, augment.flip) == (286, 256, True)
    out = augment(picture(1, (300, 200)), random.Random(0))
    assert out.shape == (3, 256, 256) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1


def test_augment_is_reproducible_and_random():
    image = picture(2)
    full = Augment(load_size=40, crop_size=32, rotation=15, scale=(0.9, 1.2), brightness=0.2, contrast=0.2,
                   saturation=0.2, hue=0.05)
    first = full(image, random.Random(7))
    assert torch.equal(first, full(image, random.Random(7)))
    assert not torch.equal(first, full(image, random.Random(8)))


def test_flip_mirrors_the_crop():
    image = picture(3, (32, 32))
    plain = Augment(load_size=32, crop_size=32, flip=False)(image, random.Random(0))
    flips = {torch.equal(Augment(load_size=32, crop_size=32)(image, random.Random(s)), plain.flip(2)) for s in range(8)}
    assert flips == {True, False}  # some seeds flip, some do not


def test_rotation_fills_corners_with_the_image_not_black():
    white = Image.new("RGB", (40, 40), (255, 255, 255))
    out = Augment(load_size=40, crop_size=40, flip=False, rotation=45)(white, random.Random(1))
    assert out.min() > 0.9  # reflect-filled: still white everywhere


def test_hue_shift_keeps_brightness_and_changes_hue():
    image = picture(4)
    base = Augment(load_size=40, crop_size=32, flip=False)
    shifted = Augment(load_size=40, crop_size=32, flip=False, hue=0.5)
    a, b = base(image, random.Random(3)), shifted(image, random.Random(3))
    assert not torch.allclose(a, b, atol=0.05)
    assert abs(a.max(0).values.mean() - b.max(0).values.mean()) < 0.05  # HSV value kept


@pytest.mark.parametrize("kwargs, message", [
    (dict(load_size=100, crop_size=200), "crop_size <= load_size"),
    (dict(scale=(1.2, 1.0)), "scale must be a range"),
    (dict(rotation=-1), "rotation must be >= 0"),
    (dict(hue=0.7), "hue must be <= 0.5"),
])
def test_bad_augment_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augment(**kwargs)


def test_dataset_labels_cultures_and_reproduces_epochs(dataset_root):
    data = CultureImages(dataset_root, augment=SMALL, seed=3)
    assert data.cultures == ["ink_wash", "kente"] and len(data) == 5
    assert [data[i]["culture"] for i in range(5)] == [0, 0, 0, 1, 1]
    assert torch.equal(data[0]["image"], data[0]["image"])
    before = data[0]["image"]
    data.set_epoch(1)
    assert not torch.equal(before, data[0]["image"])
    only = CultureImages(dataset_root, cultures=["kente"], augment=SMALL)
    assert len(only) == 2 and only.cultures == ["kente"]


def test_dataset_uses_only_what_the_manifest_kept(dataset_root):
    (dataset_root / "kente" / "5.png").write_bytes((dataset_root / "kente" / "4.png").read_bytes())  # a duplicate
    manifest = write_manifest(clean(dataset_root, min_side=16), dataset_root / "manifest.json")
    data = CultureImages(dataset_root, manifest=manifest, augment=SMALL)
    assert len(data) == 4 and not any(item[0].name == "5.png" for item in data.items)


def test_corrupt_image_is_skipped_with_a_warning(dataset_root):
    (dataset_root / "ink_wash" / "2.png").write_bytes(b"broken")
    data = CultureImages(dataset_root, augment=SMALL)
    with pytest.warns(RuntimeWarning, match="2.png"):
        item = data[1]
    assert item["path"].endswith("3.png")  # the next readable one
    assert len([data[i] for i in range(len(data))]) == 5  # never a crash


def test_bad_datasets_raise_clear_errors(dataset_root, tmp_path):
    with pytest.raises(ValueError, match="unknown culture"):
        CultureImages(dataset_root, cultures=["ukiyoe"])
    (dataset_root / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*hold no usable image"):
        CultureImages(dataset_root)
    broken = tmp_path / "broken" / "a"
    broken.mkdir(parents=True)
    (broken / "x.png").write_bytes(b"broken")
    with pytest.raises(RuntimeError, match="no readable image"), pytest.warns(RuntimeWarning):
        CultureImages(tmp_path / "broken", augment=SMALL)[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_are_reproducible(dataset_root, workers):
    data = CultureImages(dataset_root, augment=SMALL, seed=1)
    batches = [list(make_loader(data, batch_size=2, workers=workers, seed=5)) for _ in range(2)]
    assert len(batches[0]) == 2  # 5 images, drop_last
    for a, b in zip(*batches):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["culture"], b["culture"])
    assert batches[0][0]["image"].shape == (2, 3, 32, 32)
