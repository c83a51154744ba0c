"""Projection into a StyleGAN2 generator (`culturegan project`) and rendering its codes
(`culturegan transfer --latents`): how close the search gets on targets the generator can make,
NVlabs' schedules and noise regulariser, the files written, and every bad input refused before
anything is written."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from culturegan import cli
from culturegan.models import ResnetGenerator
from culturegan.models.stylegan2 import Generator
from culturegan.transfer.generate import to_pixels
from culturegan.transfer.project import (ProjectionSettings, default_batch_size, list_photos, load_perceptual,
                                         noise_buffers, noise_regularisation, project, read_code, synthesize,
                                         w_statistics)

G_KWARGS = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                synthesis_kwargs={"channel_base": 128, "channel_max": 32})
RECOVERY_STEPS = 200  # NVlabs' default is 1000; 200 reach what these small targets allow


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: a second thread buys nothing, and on a busy machine its waits
    made each step 20x slower (measured on the 2-core CPU VM: 0.25 s against 0.01 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_generator(seed=0, noise=True, **kwargs):
    """A random generator whose images lie mostly in [-1, 1], as a trained one's (torgb scaled
    down); noise=False silences its noise inputs, so that w alone decides the image."""
    torch.manual_seed(seed)
    generator = Generator(**{**G_KWARGS, **kwargs}).eval()
    with torch.no_grad():
        for name, tensor in generator.state_dict().items():
            tensor.add_(torch.randn_like(tensor) * 0.1)
            if name.endswith("torgb.weight"):
                tensor.mul_(0.4)
            if name.endswith("noise_strength") and not noise:
                tensor.zero_()
    return generator


def psnr(a, b):
    """PSNR (dB) of the 8-bit images two (1, 3, H, W) generator images are written as."""
    a, b = to_pixels(a).astype(np.float64), to_pixels(b).astype(np.float64)
    return 10 * math.log10(255 ** 2 / np.mean((a - b) ** 2))


def ws_of(generator, *seeds):
    """ws of z seeds; two seeds mix them: the first's w for the first 3 layers, the second's after."""
    ws = [generator.mapping(torch.randn(1, generator.z_dim, generator=torch.Generator().manual_seed(s)), None)
          for s in seeds]
    return ws[0] if len(ws) == 1 else torch.cat([ws[0][:, :3], ws[1][:, 3:]], dim=1)


@pytest.fixture(scope="module")
def quiet_generator():
    return small_generator(noise=False)


@torch.no_grad()
def start_image(generator):
    w_avg, _ = w_statistics(generator)
    return synthesize(generator, w_avg.expand(1, generator.num_ws, -1))


def test_projection_recovers_a_target_the_generator_makes_from_a_known_w(quiet_generator):
    with torch.no_grad():
        target = quiet_generator.synthesis(ws_of(quiet_generator, 5), noise_mode="const")
    projection, = project(quiet_generator, target, steps=RECOVERY_STEPS, culture_weight=0, progress=False)
    start, reached = psnr(start_image(quiet_generator), target), psnr(projection.image[None], target)
    # measured (2-core CPU VM): start 10.3 dB, reached 67.4 dB (a handful of 8-bit values off)
    assert start < 15 and reached > 45 and reached - start > 30, (start, reached)
    assert projection.ws.shape == (quiet_generator.num_ws, quiet_generator.w_dim)
    assert torch.equal(projection.ws, projection.ws[:1].expand_as(projection.ws))  # W: one w for every layer


def test_w_plus_gets_closer_than_w_to_a_style_mixed_target(quiet_generator):
    with torch.no_grad():
        target = quiet_generator.synthesis(ws_of(quiet_generator, 5, 6), noise_mode="const")
    reached = {w_plus: psnr(project(quiet_generator, target, steps=RECOVERY_STEPS, w_plus=w_plus, culture_weight=0,
                                    progress=False)[0].image[None], target) for w_plus in (False, True)}
    # measured: W 15.9 dB (one w cannot make two styles), W+ 40.6 dB
    assert reached[True] > 32 and reached[True] > reached[False] + 15, reached


def test_w_plus_is_at_least_as_close_as_w_where_noise_must_be_recovered_too():
    generator = small_generator()  # noise strengths ~0.1: the target's noise maps are unknown to the search
    with torch.no_grad():
        target = generator.synthesis(ws_of(generator, 5), noise_mode="const")
    reached = {w_plus: psnr(project(generator, target, steps=2 * RECOVERY_STEPS, w_plus=w_plus, culture_weight=0,
                                    progress=False)[0].image[None], target) for w_plus in (False, True)}
    # measured: start 10.2 dB, W 25.6 dB, W+ 27.1 dB (W+ needs the steps: after 200 it is at 23.2 dB, W at 25.6)
    assert reached[False] > 22 and reached[True] >= reached[False] + 0.5, reached


def test_projection_is_deterministic_given_a_seed_and_renormalises_its_noise():
    generator = small_generator(1)
    before = {name: tensor.clone() for name, tensor in generator.state_dict().items()}
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    first, second = (project(generator, target, steps=4, seed=7, progress=False) for _ in range(2))
    alone, = project(generator, target[1:], steps=4, seed=7, progress=False)
    # each photo's code depends on it alone: searched beside another, up to the float rounding of a batch
    torch.testing.assert_close(alone.ws, first[1].ws, rtol=1e-4, atol=1e-5)
    assert torch.equal(project(generator, target, steps=4, seed=7, progress=False, batch_size=1)[1].ws, alone.ws)
    other, = project(generator, target[:1], steps=4, seed=8, progress=False)
    assert torch.equal(first[0].ws, second[0].ws) and torch.equal(first[1].image, second[1].image)
    assert not torch.equal(first[0].ws, other.ws)
    assert set(first[0].distances) == {"pixels", "structure", "culture"}
    assert first[0].noise.keys() == noise_buffers(generator).keys()
    for noise in first[0].noise.values():
        assert abs(float(noise.mean())) < 1e-5 and float(noise.square().mean()) == pytest.approx(1, abs=1e-4)
    # the generator is left as it was: every parameter and buffer, no gradients
    after = generator.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)
    assert all(p.grad is None for p in generator.parameters())


def test_photos_searched_at_once_shrink_with_the_resolution():
    assert [default_batch_size(r) for r in (64, 256, 512, 1024)] == [128, 8, 2, 1]


def test_schedules_and_noise_regulariser_are_nvlabs():
    settings = ProjectionSettings(steps=1000)
    assert settings.learning_rate(0) == 0 and settings.learning_rate(25) == pytest.approx(0.05)
    assert settings.learning_rate(500) == pytest.approx(0.1) and settings.learning_rate(875) == pytest.approx(0.05)
    assert settings.w_noise_factor(0) == 0.05 and settings.w_noise_factor(375) == pytest.approx(0.0125)
    assert settings.w_noise_factor(750) == 0
    # lag-1 products: a constant map 1 along x and y at 16 and 8 px; a checkerboard -1 at 16 px, 0 pooled
    constant, checkerboard = torch.ones(16, 16), (torch.arange(16)[:, None] + torch.arange(16)).remainder(2) * 2 - 1.0
    assert float(noise_regularisation([constant])) == pytest.approx(4)
    assert float(noise_regularisation([checkerboard])) == pytest.approx(2)


@pytest.mark.parametrize("settings, message", [
    (dict(steps=0), "steps must be an integer >= 1"), (dict(culture_weight=-1), "culture_weight must be a finite"),
    (dict(seed=-3), "seed must be an integer"), (dict(batch_size=0), "batch size must be an integer >= 1"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        project(small_generator(), torch.zeros(1, 3, 16, 16), **settings)


def test_targets_of_another_size_and_generators_without_a_mapping_are_refused():
    with pytest.raises(ValueError, match=r"\(N, 3, 16, 16\) for this generator, got \(1, 3, 32, 32\)"):
        project(small_generator(), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="StyleGAN2 generator .with a mapping network., got a ResnetGenerator"):
        project(ResnetGenerator(ngf=4, n_blocks=1), torch.zeros(1, 3, 16, 16))


# ------------------------------------------------------------------------------------ the CLI

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A base generator and a second one of the same shape (a stand-in for its blend), a
    CycleGAN generator, and a folder of two photos of other sizes."""
    root = tmp_path_factory.mktemp("project")
    paths = {"base": root / "base.pth", "blend": root / "blend.pth", "cyclegan": root / "latest_net_G.pth",
             "wide": root / "wide.pth", "photos": root / "photos"}
    torch.save(small_generator(2).state_dict(), paths["base"])
    torch.save(small_generator(3).state_dict(), paths["blend"])
    torch.save(small_generator(4, w_dim=8, z_dim=8).state_dict(), paths["wide"])
    torch.save(ResnetGenerator(ngf=4, n_blocks=1).state_dict(), paths["cyclegan"])
    paths["photos"].mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(paths["photos"] / "wide.png")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(paths["photos"] / "square.jpg")
    return paths


@pytest.fixture(scope="module")
def codes(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("codes") / "codes"
    assert cli.main(["-q", "project", "--checkpoint", str(files["base"]), "--input", str(files["photos"]),
                     "--out", str(out), "--steps", "3", "--w-plus", "--seed", "1"]) == 0
    return out


def test_cli_project_writes_codes_images_and_a_grid_of_targets_above_projections(files, codes):
    assert sorted(p.name for p in codes.iterdir()) == ["grid.png", "square.png", "square.safetensors", "wide.png",
                                                       "wide.safetensors"]
    code = read_code(codes / "wide.safetensors")
    base = small_generator(2)
    assert code.ws.shape == (base.num_ws, base.w_dim) and code.noise.keys() == noise_buffers(base).keys()
    assert code.metadata["space"] == "W+" and code.metadata["num_ws"] == str(base.num_ws)
    assert code.metadata["w_dim"] == "16" and code.metadata["base_model"] == "base.pth"
    with torch.no_grad():
        image = to_pixels(synthesize(base, code.ws[None], code.noise))
    projected = np.asarray(Image.open(codes / "wide.png"))
    assert np.array_equal(projected, image)
    grid = np.asarray(Image.open(codes / "grid.png"))
    with Image.open(files["photos"] / "wide.png") as photo:  # the centre 24 x 24, resized to 16 x 16
        target = np.asarray(photo.crop((8, 0, 32, 24)).resize((16, 16), Image.Resampling.LANCZOS))
    assert grid.shape == (34, 34, 3)  # 2 x 2 tiles of 16 px, 2 px apart; photos in name order: square, wide
    assert np.array_equal(grid[:16, 18:], target) and np.array_equal(grid[18:, 18:], projected)


def test_cli_transfer_renders_codes_with_another_generator(files, codes, tmp_path):
    out = tmp_path / "toons"
    assert cli.main(["-q", "transfer", "--checkpoint", str(files["base"]), "--latents", str(codes),
                     "--out", str(out)]) == 0
    # with the base model, the codes render the projected images exactly
    assert np.array_equal(np.asarray(Image.open(out / "wide.png")), np.asarray(Image.open(codes / "wide.png")))
    assert cli.main(["-q", "transfer", "--checkpoint", str(files["blend"]), "--latents", str(codes),
                     "--out", str(tmp_path / "blended"), "--latent-noise", "const"]) == 0
    blend, code = small_generator(3), read_code(codes / "square.safetensors")
    with torch.no_grad():
        expected = to_pixels(blend.synthesis(code.ws[None], noise_mode="const"))
    assert sorted(p.name for p in (tmp_path / "blended").iterdir()) == ["square.png", "wide.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "blended" / "square.png")), expected)


def test_outputs_are_named_by_the_photos_stems_or_paths_where_stems_repeat(tmp_path):
    for folder in ("photo", "ukiyoe", "ukiyoe/sub"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "1.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo" / "2.png")
    assert list(list_photos([tmp_path / "photo"])) == ["1", "2"]
    assert list(list_photos([tmp_path / "photo", tmp_path / "ukiyoe"])) == ["photo_1", "photo_2", "ukiyoe_1",
                                                                            "ukiyoe_sub_1"]
    Image.new("RGB", (8, 8)).save(tmp_path / "photo" / "1.jpg")
    with pytest.raises(ValueError, match="1.jpg and .*1.png would both be written as 'photo_1'"):
        list_photos([tmp_path])
    Image.new("RGB", (8, 8)).save(tmp_path / "grid.png")
    with pytest.raises(ValueError, match="grid.png would be written as grid.png, the grid's name"):
        list_photos([tmp_path / "grid.png"])


def refused(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error, error


def test_cli_refusals_name_the_problem_and_write_nothing(files, codes, tmp_path, capsys):
    out = tmp_path / "out"
    project = ["project", "--checkpoint", str(files["base"]), "--out", str(out), "--steps", "1", "--input"]
    refused(capsys, ["project", "--checkpoint", str(files["cyclegan"]), "--input", str(files["photos"]), "--out",
                     str(out)], "has no mapping network; project takes StyleGAN2 generators")
    (tmp_path / "empty").mkdir()
    refused(capsys, project + [str(tmp_path / "empty")], "holds no image files")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    refused(capsys, project + [str(tmp_path / "broken.png")], "broken.png: not a readable image")
    refused(capsys, project + [str(files["photos"]), "--steps", "0"], "steps must be an integer >= 1, got 0")
    (tmp_path / "not-torchscript.pt").write_bytes(b"plain bytes")
    refused(capsys, project + [str(files["photos"]), "--perceptual", str(tmp_path / "not-torchscript.pt")],
            "is not a TorchScript module")
    (tmp_path / "a-file").write_text("x")
    refused(capsys, project[:3] + ["--out", str(tmp_path / "a-file"), "--input", str(files["photos"])],
            "is a file, not a folder")
    refused(capsys, project[:3] + ["--out", str(files["photos"]), "--input", str(files["photos"])],
            "photos is not empty: choose a new or empty one")  # never replaces a folder of photos
    refused(capsys, ["transfer", "--checkpoint", str(files["wide"]), "--latents", str(codes), "--out", str(out)],
            "num_ws 6 and w_dim 16 (16 px); this generator has num_ws 6 and w_dim 8")
    refused(capsys, ["transfer", "--checkpoint", str(files["base"]), "--latents", str(codes), "--out", str(out),
                     "--size", "64"], "--size apply to --input images, not to --latents")
    for option, value in (("--strength", "0.5"), ("--quality", "80"), ("--overlap", "8"), ("--batch-size", "2")):
        refused(capsys, ["transfer", "--checkpoint", str(files["base"]), "--latents", str(codes), "--out", str(out),
                         option, value], f"{option} apply to --input images, not to --latents")
    refused(capsys, ["transfer", "--checkpoint", str(files["base"]), "--input", str(files["photos"]), "--out",
                     str(out), "--latent-noise", "const"], "--latent-noise applies to --latents")
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    refused(capsys, project[:3] + ["--out", str(tmp_path / "link"), "--input", str(files["photos"])],
            "is a symbolic link")
    (tmp_path / "link").unlink()
    nan_code = tmp_path / "nan"
    nan_code.mkdir()
    code = read_code(next(codes.glob("*.safetensors")))
    save_file({"ws": torch.full_like(code.ws, float("nan")), **{f"noise/{k}": v for k, v in code.noise.items()}},
              str(nan_code / "x.safetensors"), metadata=code.metadata)
    refused(capsys, ["transfer", "--checkpoint", str(files["base"]), "--latents", str(nan_code), "--out", str(out)],
            "x.safetensors: ws must hold finite floating-point numbers")
    (tmp_path / "empty" / "bogus.safetensors").write_bytes(b"not a safetensors file")
    refused(capsys, ["transfer", "--checkpoint", str(files["base"]), "--latents", str(tmp_path / "empty"), "--out",
                     str(out)], "bogus.safetensors is not a readable .safetensors file")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "broken.png", "empty", "nan",
                                                                                "not-torchscript.pt"]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # the test writes TorchScript, which torch deprecates
def test_a_torchscript_perceptual_network_joins_the_distance(tmp_path):
    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, images: torch.Tensor, resize_images: bool = True, return_lpips: bool = False):
            assert not resize_images and return_lpips  # NVlabs' vgg16.pt call
            return self.conv(images / 255).flatten(1)

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Features()), tmp_path / "features.pt")
    perceptual = load_perceptual(tmp_path / "features.pt")
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    module = torch.jit.load(str(tmp_path / "features.pt"))
    torch.testing.assert_close(perceptual(images), module((images + 1) * 127.5, False, True))
    projection, = project(small_generator(), images[:1], steps=2, perceptual=perceptual, progress=False)
    assert projection.distances["perceptual"] > 0
    torch.save(Features().state_dict(), tmp_path / "state_dict.pt")
    with pytest.raises(ValueError, match="state_dict.pt is not a TorchScript module"):
        load_perceptual(tmp_path / "state_dict.pt")


def test_codes_keep_the_base_models_shape_in_their_metadata(codes):
    with safe_open(str(codes / "square.safetensors"), "pt") as file:
        metadata = file.metadata()
        assert file.get_slice("ws").get_shape() == [6, 16]
    assert metadata["format"] == "culturegan.projection" and metadata["img_resolution"] == "16"
    assert metadata["steps"] == "3" and metadata["seed"] == "1" and metadata["photo"] == "square.jpg"
