"""The view a reference image is seen at (culturegan.culture.reference_view): the shorter side
resized to REFERENCE_SIDE, then the centre square, as culture profiles see their images."""

import numpy as np
import torch
from PIL import Image

from culturegan.culture import REFERENCE_SIDE, CultureFeatureExtractor, extract, reference_features, reference_view
from culturegan.data import centre_cropped
from culturegan.data.images import to_tensor


def test_a_reference_is_seen_as_culture_profiles_see_their_images(tmp_path):
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8))
    for name, size in (("wide", (300, 180)), ("small", (60, 40))):  # shrunk, and enlarged
        (tmp_path / name).mkdir()
        image = coarse.resize(size, Image.Resampling.BICUBIC)
        image.save(tmp_path / name / "0.png")
        seen = reference_view(to_tensor(image)[None])
        assert seen.shape == (1, 3, REFERENCE_SIDE, REFERENCE_SIDE)
        profiles_see = centre_cropped(tmp_path, name, REFERENCE_SIDE)[0]["image"][None]  # PIL's resize
        assert float((seen - profiles_see).abs().mean()) < 0.01, name
    square = torch.rand(2, 3, REFERENCE_SIDE, REFERENCE_SIDE) * 2 - 1
    assert torch.equal(reference_view(square), square)


def test_reference_features_are_the_culture_features_of_the_view():
    images = torch.rand(3, 3, 32, 48, requires_grad=True) * 2 - 1
    features = reference_features(images, CultureFeatureExtractor())
    torch.testing.assert_close(features, extract(reference_view(images.detach())).all())
    assert features.shape == (3, CultureFeatureExtractor().feature_dim()) and not features.requires_grad
