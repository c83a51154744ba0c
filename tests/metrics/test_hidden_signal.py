"""The hidden-signal check: a cycle that decodes an invisible code breaks under a perturbation a
person would not notice; a cycle that follows the visible picture does not."""

import pytest
import torch

from culturegan import metrics
from culturegan.metrics import steganography
from helpers import culture_images as images


@pytest.fixture(scope="module")
def photos():
    return images("photo", 6, offset=300, size=48)


def test_perturbations_are_small_and_keep_shape(photos):
    for name, perturb in metrics.PERTURBATIONS.items():
        moved = perturb(photos)
        assert moved.shape == photos.shape and moved.dtype == torch.float32
        change = float((moved - photos).abs().mean() / 2)
        assert 0 < change < 0.03, name
    torch.testing.assert_close(steganography.gaussian_noise(photos), steganography.gaussian_noise(photos))


def test_a_copy_back_follows_what_is_visible(photos):
    result = metrics.hidden_signal(lambda x: x.float(), photos, photos)
    assert result["clean"] == 0.0
    assert result["amplification"] <= 1.0 + 1e-6  # the error rises by the perturbation's own size at most


def test_a_hidden_code_is_exposed(photos):
    pattern = images("ukiyoe", 1, offset=300, size=48)
    hide = 0.005  # the photo at 0.5% amplitude inside one pattern: invisible
    outputs = pattern + hide * photos
    result = metrics.hidden_signal(lambda y: ((y - pattern) / hide).clamp(-1, 1), outputs, photos)
    assert result["clean"] < 1e-4  # the cycle looks perfect
    assert result["amplification"] > 10 and max(result["perturbed"].values()) > 0.1
    decode = lambda y: ((y - pattern) / hide).clamp(-1, 1)  # noqa: E731
    assert metrics.hidden_signal(decode, outputs, photos, reconstructions=decode(outputs)) == result


def test_shapes_must_match(photos):
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.hidden_signal(lambda x: x, photos[:2], photos)
