"""Applying generators: any image size, seamless tiles, files and folders (EXIF, grayscale,
alpha, corrupt files, never overwriting an input), stylize(), target cultures, the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image

import culturegan
from culturegan import cli
from culturegan.models import MultiCultureGenerator, convert
from culturegan.models.loading import load_run
from culturegan.transfer import Stylizer, transfer_files
from culturegan.transfer.tiling import ramp, tile_starts

RECEPTIVE_RADIUS = 24  # ResnetGenerator(n_blocks=1): 7x7 stem, 2 strided 3x3, 2 3x3 at 1/4, 2 up, 7x7 head


def test_any_size_is_padded_to_the_networks_multiple_and_cropped_back(generator_file):
    stylizer = Stylizer(generator_file, device="cpu")
    x = torch.rand(1, 3, 37, 53) * 2 - 1
    y = stylizer(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3), mode="reflect")
    with torch.no_grad():
        torch.testing.assert_close(y, stylizer.model(padded)[..., :37, :53], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        stylizer(torch.rand(3, 8, 8))


def _exact_mask(height, width, tile, overlap):
    """Pixels where every tile that contributes is farther than the receptive radius from its
    own inner edges (there tiling must equal the whole image exactly)."""
    exact = torch.ones(height, width, dtype=torch.bool)
    for top in tile_starts(height, tile, overlap, 4):
        for left in tile_starts(width, tile, overlap, 4):
            near = torch.zeros(tile, tile, dtype=torch.bool)
            if top > 0:
                near[:RECEPTIVE_RADIUS] = True
            if top + tile < height:
                near[-RECEPTIVE_RADIUS:] = True
            if left > 0:
                near[:, :RECEPTIVE_RADIUS] = True
            if left + tile < width:
                near[:, -RECEPTIVE_RADIUS:] = True
            exact[top:top + tile, left:left + tile] &= ~near
    return exact


def test_tiles_equal_the_whole_image_away_from_tile_borders(generator_file):
    x = torch.rand(1, 3, 160, 200) * 2 - 1
    whole = Stylizer(generator_file, device="cpu")(x)
    tiled = Stylizer(generator_file, device="cpu", tile=96, overlap=32)(x)
    difference = (tiled - whole).abs()[0].amax(0)
    exact = _exact_mask(160, 200, 96, 32)
    assert exact.float().mean() > 0.3
    assert difference[exact].max() < 1e-4
    # near the borders the blend mixes a tile's edge with its neighbour's interior: small, smooth
    assert difference.mean() < 0.04 and difference.max() < 0.5
    # without the shared statistics every tile would be normalised on its own: far off everywhere
    separately = Stylizer(generator_file, device="cpu")(x[..., :96, :96])
    assert (separately - whole[..., :96, :96]).abs()[..., :64, :64].max() > 1e-3


def test_tiling_geometry():
    assert tile_starts(100, 64, 16) == [0, 36]
    assert tile_starts(64, 64, 16) == [0]
    assert tile_starts(200, 64, 16) == [0, 48, 96, 136]
    assert tile_starts(200, 64, 18, 4) == [0, 44, 88, 132, 136]  # steps on the network's grid
    weights = ramp(64, 48, 200, 16)
    assert weights[0] < 0.05 and weights[-1] < 0.05 and weights[32] == 1
    assert ramp(64, 0, 64, 16).eq(1).all()  # a single tile is not faded at the image's borders


def _write_inputs(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    rgba = rng.integers(0, 255, (24, 24, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "logo.png")
    Image.fromarray(rgba, "RGBA").save(folder / "sticker.webp", lossless=True)
    Image.fromarray(rng.integers(0, 255, (20, 28), dtype=np.uint8), "L").save(folder / "gray.png")
    rotated = Image.fromarray(rng.integers(0, 255, (16, 40, 3), dtype=np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    rotated.save(folder / "rotated.jpg", exif=exif)
    (folder / "nested").mkdir()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "nested" / "small.bmp")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 5)
    return rgba


def test_folders_keep_names_alpha_and_orientation_and_skip_corrupt_files(generator_file, tmp_path):
    rgba = _write_inputs(tmp_path / "in")
    before = {p.name: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}
    report = transfer_files(Stylizer(generator_file, device="cpu"), tmp_path / "in", tmp_path / "out",
                            progress=False)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.written) == [
        "gray.png", "logo.png", "nested/small.bmp", "photo.jpg", "rotated.jpg", "sticker.webp"]
    assert len(report.failed) == 1 and "corrupt.png" in report.failed[0] and "not a readable image" in report.failed[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()} == before
    logo = Image.open(tmp_path / "out" / "logo.png")
    assert logo.mode == "RGBA" and np.array_equal(np.asarray(logo)[..., 3], rgba[..., 3])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "sticker.webp"))[..., 3], rgba[..., 3])
    assert Image.open(tmp_path / "out" / "rotated.jpg").size == (16, 40)  # EXIF orientation applied
    assert Image.open(tmp_path / "out" / "photo.jpg").size == (41, 30)
    assert Image.open(tmp_path / "out" / "gray.png").mode == "RGB"
    assert not list((tmp_path / "out").rglob(".*.tmp"))
    with pytest.raises(ValueError, match="would overwrite the inputs"):
        transfer_files(Stylizer(generator_file, device="cpu"), tmp_path / "in", tmp_path / "in", progress=False)


def test_size_side_by_side_and_alpha_into_jpeg(generator_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((30, 60, 4), 200, np.uint8), "RGBA").save(folder / "wide.tif")
    Image.fromarray(np.full((30, 60, 3), 90, np.uint8)).save(folder / "wide.jpg")
    stylizer = Stylizer(generator_file, device="cpu")
    report = transfer_files(stylizer, folder, tmp_path / "out", size=20, side_by_side=True, progress=False)
    assert sorted(p.name for p in report.written) == ["wide.jpg", "wide.tif"]
    assert Image.open(tmp_path / "out" / "wide.jpg").size == (2 * 40, 20)
    rgba_folder = tmp_path / "alpha"
    rgba_folder.mkdir()
    palette = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "P")
    palette.save(rgba_folder / "a.gif", transparency=0)  # GIF: transparency, written back as PNG
    written = transfer_files(stylizer, rgba_folder / "a.gif", tmp_path / "alpha_out", progress=False).written
    assert written[0].suffix == ".png" and Image.open(written[0]).mode == "RGBA"


def test_stylize_takes_images_paths_and_tensors(generator_file, tmp_path):
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8))
    picture.save(tmp_path / "p.png")
    result = culturegan.stylize(picture, checkpoint=generator_file, device="cpu")
    assert isinstance(result, Image.Image) and result.size == (24, 20)
    assert np.array_equal(np.asarray(culturegan.stylize(tmp_path / "p.png", checkpoint=generator_file,
                                                        device="cpu")), np.asarray(result))
    tensor = culturegan.stylize(torch.rand(3, 20, 24) * 2 - 1, checkpoint=generator_file, device="cpu")
    assert tensor.shape == (3, 20, 24)
    with pytest.raises(TypeError, match="PIL image, a path or a tensor"):
        culturegan.stylize([1, 2], checkpoint=generator_file, device="cpu")


def test_target_cultures_pick_the_generator(two_culture_run, generator_file, tmp_path):
    forward = Stylizer(two_culture_run, device="cpu")
    assert forward.card["cultures"] == {"source": "photo", "target": "ukiyoe"} and forward.card["trained_steps"] == 1
    backward = Stylizer(two_culture_run, target_culture="photo", device="cpu")
    assert backward.card["cultures"]["target"] == "photo"
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert not torch.equal(forward(x), backward(x))
    with pytest.raises(ValueError, match="photo -> ukiyoe; it cannot transfer to 'kente'"):
        Stylizer(two_culture_run, target_culture="kente", device="cpu")
    with pytest.raises(ValueError, match="does not name its cultures"):
        Stylizer(generator_file, target_culture="ukiyoe", device="cpu")
    multi = MultiCultureGenerator(3, ngf=4, n_blocks=1, style_dim=8)
    torch.save(multi.state_dict(), tmp_path / "multi.pth")
    convert(tmp_path / "multi.pth", tmp_path / "multi.safetensors", {"all": ["ink", "kente", "ukiyoe"]})
    with pytest.raises(ValueError, match=r"any of \['ink', 'kente', 'ukiyoe'\]"):
        Stylizer(tmp_path / "multi.safetensors", device="cpu")
    stylizer = Stylizer(tmp_path / "multi.safetensors", target_culture="kente", device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(stylizer(x), multi(x, cultures=torch.tensor([1])), rtol=1e-5, atol=1e-5)


def test_a_run_names_each_directions_generator_and_each_cultures_discriminator(two_culture_run, generator_file):
    run = load_run(two_culture_run)
    assert run.directions == {"G_AB": {"source": "photo", "target": "ukiyoe"},
                              "G_BA": {"source": "ukiyoe", "target": "photo"}}
    assert run.generator_for(None) == run.generator_for("ukiyoe") == (None, None)
    assert run.generator_for("photo") == ("G_BA", None)
    _, card = run.generator("G_BA")
    assert card["cultures"] == {"source": "ukiyoe", "target": "photo"} and card["trained_steps"] == 1
    discriminator, gan_mode = run.discriminator_for("photo")
    assert gan_mode == "lsgan" and discriminator(torch.zeros(1, 3, 32, 32)).dim() == 4
    with pytest.raises(ValueError, match=r"no generator 'G' \(this run has G_AB and G_BA\)"):
        run.generator("G")
    single = load_run(generator_file)
    assert single.directions == {None: {}} and single.discriminator_for("photo") is None
    with pytest.raises(ValueError, match="holds one model: generator='G_BA' applies to training checkpoints"):
        single.generator("G_BA")


def test_cli_transfer(generator_file, tmp_path, capsys):
    _write_inputs(tmp_path / "in")
    code = cli.main(["transfer", "--checkpoint", str(generator_file), "--input", str(tmp_path / "in"), "--output",
                     str(tmp_path / "out"), "--device", "cpu", "--tile", "16", "--overlap", "4"])
    assert code == 1  # one corrupt input: reported, the others done
    out = capsys.readouterr().out
    assert "transferred 6 image(s)" in out and "corrupt.png" in out
    with pytest.raises(SystemExit) as error:
        cli.main(["transfer", "--checkpoint", str(tmp_path / "none.pth"), "--input", str(tmp_path / "in"),
                  "--output", str(tmp_path / "x")])
    assert error.value.code == 2
    assert "does not exist" in capsys.readouterr().err
