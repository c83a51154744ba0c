"""culturegan.culture: the colour, texture and line features, and culture profiles."""

import pytest
import torch

from culturegan.culture import GROUPS, CultureFeatureExtractor, CultureProfile, extract, rgb_to_lab
from culturegan.nn.filters import luma


def ink_wash(n, size=64, seed=0):
    """Near-monochrome, soft blobs on pale paper: little saturation, few edges."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for _ in range(n):
        centre = torch.rand(2, generator=g) * 1.2 - 0.6
        blob = torch.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (0.1 + 0.2 * torch.rand(1, generator=g)))
        gray = 0.9 - 0.7 * blob
        images.append(torch.stack([gray, gray * 0.98, gray * 0.95]))
    return torch.stack(images) * 2 - 1


def kente(n, size=64, seed=0, fixed_width=False):
    """Bright saturated stripes and blocks: strong colour, straight 0/90 degree edges."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[0.95, 0.75, 0.05], [0.1, 0.55, 0.15], [0.8, 0.1, 0.1], [0.05, 0.05, 0.05]])
    images = []
    for _ in range(n):
        width = 8 if fixed_width else int(torch.randint(4, 9, (1,), generator=g))
        cols = (torch.arange(size) // width) % 4
        rows = (torch.arange(size) // (2 * width)) % 2
        index = (cols[None, :] + 2 * rows[:, None]) % 4
        images.append(palette[index].permute(2, 0, 1))
    return torch.stack(images) * 2 - 1


def test_groups_shapes_and_determinism():
    images = torch.rand(3, 3, 48, 40) * 2 - 1
    first, again = extract(images), extract(images)
    assert {g: v.shape for g, v in first.groups().items()} == {"colour": (3, 10), "texture": (3, 384), "line": (3, 37)}
    for g in GROUPS:
        assert torch.equal(getattr(first, g), getattr(again, g)), g
        assert torch.isfinite(getattr(first, g)).all(), g
    assert first.all().shape == (3, 431)
    assert extract(images, gram=True).texture.shape == (3, 384 + 6 * 32 * 33 // 2)  # 2 kernels x 3 scales
    assert not torch.equal(extract(images, seed=1).texture, first.texture)  # the seed picks the filters


def test_every_group_is_differentiable_in_the_images():
    images = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    features = extract(images)
    for g in GROUPS:
        (grad,) = torch.autograd.grad(getattr(features, g).sum(), images, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, g


def test_a_pixel_grid_cannot_fake_the_coarse_statistics():
    """A period-2 checkerboard over a flat colour averages out of the 2x and 4x copies: the colour
    statistics (taken on the 2x copy) and the coarse line and texture statistics do not see it,
    so a generator cannot meet a culture's colour spread or its coarse edges with a dot grid;
    the full-resolution texture statistics do see it (and charge for it)."""
    blocks = kente(2, size=32, fixed_width=True)  # 8-pixel blocks: whole 2x2 and 4x4 cells
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1).float()
    grid = blocks * 0.6 + 0.3 * checker
    plain, gridded = extract(blocks * 0.6), extract(grid)
    torch.testing.assert_close(gridded.colour, plain.colour, atol=1e-5, rtol=0)
    per_scale = 12  # edge statistics per scale, then the stroke width
    torch.testing.assert_close(gridded.line[:, per_scale:3 * per_scale], plain.line[:, per_scale:3 * per_scale],
                               atol=1e-5, rtol=0)
    per_bank = 2 * 32 * 2  # mean and std of 32 filters, kernels 3 and 5, per scale
    torch.testing.assert_close(gridded.texture[:, per_bank:], plain.texture[:, per_bank:], atol=1e-5, rtol=0)
    assert (gridded.texture[:, :per_bank] - plain.texture[:, :per_bank]).abs().max() > 0.1


def test_lab_of_known_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).view(3, 3, 1, 1)
    lab = rgb_to_lab(rgb).view(3, 3)
    expected = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20]])
    torch.testing.assert_close(lab, expected, atol=0.05, rtol=0)


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_tells_two_cultures_apart(group):
    """Held-out images are much nearer their own culture's profile than the other's."""
    extractor = CultureFeatureExtractor()
    with torch.no_grad():
        ink_profile = CultureProfile.fit("ink_wash", extractor(ink_wash(12, seed=0)))
        held_out_ink, held_out_kente = extractor(ink_wash(6, seed=1)), extractor(kente(6, seed=1))
    own = ink_profile.distance(held_out_ink, group)
    other = ink_profile.distance(held_out_kente, group)
    assert other.min() > 3 * own.max(), (group, own, other)


def test_profile_save_load_round_trip(tmp_path):
    features = extract(kente(5))
    profile = CultureProfile.fit("kente", features)
    path = profile.save(tmp_path / "profiles" / "kente")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["kente.json", "kente.safetensors"]
    loaded = CultureProfile.load(path)
    assert loaded.culture == "kente" and loaded.count == 5
    for g in GROUPS:
        torch.testing.assert_close(loaded.distance(features, g), profile.distance(features, g))


def test_profile_errors(tmp_path):
    features = extract(kente(3))
    with pytest.raises(ValueError, match="at least 2 images"):
        CultureProfile.fit("kente", extract(kente(1)))
    profile = CultureProfile.fit("kente", features)
    with pytest.raises(ValueError, match="unknown feature group"):
        profile.distance(features, "shape")
    path = profile.save(tmp_path / "kente")
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable culture profile"):
        CultureProfile.load(path)


@pytest.mark.parametrize("images, error, message", [
    (torch.rand(2, 1, 32, 32), ValueError, r"\(N, 3, H, W\) RGB"),
    (torch.rand(3, 32, 32), ValueError, r"\(N, 3, H, W\) RGB"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), TypeError, "floating point"),
    (torch.rand(2, 3, 8, 8), ValueError, "at least 16 x 16"),
    ([[1.0]], TypeError, "torch.Tensor"),
])
def test_bad_images_raise_clear_errors(images, error, message):
    with pytest.raises(error, match=message):
        extract(images)


def test_colour_statistics_follow_the_image():
    gray, saturated = extract(ink_wash(2)).colour, extract(kente(2)).colour
    assert (saturated[:, 6] > gray[:, 6] + 0.3).all()  # HSV saturation mean
    assert (saturated[:, 8] > gray[:, 8]).all()  # colourfulness


def test_profile_from_a_culture_folder(tmp_path):
    from PIL import Image

    for culture, make in (("ink_wash", ink_wash), ("kente", kente)):
        (tmp_path / culture).mkdir()
        for i, image in enumerate(make(4, size=48, seed=2)):
            array = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
            Image.fromarray(array).save(tmp_path / culture / f"{i}.png")
    profile = CultureProfile.fit_folder(tmp_path, "kente", size=32, batch_size=3)
    assert profile.culture == "kente" and profile.count == 4
    near = profile.distance(extract(kente(3, size=32, seed=5)), "colour")
    far = profile.distance(extract(ink_wash(3, size=32, seed=5)), "colour")
    assert far.min() > near.max()


def test_every_torchrun_rank_fits_the_profile_on_every_image(tmp_path, monkeypatch):
    # Under torchrun the trainer fits the profiles after the process group is up: a rank's
    # share of the folder would give each rank its own culture loss.
    from PIL import Image

    (tmp_path / "kente").mkdir()
    for i, image in enumerate(kente(5, size=32, seed=2)):
        array = ((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(array).save(tmp_path / "kente" / f"{i}.png")
    alone = CultureProfile.fit_folder(tmp_path, "kente", size=32, batch_size=2)
    for name, value in (("is_initialized", True), ("get_world_size", 2), ("get_rank", 1)):
        monkeypatch.setattr(torch.distributed, name, lambda *args, value=value, **kwargs: value)
    second_rank = CultureProfile.fit_folder(tmp_path, "kente", size=32, batch_size=2)
    assert second_rank.count == alone.count == 5
    for group in GROUPS:
        torch.testing.assert_close(second_rank.means[group], alone.means[group])


def test_line_statistics_see_an_edge_of_one_brightness():
    """Two halves of equal luminance and different hue: luminance has no edge there, the colour
    gradient does (a generator cannot meet a culture's edge statistics with hue bands for free),
    and as strongly as a grey step of the same height in each channel."""
    red = torch.tensor([0.8, 0.2, 0.5])
    green = torch.tensor([0.2, 0.0, 0.5])
    green[1] = (0.299 * (red[0] - green[0]) + 0.587 * red[1]) / 0.587  # the same luma as red
    halves = torch.where(torch.arange(32) < 16, 1, 0).view(1, 1, 1, 32).float()
    image = red.view(1, 3, 1, 1) * halves + green.view(1, 3, 1, 1) * (1 - halves)
    image = image.expand(1, 3, 32, 32)
    luminance = luma(image)
    assert float(luminance.max() - luminance.min()) < 1e-6
    flat = extract(torch.full((1, 3, 32, 32), 0.2)).line
    line = extract(image * 2 - 1).line
    assert float(flat[0, :2].abs().max()) < 1e-5  # no gradient
    height = float((red - green).norm() / 3 ** 0.5)  # the root mean square step of the channels
    grey = torch.where(torch.arange(32) < 16, 0.5 + height / 2, 0.5 - height / 2).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    torch.testing.assert_close(line[0, :3], extract(grey * 2 - 1).line[0, :3], atol=1e-5, rtol=1e-4)
    assert float(line[0, 2]) > float(flat[0, 2]) + 0.02  # edge density (a soft count): the boundary counts
