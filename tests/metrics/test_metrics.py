"""Every metric discriminates: two different cultures score clearly worse than two halves of one
culture; a copy of the input has perfect content preservation and a poor culture match."""

import pytest
import torch

from culturegan import metrics
from culturegan.culture import extract
from culturegan.datasets import CULTURES
from helpers import culture_images


@pytest.fixture(scope="module")
def sets():
    return {name: culture_images(name, 24) for name in (*CULTURES, "photo")}


def features(batch):
    judge = metrics.judge_features(batch)
    return {"culture": extract(batch).all().detach(), "judge": torch.cat([judge[g] for g in metrics.JUDGE_GROUPS], 1)}


def test_judge_features_are_distributions_and_fixed_lengths():
    batch = culture_images("kente", 3)
    judge = metrics.judge_features(batch)
    assert {g: tuple(v.shape) for g, v in judge.items()} == {"hue": (3, 12), "lbp": (3, 10), "glcm": (3, 8)}
    for group in ("hue", "lbp"):
        torch.testing.assert_close(judge[group].sum(1), torch.ones(3, dtype=judge[group].dtype))
    gray = metrics.judge_features(torch.zeros(1, 3, 16, 16))
    torch.testing.assert_close(gray["hue"], torch.full((1, 12), 1 / 12))  # no colour: no hue preference


@pytest.mark.parametrize("kind", ["culture", "judge"])
def test_the_classifier_recognises_held_out_images_of_every_culture(sets, kind):
    train = {name: features(batch[:16])[kind] for name, batch in sets.items()}
    held_out = {name: features(batch[16:])[kind] for name, batch in sets.items()}
    classifier = metrics.NearestCentroid.fit(train)
    matrix = metrics.confusion(classifier, held_out)
    assert matrix.diagonal().sum() / matrix.sum() >= 0.9, matrix
    copy = metrics.recognisability(classifier, held_out["photo"], "photo", "ukiyoe")
    real = metrics.recognisability(classifier, held_out["ukiyoe"], "photo", "ukiyoe")
    assert copy["target_rate"] == 0.0 and copy["margin"] < 0 < real["margin"] and real["target_rate"] >= 0.9


@pytest.mark.parametrize("group", ["culture", "judge"])
def test_distribution_distances_separate_cultures_from_halves_of_one(sets, group):
    ink, kente = features(sets["ink_wash"])[group], features(sets["kente"])[group]
    same, different = metrics.kid(ink[:12], ink[12:]), metrics.kid(ink[:12], kente[:12])
    assert different > 10 * max(same, 1e-3)
    fd_same, fd_different = (metrics.frechet_distance(ink[:12], ink[12:]),
                             metrics.frechet_distance(ink[:12], kente[:12]))
    assert fd_different["value"] > 3 * fd_same["value"] and not fd_same["reliable"]


def test_content_preservation_is_perfect_for_a_copy_and_lower_for_other_images(sets):
    photos = sets["photo"][:6]
    assert torch.allclose(metrics.ssim_lowpass(photos, photos), torch.ones(6), atol=1e-5)
    assert torch.allclose(metrics.edge_f1(photos, photos), torch.ones(6))
    others = sets["photo"][6:12]
    assert metrics.ssim_lowpass(others, photos).mean() < 0.8 and metrics.edge_f1(others, photos).mean() < 0.6
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.ssim_lowpass(photos[:, :, :32], photos)


def test_cycle_diversity_and_deception(sets):
    photos = sets["photo"]
    assert metrics.cycle_error(photos, photos) == 0.0
    assert metrics.cycle_error(-photos, photos) > 0.1
    photo_features = features(photos)["culture"]
    assert metrics.diversity(photo_features[:1].expand(8, -1), photo_features) == 0.0  # collapsed outputs
    assert 0.5 < metrics.diversity(photo_features[:12], photo_features[12:]) < 2.0
    logits = torch.tensor([[0.9, 0.8], [0.1, 0.2], [0.6, 0.7]]).view(3, 1, 1, 2)
    assert metrics.deception_rate(logits) == pytest.approx(2 / 3)
    assert metrics.deception_rate(logits - 0.5, "hinge") == pytest.approx(2 / 3)
