"""Periodic artifacts: a dot grid, a checkerboard or a local lattice over smooth pictures is
caught; the pictures themselves, their straight edges and the procedural cultures are not."""

import pytest
import torch

from culturegan import metrics
from culturegan.metrics import spectrum
from helpers import culture_images as images

SIZE = 64


@pytest.fixture(scope="module")
def photos():
    return images("photo", 8, offset=200, size=SIZE)


def grid(period: int, size: int = SIZE) -> torch.Tensor:
    """(size, size) 1 on a dot grid of `period` pixels, 0 elsewhere."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return ((yy % period == 0) & (xx % period == 0)).float()


def test_smooth_pictures_and_their_edges_have_no_peaks(photos):
    assert metrics.periodic_artifacts(photos)["set"] < spectrum.SHARE_FLOOR
    stripes = torch.zeros(4, 3, SIZE, SIZE)
    stripes[..., SIZE // 2:, :] = 1.0  # a straight horizon
    stripes[..., :, ::16] = -1.0  # lines 16 pixels apart: coarser than the high band
    assert metrics.periodic_artifacts(stripes)["set"] < spectrum.SHARE_FLOOR


@pytest.mark.parametrize("period", [2, 3, 4, 5, 7])
def test_a_dot_grid_overlay_is_caught(photos, period):
    dotted = (photos - 0.3 * grid(period)).clamp(-1, 1)
    result = metrics.periodic_artifact_ratio(dotted, photos)
    assert result["ratio"] > 4 and min(result["per_image"]) > 0.04, result["outputs"]


def test_a_checkerboard_and_a_local_lattice_are_caught(photos):
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    checkerboard = (photos + 0.1 * ((yy + xx) % 2 * 2 - 1)).clamp(-1, 1)
    assert metrics.periodic_artifact_ratio(checkerboard, photos)["ratio"] > 4
    lattice = photos.clone()  # a black lattice in one quarter only, as a collapsed model draws it
    lattice[..., :32, :32] = torch.where(((yy[:32, :32] % 4 == 0) | (xx[:32, :32] % 4 == 0)), -1.0,
                                         lattice[..., :32, :32])
    assert metrics.periodic_artifact_ratio(lattice, photos)["ratio"] > 4


def test_the_cultures_are_compared_with_themselves():
    kente = images("kente", 8, offset=200, size=SIZE)
    halves = metrics.periodic_artifact_ratio(kente[:4], kente[4:])
    assert 0.25 < halves["ratio"] < 4  # real periodic structure compares as real
    for culture in ("ukiyoe", "ink_wash", "impressionist"):
        assert metrics.periodic_artifacts(images(culture, 8, offset=200, size=SIZE))["set"] < 0.02


def test_flat_images_and_bad_shapes():
    assert metrics.periodic_artifacts(torch.zeros(2, 3, 32, 32)) == {"set": 0.0, "per_image": [0.0, 0.0]}
    with pytest.raises(ValueError, match="at least 32 x 32"):
        metrics.periodic_artifacts(torch.zeros(2, 3, 16, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        metrics.periodic_artifacts(torch.zeros(2, 32, 32))
