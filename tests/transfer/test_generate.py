"""`culturegan generate`: NVlabs' seeds and pixel conversion, one PNG per seed and a grid, the
output folder written whole or not at all, and every bad input refused before anything is written."""

import numpy as np
import pytest
import torch
from nvlabs_snapshots import write_snapshot
from PIL import Image

from culturegan import cli
from culturegan.models import ResnetGenerator
from culturegan.models.stylegan2 import Generator
from culturegan.transfer import generate
from culturegan.transfer.generate import GRID_TILES, generate_images, parse_seeds

G_KWARGS = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs={"num_layers": 2},
                synthesis_kwargs={"channel_base": 64, "channel_max": 16})


def generator(seed=0, **kwargs):
    """A small generator with every tensor random (noise strengths too: the noise modes differ)."""
    torch.manual_seed(seed)
    module = Generator(**{**G_KWARGS, **kwargs}).eval()
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.add_(torch.randn_like(tensor) * 0.1)
    return module


@pytest.fixture(scope="module")
def g_ema():
    return generator()


@pytest.fixture(scope="module")
def snapshot(g_ema, tmp_path_factory):
    folder = tmp_path_factory.mktemp("snapshot")
    return write_snapshot(folder / "network-snapshot.pkl", {"G": generator(1), "G_ema": g_ema}, folder / "executed")


def nvlabs_image(g, seed, truncation_psi, c=None):
    """generate.py's image: z from RandomState(seed), x * 127.5 + 128 clamped and truncated to uint8."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, g.z_dim)).float()
    with torch.no_grad():
        image = g(z, c, truncation_psi=truncation_psi, noise_mode="const")
    return (image.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


def pixels(path):
    with Image.open(path) as image:
        return np.asarray(image)


def test_seeds_parse_as_nvlabs_lists_and_ranges():
    assert parse_seeds("0-3,10, 12") == [0, 1, 2, 3, 10, 12]
    assert parse_seeds("4294967295") == [4294967295]


@pytest.mark.parametrize("text, message", [
    ("", "'' is neither a seed nor a range"), ("1,,2", "neither a seed"), ("seven", "'seven' is neither"),
    ("5-3", "the range 5-3 runs backwards"), ("-1", "seed -1 is out of range"),
    ("4294967296", "seed 4294967296 is out of range: seeds are integers from 0 to 4294967295"),
    ("0-2,2", r"seeds \[2\] are given more than once"), ("0-4294967295", "ask for more than 100,000 images"),
])
def test_bad_seeds_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_generate_writes_nvlabs_images_and_a_grid(g_ema, snapshot, tmp_path):
    out = tmp_path / "faces"
    paths = generate_images(snapshot, [0, 1, 7, 10000], out, truncation_psi=0.7)
    names = ["seed0000.png", "seed0001.png", "seed0007.png", "seed10000.png", "grid.png"]
    assert [p.name for p in paths] == names and sorted(p.name for p in out.iterdir()) == sorted(names)
    expected = [nvlabs_image(g_ema, seed, 0.7) for seed in (0, 1, 7, 10000)]
    for path, image in zip(paths, expected):
        assert pixels(path).shape == (16, 16, 3) and np.array_equal(pixels(path), image)
    assert not np.array_equal(expected[0], expected[1])
    grid = pixels(out / "grid.png")
    assert grid.shape == (32, 32, 3) and np.array_equal(grid[16:, :16], expected[2])
    assert np.array_equal(grid[:16, 16:], expected[1])


def test_a_seed_gives_one_image_whatever_the_other_seeds_even_with_random_noise(snapshot, tmp_path):
    for run, seeds in (("alone", [3]), ("together", [1, 2, 3])):
        generate_images(snapshot, seeds, tmp_path / run, noise_mode="random", grid=False)
    assert np.array_equal(pixels(tmp_path / "alone" / "seed0003.png"), pixels(tmp_path / "together" / "seed0003.png"))
    generate_images(snapshot, [3], tmp_path / "const", grid=False)
    assert not np.array_equal(pixels(tmp_path / "alone" / "seed0003.png"), pixels(tmp_path / "const" / "seed0003.png"))


def test_snapshot_g_and_conditional_generators(snapshot, tmp_path):
    generate_images(snapshot, [5], tmp_path / "g", network="G", grid=False)
    assert np.array_equal(pixels(tmp_path / "g" / "seed0005.png"), nvlabs_image(generator(1), 5, 1.0))
    conditional = generator(2, c_dim=3, img_channels=1)
    torch.save(conditional.state_dict(), tmp_path / "conditional.pt")
    generate_images(tmp_path / "conditional.pt", [5], tmp_path / "class2", class_index=2, grid=False)
    image = pixels(tmp_path / "class2" / "seed0005.png")
    assert image.shape == (16, 16)
    assert np.array_equal(image, nvlabs_image(conditional, 5, 1.0, torch.eye(3)[2:])[..., 0])
    generate_images(tmp_path / "conditional.pt", [5], tmp_path / "numpy", class_index=np.int64(2), grid=False)
    assert np.array_equal(pixels(tmp_path / "numpy" / "seed0005.png"), image)
    for class_index, message in ((None, r"conditional on 3 classes: give a class \(0 to 2\)"),
                                 (3, "class 3 is out of range: this generator has classes 0 to 2"),
                                 (np.int64(-1), "class -1 is out of range"),
                                 (2.0, r"class 2.0 is not a class index \(an integer from 0 to 2\)")):
        with pytest.raises(ValueError, match=message):
            generate_images(tmp_path / "conditional.pt", [5], tmp_path / "bad", class_index=class_index)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("options, message", [
    (dict(seeds=[2 ** 32]), "seed 4294967296 is out of range"),
    (dict(seeds=[]), "0 seeds given"),
    (dict(noise_mode="fixed"), "noise mode 'fixed' is not one of "),
    (dict(truncation_psi=float("nan")), "truncation must be a finite number"),
    (dict(class_index=1), "class 1 was given, but this generator is unconditional"),
    (dict(network="D"), "has no network 'D'; it holds G, G_ema"),
])
def test_bad_settings_write_nothing(snapshot, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        generate_images(snapshot, **{"seeds": [0], "out": tmp_path / "out", **options})
    assert list(tmp_path.iterdir()) == []


def test_other_models_write_nothing(tmp_path):
    torch.save(ResnetGenerator(ngf=4, n_blocks=1).state_dict(), tmp_path / "cyclegan.pth")
    with pytest.raises(ValueError, match=r"holds a resnet_1blocks generator .*; generate renders StyleGAN2"):
        generate_images(tmp_path / "cyclegan.pth", [0], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.pkl does not exist"):
        generate_images(tmp_path / "missing.pkl", [0], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cyclegan.pth"]


def test_a_failure_while_generating_leaves_no_folder(snapshot, tmp_path, monkeypatch):
    calls = []

    def fail_on_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return np.zeros((16, 16, 3), np.uint8)

    monkeypatch.setattr(generate, "render", fail_on_third)
    with pytest.raises(RuntimeError, match="out of memory"):
        generate_images(snapshot, [0, 1, 2, 3], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_an_earlier_output_is_replaced_and_other_folders_are_refused(snapshot, tmp_path):
    out = tmp_path / "out"
    generate_images(snapshot, [0, 1], out)
    generate_images(snapshot, [2], out, grid=False)
    assert sorted(p.name for p in out.iterdir()) == ["seed0002.png"]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds other files \(notes.txt\)"):
        generate_images(snapshot, [3], out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "seed0002.png"]


def test_the_grid_shows_the_first_grid_tiles_images(snapshot, tmp_path, monkeypatch):
    """Before: the grid kept every image (hundreds of GB at MAX_SEEDS) and failed after rendering all."""
    monkeypatch.setattr(generate, "GRID_TILES", 3)
    generate_images(snapshot, [0, 1, 2, 3, 4], tmp_path / "out")
    grid = pixels(tmp_path / "out" / "grid.png")
    assert grid.shape == (32, 32, 3)  # 2 columns, 2 rows, the last place black
    assert np.array_equal(grid[16:, :16], pixels(tmp_path / "out" / "seed0002.png")) and not grid[16:, 16:].any()
    assert len(list((tmp_path / "out").iterdir())) == 6


def test_cli_generate(snapshot, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["generate", "--checkpoint", str(snapshot), "--seeds", "0-1", "--truncation", "0.7",
                     "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote 2 images and grid.png to {out}\n"
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png"]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["generate", "--checkpoint", str(snapshot), "--seeds", "0-x", "--out", str(tmp_path / "bad")])
    assert exit_.value.code == 2
    assert "culturegan generate: seeds '0-x': '0-x' is neither a seed" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_says_how_much_of_the_seeds_the_grid_shows(snapshot, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    assert f"which shows the first {GRID_TILES})" in " ".join(capsys.readouterr().out.split())
    monkeypatch.setattr(generate, "GRID_TILES", 2)
    assert cli.main(["generate", "--checkpoint", str(snapshot), "--seeds", "0-2", "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out == f"wrote 3 images and grid.png (the first 2) to {tmp_path / 'o'}\n"
