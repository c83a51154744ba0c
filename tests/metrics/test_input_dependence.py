"""Content retrieval and collapse: structure maps ignore colour and texture, keep layout; the
retrieval and collapse numbers are exact for generators whose answer is known."""

import pytest
import torch

from culturegan import metrics
from helpers import culture_images as images

SIZE = 64


@pytest.fixture(scope="module")
def photos():
    return images("photo", 12, offset=100, size=SIZE)


def test_a_copy_is_retrieved_first_and_keeps_its_spread(photos):
    result = metrics.input_dependence(photos, photos)
    retrieval = result["retrieval"]
    assert retrieval["top1"] == 1.0 and retrieval["mrr"] == 1.0 and retrieval["ranks"] == [1] * 12
    assert retrieval["chance_top1"] == pytest.approx(1 / 12)
    assert retrieval["chance_mrr"] == pytest.approx(sum(1 / k for k in range(1, 13)) / 12)
    assert result["collapse_ratio"] == pytest.approx(1.0) and result["flagged"] == []


def test_recolouring_inverting_and_fine_texture_keep_the_structure(photos):
    recoloured = photos[:, [2, 0, 1]] * 0.6 + 0.2  # other colours, less contrast
    inverted = -photos  # light and dark swapped
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    textured = (photos + 0.15 * torch.sign(torch.sin(xx * 2.1) * torch.sin(yy * 2.1))
                + 0.05 * torch.randn(photos.shape, generator=generator)).clamp(-1, 1)
    for styled in (recoloured, inverted, textured):
        retrieval = metrics.content_retrieval(styled, photos)
        assert retrieval["top1"] == 1.0 and retrieval["own_correlation"] > 0.8


def test_structure_maps_are_unit_correlation_vectors_and_tolerate_a_small_shift(photos):
    maps = metrics.structure_maps(photos)
    assert maps.shape == (12, metrics.structure.STRUCTURE_SIZE ** 2)
    torch.testing.assert_close(maps.norm(dim=1), torch.ones(12, dtype=maps.dtype))
    shifted = metrics.structure_maps(photos.roll(1, dims=-1))
    assert (maps * shifted).sum(1).min() > 0.9
    assert metrics.structure_maps(torch.zeros(2, 3, 32, 32)).abs().max() == 0  # flat: no structure
    large = torch.nn.functional.interpolate(photos, scale_factor=4, mode="bilinear")  # any size: same scale
    assert (maps * metrics.structure_maps(large)).sum(1).min() > 0.95


def test_one_picture_for_every_input_scores_chance_and_collapses(photos):
    constant = images("photo", 1, offset=999, size=SIZE).expand(12, -1, -1, -1)  # not one of the inputs
    result = metrics.input_dependence(constant, photos)
    retrieval = result["retrieval"]
    # every output identical: the own inputs take ranks 1..N once each, which is exactly chance
    assert sorted(retrieval["ranks"]) == list(range(1, 13))
    assert retrieval["top1"] == pytest.approx(retrieval["chance_top1"])
    assert retrieval["mrr"] == pytest.approx(retrieval["chance_mrr"])
    assert result["collapse_ratio"] == 0.0 and len(result["flagged"]) == 12


def test_another_photo_is_never_a_match(photos):
    swapped = photos.roll(1, dims=0)  # output i is input i-1
    retrieval = metrics.content_retrieval(swapped, photos)
    assert retrieval["top1"] == 0.0 and min(retrieval["ranks"]) >= 2
    assert retrieval["own_correlation"] < metrics.content_retrieval(photos, photos)["own_correlation"] - 0.3


def test_collapse_ratio_and_flags_in_any_feature_space():
    inputs = torch.randn(6, 4, dtype=torch.float64)
    assert metrics.collapse_ratio(inputs * 0.5, inputs) == pytest.approx(0.5)
    alike = 10 + 0.01 * inputs  # all near one point, far from their inputs
    assert metrics.closer_to_another_output(alike, inputs).all()
    assert not metrics.closer_to_another_output(inputs, inputs).any()


def test_bad_inputs_are_named(photos):
    with pytest.raises(ValueError, match="pair up"):
        metrics.content_retrieval(photos[:3], photos[:4])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.input_dependence(photos[:1], photos[:1])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        metrics.structure_maps(photos[:, :1])
