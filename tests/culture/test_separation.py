"""Nearest-profile classification and the per-group separation of cultures."""

import pytest
from PIL import Image
from test_features import ink_wash, kente

from culturegan import cli
from culturegan.culture import CultureProfile, classify, extract, separation


def test_two_procedural_cultures_are_separated_by_every_group():
    result = separation({"ink_wash": extract(ink_wash(12, seed=1)), "kente": extract(kente(12, seed=1))})
    assert set(result.accuracy) == {"colour", "texture", "line", "all"}
    for group, accuracy in result.accuracy.items():
        assert accuracy >= 0.9, f"{group}: {accuracy}"
        assert int(result.confusion[group].sum()) == 24  # every image held out once
    assert "colour" in result.table()


def test_one_culture_split_in_two_is_not_separated():
    """Two halves of one culture: accuracy near chance, far below two real cultures."""
    images = kente(24, seed=2)
    result = separation({"first": extract(images[:12]), "second": extract(images[12:])}, folds=3)
    assert result.accuracy["all"] < 0.8


def test_classify_picks_the_nearest_profile():
    profiles = [CultureProfile.fit("ink", extract(ink_wash(8))), CultureProfile.fit("kente", extract(kente(8)))]
    assert classify(extract(kente(4, seed=5)), profiles).tolist() == [1, 1, 1, 1]
    assert classify(extract(ink_wash(4, seed=5)), profiles, "colour").tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown feature group 'shape'"):
        classify(extract(kente(2)), profiles, "shape")


def test_separation_errors():
    features = extract(kente(3))
    with pytest.raises(ValueError, match="at least 2 cultures"):
        separation({"kente": features})
    with pytest.raises(ValueError, match="'kente' has 3 images; 2-fold separation needs at least 4"):
        separation({"kente": features, "ink": extract(ink_wash(4))})


def test_cli_data_separation(tmp_path, capsys):
    for name, images in (("ink_wash", ink_wash(6, size=48)), ("kente", kente(6, size=48))):
        (tmp_path / name).mkdir()
        for i, image in enumerate(images):
            pixels = ((image + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    assert cli.main(["data", "separation", str(tmp_path), "--size", "48"]) == 0
    out = capsys.readouterr().out
    assert "colour" in out and "2 cultures" in out
    with pytest.raises(SystemExit) as error:
        cli.main(["data", "separation", str(tmp_path), "--cultures", "kente,maya"])
    assert error.value.code == 2
    assert "unknown culture" in capsys.readouterr().err
