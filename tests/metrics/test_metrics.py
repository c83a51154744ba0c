"""Every metric discriminates: two different cultures score clearly worse than two halves of one
culture; a copy of the input has perfect content preservation and a poor culture match."""

import pytest
import torch
import torch.nn.functional as F

from culturegan import metrics
from culturegan.culture import extract
from culturegan.datasets import CULTURES
from culturegan.metrics.steganography import gaussian_noise
from culturegan.nn.filters import gaussian_blur
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
    assert {g: tuple(v.shape) for g, v in judge.items()} == {"hue": (3, 12), "ltp": (3, 20), "glcm": (3, 8)}
    for histogram in (judge["hue"], judge["ltp"][:, :10], judge["ltp"][:, 10:]):
        torch.testing.assert_close(histogram.sum(1), torch.ones(3, dtype=histogram.dtype))
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


def test_more_often_p_is_fishers_one_sided_exact_test():
    assert metrics.more_often_p(3, 4, 1, 4) == pytest.approx(17 / 70)  # Fisher's lady tasting tea
    assert metrics.more_often_p(4, 4, 0, 4) == pytest.approx(1 / 70)
    assert metrics.more_often_p(1, 72, 0, 72) == pytest.approx(0.5)
    assert metrics.more_often_p(0, 24, 5, 24) == 1.0 and metrics.more_often_p(0, 0, 0, 0) == 1.0
    for bad in [(-1, 4, 0, 4), (5, 4, 0, 4), (1.0, 4, 0, 4), (True, 4, 0, 4)]:
        with pytest.raises(ValueError, match="hits|count"):
            metrics.more_often_p(*bad)


def _resampled(images):
    return F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="bilinear", align_corners=False)


CHANGES_A_PERSON_IGNORES = {"blurred by half a pixel": lambda x: gaussian_blur(x, 0.5),
                            "blurred by one pixel": lambda x: gaussian_blur(x, 1.0),
                            "resampled 2x down and up": _resampled,
                            "with more grain": lambda x: gaussian_noise(x, std=2 / 255)}


@pytest.mark.parametrize("change", list(CHANGES_A_PERSON_IGNORES))
def test_the_judge_keeps_its_verdict_on_images_changed_as_a_person_would_not_notice(sets, change):
    """Generated images are never pixel-sharp: a judge that reads sharpness or grain as culture
    (plain full-resolution LBP called half-pixel-blurred ukiyo-e kente) judges that instead."""
    judge = {name: features(batch[:16])["judge"] for name, batch in sets.items()}
    classifier = metrics.NearestCentroid.fit(judge)
    changed = {name: features(CHANGES_A_PERSON_IGNORES[change](batch[16:]))["judge"] for name, batch in sets.items()}
    matrix = metrics.confusion(classifier, changed)
    assert matrix.diagonal().sum() / matrix.sum() >= 0.9 and matrix.diagonal().min() >= 6, matrix


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
