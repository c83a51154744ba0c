"""The procedural culture dataset: deterministic, every culture distinct, a readable folder."""

import sys
import types

import numpy as np
import pytest

from culturegan import cli
from culturegan.culture import extract, separation
from culturegan.data import CultureImages
from culturegan.datasets import CONTENT, CULTURES, culture_image, write_dataset
from culturegan.datasets.synthetic import SAMPLE_PHOTOS


def test_images_are_seeded_and_sized():
    first, again = culture_image("ukiyoe", 3, 48), culture_image("ukiyoe", 3, 48)
    assert first.size == (48, 48) and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(culture_image("ukiyoe", 4, 48)))
    assert not np.array_equal(np.asarray(first), np.asarray(culture_image("ukiyoe", 3, 48, seed=1)))
    with pytest.raises(ValueError, match="unknown synthetic culture 'maya'"):
        culture_image("maya", 0)
    with pytest.raises(ValueError, match="size must be >= 16"):
        culture_image("kente", 0, 8)


def test_every_culture_is_told_apart_by_every_feature_group():
    """Held-out accuracy of the nearest profile (chance 0.2): colour and texture alone separate
    the five sets; the line statistics less well (ink-wash strokes vs photos' edges)."""
    import torch

    sets = {name: torch.stack([torch.from_numpy(np.asarray(culture_image(name, i, 48), dtype=np.float32))
                               for i in range(10)]).permute(0, 3, 1, 2) / 127.5 - 1 for name in (*CULTURES, CONTENT)}
    result = separation({name: extract(images) for name, images in sets.items()})
    accuracy = result.accuracy
    assert min(accuracy["colour"], accuracy["texture"], accuracy["all"]) >= 0.9 and accuracy["line"] >= 0.6, \
        result.table()


def test_write_dataset_and_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "skimage", None)  # scikit-image absent: procedural photos only
    root = write_dataset(tmp_path / "data", count=3, size=32)
    assert sorted(p.name for p in root.iterdir()) == sorted([*CULTURES, CONTENT])
    assert len(CultureImages(root)) == 3 * 5 and not list(root.rglob(".*.tmp"))
    assert cli.main(["data", "synth", str(tmp_path / "cli"), "--n", "2", "--size", "24"]) == 0
    assert "wrote 2 images per culture" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["data", "synth", str(tmp_path / "bad"), "--n", "0"])


def test_scikit_image_sample_photos_join_when_installed(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(astronaut=lambda: np.full((40, 60, 3), 120, np.uint8),
                                 camera=lambda: np.zeros((40, 40), np.uint8))  # grayscale: skipped
    module = types.ModuleType("skimage")
    module.data = fake
    monkeypatch.setitem(sys.modules, "skimage", module)
    monkeypatch.setitem(sys.modules, "skimage.data", fake)
    root = write_dataset(tmp_path / "data", count=1, size=32, cultures=["kente"])
    photos = sorted((root / SAMPLE_PHOTOS).iterdir())
    assert len(photos) == 1 and np.asarray(__import__("PIL.Image").Image.open(photos[0])).shape == (32, 32, 3)
