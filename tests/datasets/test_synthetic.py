"""The procedural culture dataset: deterministic, every culture distinct, a readable folder."""

import sys
import types

import numpy as np
import pytest
from PIL import Image

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


@pytest.fixture
def fake_scikit_image(monkeypatch):
    """An importable scikit-image with one colour sample photo (and a grayscale one, skipped)."""
    fake = types.SimpleNamespace(astronaut=lambda: np.full((40, 60, 3), 120, np.uint8),
                                 camera=lambda: np.zeros((40, 40), np.uint8))
    module = types.ModuleType("skimage")
    module.data = fake
    monkeypatch.setitem(sys.modules, "skimage", module)
    monkeypatch.setitem(sys.modules, "skimage.data", fake)


def test_write_dataset_and_the_cli(tmp_path, fake_scikit_image, capsys):
    """The dataset is the same whether or not scikit-image is installed: its photos need asking for."""
    root = write_dataset(tmp_path / "data", count=3, size=32)
    assert sorted(p.name for p in root.iterdir()) == sorted([*CULTURES, CONTENT])
    assert len(CultureImages(root)) == 3 * 5 and not list(root.rglob(".*.tmp"))
    assert cli.main(["data", "synth", str(tmp_path / "cli"), "--n", "2", "--size", "24"]) == 0
    assert "wrote 2 images per culture" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted([*CULTURES, CONTENT])
    with pytest.raises(SystemExit):
        cli.main(["data", "synth", str(tmp_path / "bad"), "--n", "0"])


def test_scikit_image_sample_photos_join_when_asked_for(tmp_path, fake_scikit_image):
    root = write_dataset(tmp_path / "data", count=1, size=32, cultures=["kente"], sample_photos=True)
    photos = sorted((root / SAMPLE_PHOTOS).iterdir())
    assert len(photos) == 1 and np.asarray(Image.open(photos[0])).shape == (32, 32, 3)
    assert np.asarray(Image.open(photos[0])).mean() == pytest.approx(120, abs=1)
    assert cli.main(["data", "synth", str(tmp_path / "cli"), "--n", "1", "--size", "24", "--sample-photos"]) == 0
    assert len(list((tmp_path / "cli" / SAMPLE_PHOTOS).iterdir())) == 1


def test_sample_photos_without_scikit_image_are_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage raises ImportError
    with pytest.raises(ValueError, match=r"sample photos need scikit-image, which is not installed"):
        write_dataset(tmp_path / "data", count=1, size=32, sample_photos=True)
    assert not (tmp_path / "data").exists()  # nothing half-written
    with pytest.raises(SystemExit) as error:
        cli.main(["data", "synth", str(tmp_path / "cli"), "--n", "1", "--sample-photos"])
    assert error.value.code == 2
    assert "culturegan data synth: the sample photos need scikit-image" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    empty = types.ModuleType("skimage")
    empty.data = types.SimpleNamespace(camera=lambda: np.zeros((40, 40), np.uint8))  # grayscale only
    monkeypatch.setitem(sys.modules, "skimage", empty)
    with pytest.raises(ValueError, match="scikit-image holds none of its colour sample photos"):
        write_dataset(tmp_path / "data", count=1, size=32, sample_photos=True)
