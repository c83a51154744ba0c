"""Steering a transfer: a reference image or folder sets a multi-culture generator's style code,
strength moves from the input (0) to the full transfer (1); the CLI's --reference, --strength
and --source-culture; refusals of what cannot be steered, before anything is written."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import culturegan
from culturegan import cli
from culturegan.culture import GROUPS, CultureFeatureExtractor, CultureProfile, extract
from culturegan.culture import reference_features as culture_reference_features
from culturegan.data import open_rgb
from culturegan.data.images import to_tensor
from culturegan.models import MultiCultureGenerator, ResnetGenerator, convert
from culturegan.models.loading import load_run
from culturegan.training import TrainConfig, Trainer
from culturegan.transfer import Stylizer

CULTURES = ["photo", "ink", "kente"]
FEATURES = 431  # CultureFeatures.all() without Gram matrices
PHOTO, KENTE = 0, 2


@pytest.fixture(scope="module")
def multi(tmp_path_factory, references):
    """(file, generator): a hand-built multi-culture generator with a reference projection. Its
    style weights are drawn away from the identity initialisation, so that the code matters, and
    its projection's first layer widely; its reference statistics are the two paintings', which
    it then sees as opposite points (standardised features z and -z), so that whatever the
    features they fall on different sides of its LeakyReLU's kinks (the projection is then not
    affine between them)."""
    torch.manual_seed(0)
    generator = MultiCultureGenerator(len(CULTURES), ngf=8, n_blocks=2, style_dim=8, feature_dim=FEATURES)
    with torch.no_grad():
        for block in generator.blocks:
            block.style.weight.normal_(0, 0.5)
        generator.reference_projection[0].weight.normal_(0, 0.3)
    generator.fit_reference_statistics(reference_features(references, "paintings"))
    folder = tmp_path_factory.mktemp("multi")
    torch.save(generator.state_dict(), folder / "multi.pth")
    path, _ = convert(folder / "multi.pth", folder / "multi.safetensors", {"all": CULTURES})
    return path, generator.eval()


def smooth_images(count, seed, size=32):
    """Image-like inputs: coarse random colour fields, bicubically enlarged, in [-1, 1]."""
    coarse = torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return F.interpolate(coarse, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """ROOT/<name>/ reference folders: "paintings" (red stripes, and a pale wash: images far enough
    apart that the projection is not affine between them), "blots" (one image), "empty" (none)."""
    root = tmp_path_factory.mktemp("references")
    rng = np.random.default_rng(0)
    for name in ("paintings", "blots", "empty"):
        (root / name).mkdir()
    stripes = (np.arange(48) // 4 % 2)[None, :, None] * np.array((200, 40, 30)) + rng.normal(0, 20, (40, 48, 3))
    wash = rng.normal(235, 6, (44, 36, 3))
    for i, pixels in enumerate((stripes, wash)):
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "paintings" / f"{i}.png")
    blots = np.kron(rng.integers(0, 255, (5, 6, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    Image.fromarray(blots).save(root / "blots" / "0.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-step training runs of each mode: {"pair", "contrastive", "multi"} -> run folder."""
    data = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for culture, colour in (("photo", (120, 120, 120)), ("ukiyoe", (200, 60, 40)), ("kente", (220, 160, 20))):
        (data / culture).mkdir()
        for i in range(3):
            pixels = np.clip(rng.normal(0, 30, (36, 36, 3)) + np.array(colour), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(data / culture / f"{i}.png")
    modes = {"pair": {}, "contrastive": {"nce_patches": 16, "pool_size": 0},
             "multi": {"source": "", "target": "", "style_dim": 8, "batch_size": 2, "lambda_reference": 0}}
    folders = {}
    for mode, changes in modes.items():
        folders[mode] = tmp_path_factory.mktemp(mode)
        settings = dict(data_root=str(data), source="photo", target="ukiyoe", load_size=36, crop_size=32, workers=0,
                        ngf=4, n_blocks=1, ndf=4, profile_size=32, steps=1, decay_steps=0, device="cpu",
                        output=str(folders[mode]), progress=False, sample_every=0, mode=mode)
        Trainer(TrainConfig(**{**settings, **changes})).fit()
    return folders


# --------------------------------------------------------------------------------- strength

def test_strength_zero_returns_the_input_and_small_strengths_stay_near_it(multi, runs):
    path, _ = multi
    x = smooth_images(2, seed=1, size=36)  # 36: padded to the generator's multiple and cropped back
    for checkpoint in (path, runs["multi"], runs["pair"], runs["contrastive"]):
        assert torch.equal(Stylizer(checkpoint, device="cpu", strength=0,
                                    target_culture="kente" if checkpoint in (path, runs["multi"]) else None)(x), x)
    picture = Image.fromarray(np.random.default_rng(2).integers(0, 255, (20, 28, 3), dtype=np.uint8))
    stylizer = Stylizer(path, "ink", device="cpu", strength=0)
    assert np.array_equal(np.asarray(stylizer.image(picture)), np.asarray(picture))  # 8-bit pixels exactly
    # the formulas leave the input continuously (strength 0 itself does not run them), whole and tiled
    for tile in (None, 16):
        changes = [float((Stylizer(path, "kente", device="cpu", tile=tile, overlap=4, strength=strength,
                                   source_culture="photo")(x) - x).abs().max()) for strength in (1e-3, 0.25)]
        assert changes[0] < 0.01 < 0.1 < changes[1], changes


def profile_distance(profile, images):
    """The summed mean Mahalanobis distance of images to a culture profile, over every feature group."""
    features = extract(images)
    return sum(float(profile.distance(features, group).mean()) for group in GROUPS)


def test_outputs_move_monotonically_toward_the_target_culture_as_strength_grows(multi):
    path, generator = multi
    run = load_run(path)
    # The target culture as this generator renders it, on other images than the ones measured.
    with torch.no_grad():
        rendered = generator(smooth_images(16, seed=3), cultures=torch.full((16,), KENTE))
    target = CultureProfile.fit("kente", extract(rendered))
    x = smooth_images(8, seed=4)
    strengths = (0, 0.25, 0.5, 0.75, 1)
    outputs = [Stylizer(run, "kente", device="cpu", strength=s, source_culture="photo")(x) for s in strengths]
    distances = [profile_distance(target, output) for output in outputs]
    assert all(nearer < farther for farther, nearer in zip(distances, distances[1:])), distances
    assert distances[-1] < 0.1 * distances[0], distances
    with torch.no_grad():
        torch.testing.assert_close(outputs[-1], generator(x, cultures=torch.full((8,), KENTE)), rtol=0, atol=1e-5)
        # half way: the generator at the mid code, half its reconstruction error at the photo code removed
        own, full = (generator.style_code(cultures=torch.tensor([c])) for c in (PHOTO, KENTE))
        mid = generator.render(x, torch.lerp(own, full, 0.5).expand(8, -1))
        removed = 0.5 * (x - generator(x, cultures=torch.full((8,), PHOTO)))
        torch.testing.assert_close(outputs[2], (mid + removed).clamp(-1, 1), rtol=0, atol=1e-5)
        # which is not a blend of pixels
        assert (outputs[2] - torch.lerp(x, outputs[-1], 0.5)).abs().max() > 0.05


def test_generators_without_culture_codes_blend_pixels(runs):
    x = smooth_images(2, seed=5)
    for mode in ("pair", "contrastive"):
        full = Stylizer(runs[mode], device="cpu")(x)
        half = Stylizer(runs[mode], device="cpu", strength=0.3)(x)
        torch.testing.assert_close(half, torch.lerp(x, full, 0.3), rtol=0, atol=1e-6)
        assert not torch.allclose(half, full, atol=1e-3)


# -------------------------------------------------------------------------------- reference

def reference_features(root, name):
    """The reference features of each image of ROOT/<name> (culturegan.culture.reference_features,
    which training computes too; tests/culture/test_reference_view.py checks that it sees images
    as culture profiles see them)."""
    extractor = CultureFeatureExtractor()
    return torch.cat([culture_reference_features(to_tensor(open_rgb(path)[0])[None], extractor)
                      for path in sorted((root / name).iterdir())])


def test_a_reference_sets_the_style_code(multi, references):
    path, generator = multi
    x = smooth_images(2, seed=6)
    by_culture = Stylizer(path, "kente", device="cpu")(x)
    by_image = Stylizer(path, device="cpu", reference=references / "paintings" / "0.png")(x)
    by_folder = Stylizer(path, device="cpu", reference=references / "paintings")(x)
    other_folder = Stylizer(path, device="cpu", reference=references / "blots")(x)
    # every reference changes the output (float noise here is below 1e-5)
    for output in (by_image, by_folder, other_folder):
        assert (output - by_culture).abs().mean() > 1e-3
    assert (by_folder - by_image).abs().mean() > 1e-3 and (by_folder - other_folder).abs().mean() > 1e-3
    features = reference_features(references, "paintings")
    with torch.no_grad():
        codes = generator.style_code(reference_features=features)
        torch.testing.assert_close(by_image, generator.render(x, codes[:1].expand(2, -1)), rtol=0, atol=1e-5)
        # a folder: the mean of its images' codes, not the code of their mean features
        torch.testing.assert_close(by_folder, generator.render(x, codes.mean(0, keepdim=True).expand(2, -1)),
                                   rtol=0, atol=1e-5)
        mean_features = generator(x, reference_features=features.mean(0, keepdim=True).expand(2, -1))
        assert (by_folder - mean_features).abs().max() > 1e-3
    steered_from_photo = Stylizer(path, device="cpu", reference=references / "paintings", strength=0,
                                  source_culture="photo")(x)
    torch.testing.assert_close(steered_from_photo, x, rtol=0, atol=1e-5)


def test_stylize_takes_a_reference_and_a_strength(multi, references):
    path, _ = multi
    x = smooth_images(1, seed=7)[0]
    steered = culturegan.stylize(x, checkpoint=path, device="cpu", reference=references / "blots")
    assert torch.equal(steered, Stylizer(path, device="cpu", reference=references / "blots")(x[None])[0])
    unchanged = culturegan.stylize(x, checkpoint=path, device="cpu", reference=references / "blots", strength=0,
                                   source_culture="ink")
    torch.testing.assert_close(unchanged, x, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"strength must be a number in \[0, 1\].*got 2"):
        culturegan.stylize(x, checkpoint=path, device="cpu", strength=2)


# ---------------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def plain_files(tmp_path_factory):
    """A CycleGAN generator file; multi-culture generator files that name no cultures, and whose
    reference projection takes 10 features, not culturegan's 431."""
    folder = tmp_path_factory.mktemp("plain")
    torch.save(ResnetGenerator(ngf=4, n_blocks=1).state_dict(), folder / "latest_net_G.pth")
    torch.save(MultiCultureGenerator(2, ngf=4, n_blocks=1, style_dim=8).state_dict(), folder / "unnamed.pth")
    torch.save(MultiCultureGenerator(2, ngf=4, n_blocks=1, style_dim=8, feature_dim=10).state_dict(),
               folder / "narrow.pth")
    return {name: folder / file for name, file in (("cyclegan", "latest_net_G.pth"), ("unnamed", "unnamed.pth"),
                                                    ("narrow", "narrow.pth"))}


def bad_steering(multi, runs, references, plain_files, tmp_path):
    """(checkpoint, Stylizer keyword arguments, error, message) of every refused steering."""
    path, _ = multi
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated" * 4)
    paintings = references / "paintings"
    strength = r"strength must be a number in \[0, 1\] \(0: the input unchanged, 1: the full transfer\), got "
    return [
        (path, dict(reference=tmp_path / "missing"), FileNotFoundError, "reference .*missing does not exist"),
        (path, dict(reference=tmp_path / "notes.txt"), ValueError, "reference .*notes.txt: not a readable image"),
        (path, dict(reference=tmp_path / "corrupt"), ValueError, "reference .*broken.png: not a readable image"),
        (path, dict(reference=references / "empty"), ValueError, "reference folder .*empty holds no image files"),
        (path, dict(target_culture="kente", strength=-0.1), ValueError, strength + "-0.1"),
        (path, dict(target_culture="kente", strength=1.5), ValueError, strength + "1.5"),
        (path, dict(target_culture="kente", strength=math.nan), ValueError, strength + "nan"),
        (path, dict(target_culture="kente", strength="0.5"), ValueError, strength + "'0.5'"),
        (path, dict(target_culture="kente", strength=True), ValueError, strength + "True"),
        (path, dict(target_culture="kente", strength=0.5), ValueError,
         r"strength 0.5 on a multi-culture generator .* give source_culture .*one of \['photo', 'ink', 'kente'\]"),
        (path, dict(target_culture="kente", strength=0.5, source_culture="maya"), ValueError,
         r"source_culture must be one of \['photo', 'ink', 'kente'\], got 'maya'"),
        (path, dict(target_culture="kente", reference=paintings), ValueError,
         "either as target_culture or as a reference, not both"),
        (runs["pair"], dict(reference=paintings), ValueError,
         r"reference applies to multi-culture generators only .*is a two-culture \(CycleGAN\) run"),
        (runs["contrastive"], dict(reference=paintings), ValueError,
         r"reference applies to multi-culture generators only .*is a contrastive \(CUT\) run"),
        (plain_files["cyclegan"], dict(reference=paintings), ValueError,
         r"multi-culture generators only .*is a resnet_1blocks generator"),
        (runs["pair"], dict(strength=0.5, source_culture="photo"), ValueError,
         "source_culture applies to multi-culture generators only"),
        (runs["multi"], dict(reference=paintings), ValueError,
         r"built without a reference projection \(feature_dim\), so no reference can steer it"),
        (plain_files["unnamed"], dict(), ValueError, "does not name its cultures: steer it with a reference"),
        (plain_files["narrow"], dict(reference=paintings), ValueError,
         r"the reference projection takes 10 culture features, culturegan's culture features .* have 431"),
    ]


def test_bad_steering_is_refused_by_name(multi, runs, references, plain_files, tmp_path):
    for checkpoint, kwargs, error, message in bad_steering(multi, runs, references, plain_files, tmp_path):
        with pytest.raises(error, match=message):
            Stylizer(checkpoint, device="cpu", **kwargs)


# ----------------------------------------------------------------------------------------- CLI

def transfer(checkpoint, source, output, *options):
    return cli.main(["transfer", "--checkpoint", str(checkpoint), "--input", str(source), "--output", str(output),
                     "--device", "cpu", *options])


def test_cli_transfer_with_a_reference_and_a_strength(multi, references, tmp_path, capsys):
    path, _ = multi
    (tmp_path / "in").mkdir()
    pixels = np.random.default_rng(8).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in" / "photo.png")
    paintings = str(references / "paintings")
    assert transfer(path, tmp_path / "in", tmp_path / "half", "--reference", paintings, "--strength", "0.5",
                    "--source-culture", "photo") == 0
    assert "transferred 1 image(s)" in capsys.readouterr().out
    expected = Stylizer(path, device="cpu", reference=paintings, strength=0.5, source_culture="photo").image(
        Image.fromarray(pixels))
    written = np.asarray(Image.open(tmp_path / "half" / "photo.png"))
    assert np.array_equal(written, np.asarray(expected)) and not np.array_equal(written, pixels)
    assert transfer(path, tmp_path / "in", tmp_path / "none", "--reference", paintings, "--strength", "0",
                    "--source-culture", "photo") == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "none" / "photo.png")), pixels)


@pytest.mark.parametrize("options, message", [
    (["--target-culture", "kente", "--strength", "nan"], r"strength must be a number in \[0, 1\].*got nan"),
    (["--target-culture", "kente", "--strength", "1.01"], r"strength must be a number in \[0, 1\].*got 1.01"),
    (["--reference", "{empty}"], "reference folder .*empty holds no image files"),
    (["--target-culture", "kente", "--strength", "0.5"], "give source_culture"),
])
def test_cli_refuses_bad_steering_and_writes_nothing(multi, references, tmp_path, capsys, options, message):
    path, _ = multi
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    options = [option.format(empty=references / "empty") for option in options]
    with pytest.raises(SystemExit) as error:
        transfer(path, tmp_path / "in", tmp_path / "out", *options)
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("culturegan transfer: ") and re.search(message, err), err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_reference_for_a_pair_generator(runs, references, tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        transfer(runs["pair"], references / "paintings", tmp_path / "out", "--reference", str(references / "blots"))
    assert error.value.code == 2
    assert "reference applies to multi-culture generators only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
