"""Layer swapping: culturegan.models.blending and `culturegan blend`.

Every tensor of a blend is checked by name against the rule the module states: synthesis layers
of blocks <= R from structure, above R from rendering (hard), (1 - y)·s + y·r with the logistic
y (smooth), and everything else (mapping, w_avg, noise_const, filters) from structure.
"""

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from culturegan import cli
from culturegan.models.blending import (blend_generators, layer_position, rendering_weight, rendering_weights,
                                        switch_position)
from culturegan.models.cyclegan import ResnetGenerator
from culturegan.models.loading import load_generator
from culturegan.models.stylegan2 import Generator
from culturegan.transfer.blend import GRID_GAP, grid_path
from culturegan.transfer.generate import render

RESOLUTION = 16
SEEDS = [0, 1, 2]
SYNTHESIS_LAYER = re.compile(r"synthesis\.b(\d+)\.(const|conv0|conv1|torgb)\b")


def small_generator(seed, resolution=RESOLUTION, mapping_layers=2, channel_base=None):
    """A tiny generator with every tensor random (biases, noise strengths and w_avg start at 0,
    which would hide which model a tensor came from), the resample filters kept."""
    torch.manual_seed(seed)
    generator = Generator(8, 0, 8, resolution, 3, mapping_kwargs=dict(num_layers=mapping_layers),
                          synthesis_kwargs=dict(channel_base=channel_base or 8 * resolution, channel_max=8))
    with torch.no_grad():
        for name, tensor in generator.state_dict().items():
            if not name.endswith("resample_filter"):
                tensor.normal_(0, 0.5 if name.endswith(("bias", "noise_strength", "w_avg")) else 1)
    return generator.eval()


@pytest.fixture(scope="module")
def structure():
    return small_generator(1)


@pytest.fixture(scope="module")
def rendering():
    return small_generator(2)


def images(generator, seeds=SEEDS):
    return np.stack([render(generator, seed, 0.7, "const") for seed in seeds])


def expected_source(name, resolution):
    """'rendering' for the parameters of synthesis blocks above `resolution`, else 'structure'."""
    match = SYNTHESIS_LAYER.match(name)
    is_buffer = name.endswith(("noise_const", "resample_filter", "w_avg"))
    return "rendering" if match and int(match[1]) > resolution and not is_buffer else "structure"


# ------------------------------------------------------------------------------- the rule

def test_positions_follow_blend_models_py():
    assert [layer_position(r, level) for r in (4, 8, 16) for level in (0, 1)] == [4, 5, 6, 7, 8, 9]
    assert switch_position(8) == 7.5


def test_hard_weights_at_4_keep_the_first_block_and_swap_from_8():
    weights = rendering_weights(RESOLUTION, 4)
    assert weights == {"b4.const": 0.0, "b4.conv1": 0.0, "b4.torgb": 0.0, "b8.conv0": 1.0, "b8.conv1": 1.0,
                       "b8.torgb": 1.0, "b16.conv0": 1.0, "b16.conv1": 1.0, "b16.torgb": 1.0}


@pytest.mark.parametrize("resolution", [4, 8, 16])
def test_hard_blend_takes_every_tensor_from_the_side_its_resolution_names(structure, rendering, resolution):
    blended = blend_generators(structure, rendering, resolution).state_dict()
    sources = {"structure": structure.state_dict(), "rendering": rendering.state_dict()}
    assert blended.keys() == sources["structure"].keys()
    taken = {"structure": 0, "rendering": 0}
    for name, tensor in blended.items():
        side = expected_source(name, resolution)
        assert torch.equal(tensor, sources[side][name]), f"{name} at R={resolution} should be {side}'s"
        taken[side] += 1
    # R = 8 swaps b16: conv0 and conv1 (5 parameters each: noise_const is a buffer), torgb (4)
    assert taken["rendering"] == {4: 28, 8: 14, 16: 0}[resolution]


def test_blend_at_the_top_resolution_is_the_structure_model(structure, rendering):
    blended = blend_generators(structure, rendering, RESOLUTION)
    assert np.array_equal(images(blended), images(structure))
    assert blended.init_kwargs == structure.init_kwargs and not blended.training


def test_mapping_w_avg_and_noise_come_from_structure_at_any_width(structure, rendering):
    blended = blend_generators(structure, rendering, 4, width=2.0).state_dict()
    kept = [n for n in blended if n.startswith("mapping.") or n.endswith("noise_const")]
    assert "mapping.w_avg" in kept and "synthesis.b16.conv1.noise_const" in kept and len(kept) == 10
    for name in kept:
        assert torch.equal(blended[name], structure.state_dict()[name]), name


def test_smooth_weight_is_a_logistic_centred_on_the_hard_switch():
    for resolution in (4, 8, 16):
        centre = switch_position(resolution)
        assert rendering_weight(centre, resolution, 0.7) == 0.5
        for offset in (0.5, 1.5, 3.0):
            below, above = rendering_weight(centre - offset, resolution, 0.7), rendering_weight(centre + offset,
                                                                                                resolution, 0.7)
            assert below + above == pytest.approx(1.0) and below < 0.5 < above
            assert above == pytest.approx(1 / (1 + math.exp(-offset / 0.7)))
            # a narrow logistic is the hard switch
            for position in (centre - offset, centre + offset):
                hard = rendering_weight(position, resolution)
                assert rendering_weight(position, resolution, 1e-2) == pytest.approx(hard, abs=1e-12)


@pytest.mark.parametrize("width", [0.5, 2.0])
def test_smooth_weights_rise_with_resolution(width):
    weights = rendering_weights(RESOLUTION, 8, width)
    assert weights["b8.conv1"] == weights["b8.torgb"]  # one position, one weight
    by_position = [weights[layer] for layer in ("b4.const", "b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0",
                                                "b16.conv1")]
    assert all(a < b for a, b in zip(by_position, by_position[1:])), by_position
    assert by_position[3] < 0.5 < by_position[4]  # R = 8: the centre lies between b8.conv1 and b16.conv0


def test_smooth_blend_mixes_each_layer_by_its_weight(structure, rendering):
    blended = blend_generators(structure, rendering, 8, width=1.0).state_dict()
    weights = rendering_weights(RESOLUTION, 8, 1.0)
    s, r = structure.state_dict(), rendering.state_dict()
    for name in ("synthesis.b4.const", "synthesis.b8.conv1.weight", "synthesis.b16.torgb.affine.bias"):
        y = weights[".".join(name.split(".")[1:3])]
        torch.testing.assert_close(blended[name], (1 - y) * s[name] + y * r[name], rtol=0, atol=1e-6)
        assert not torch.equal(blended[name], s[name]) and not torch.equal(blended[name], r[name])


@pytest.mark.parametrize("width", [None, 1.5])
def test_identical_models_blend_to_themselves(structure, width):
    blended = blend_generators(structure, small_generator(1), 8, width)
    for name, tensor in blended.state_dict().items():
        torch.testing.assert_close(tensor, structure.state_dict()[name], rtol=0, atol=1e-6, msg=name)


def test_a_middle_blend_differs_from_both_sources_and_leaves_them_unchanged(structure, rendering):
    before = {n: t.clone() for n, t in rendering.state_dict().items()}
    blend = images(blend_generators(structure, rendering, 8))
    for source in (structure, rendering):
        assert np.abs(blend.astype(int) - images(source).astype(int)).mean() > 1
    assert all(torch.equal(t, before[n]) for n, t in rendering.state_dict().items())


# ------------------------------------------------------------------------------- refusals

def test_different_architectures_are_refused_naming_the_tensors(structure):
    with pytest.raises(ValueError, match=r"only in rendering: mapping\.fc2\.bias, mapping\.fc2\.weight"):
        blend_generators(structure, small_generator(2, mapping_layers=3), 8)
    with pytest.raises(ValueError, match=r"only in rendering: synthesis\.b32\."):
        blend_generators(structure, small_generator(2, resolution=32), 8)
    wider_z = Generator(9, 0, 8, RESOLUTION, 3, mapping_kwargs=dict(num_layers=2),
                        synthesis_kwargs=dict(channel_base=8 * RESOLUTION, channel_max=8))
    with pytest.raises(ValueError, match=r"shapes: mapping\.fc0\.weight \(8, 8\) vs \(8, 9\)"):
        blend_generators(structure, wider_z, 8)


def test_settings_that_shape_no_tensor_do_not_stop_a_blend(structure):
    # A TF-converted base (fp32, no clamp) beside an NVlabs fine-tune (num_fp16_res 4, conv_clamp 256).
    kwargs = structure.init_kwargs
    rendering = Generator(**{**kwargs, "synthesis_kwargs": {**kwargs["synthesis_kwargs"], "num_fp16_res": 4,
                                                            "conv_clamp": 256}})
    rendering.load_state_dict(small_generator(2).state_dict())
    blended = blend_generators(structure, rendering, 8)
    assert blended.init_kwargs == structure.init_kwargs
    assert torch.equal(blended.state_dict()["synthesis.b16.conv1.weight"], rendering.synthesis.b16.conv1.weight)


@pytest.mark.parametrize("resolution", [2, 12, 32, 0, -8, True, 8.0, "8"])
def test_resolutions_that_are_not_a_block_are_refused(structure, rendering, resolution):
    with pytest.raises(ValueError, match=r"swap resolution .* not one of these generators' block resolutions "
                                         r"\(4, 8, 16\)"):
        blend_generators(structure, rendering, resolution)


@pytest.mark.parametrize("width", [0, -1.0, math.inf, math.nan, True, "1"])
def test_widths_that_are_not_positive_and_finite_are_refused(structure, rendering, width):
    with pytest.raises(ValueError, match="blend width must be a positive finite number"):
        blend_generators(structure, rendering, 8, width)


def test_other_networks_are_refused(structure):
    with pytest.raises(ValueError, match="the rendering model is a Linear, not a StyleGAN2 Generator"):
        blend_generators(structure, torch.nn.Linear(2, 2), 8)


# ------------------------------------------------------------------------------- culturegan blend

@pytest.fixture()
def model_files(tmp_path, structure, rendering):
    paths = {}
    networks = (("structure", structure), ("rendering", rendering), ("wide", small_generator(3, 32)),
                ("resnet", ResnetGenerator(3, 3, 4, 1)))
    for name, generator in networks:
        paths[name] = tmp_path / f"{name}.pth"
        torch.save(generator.state_dict(), paths[name])
    return paths


def test_cli_writes_a_loadable_blend_its_card_and_its_grid(tmp_path, model_files, capsys):
    out = tmp_path / "blend" / "toon.safetensors"
    assert cli.main(["blend", "--structure", str(model_files["structure"]), "--rendering",
                     str(model_files["rendering"]), "--resolution", "8", "--width", "0.5", "--out", str(out),
                     "--grid-seeds", "0-2", "--grid-resolutions", "8,4"]) == 0
    assert str(out) in capsys.readouterr().out
    loaded, card = load_generator(out)
    structure, _ = load_generator(model_files["structure"])
    rendering, _ = load_generator(model_files["rendering"])
    in_memory = blend_generators(structure, rendering, 8, 0.5)
    assert np.array_equal(images(loaded), images(in_memory))
    blend = card["blend"]
    assert blend["resolution"] == 8 and blend["width"] == 0.5
    assert blend["structure"]["name"] == "structure.pth" and blend["rendering"]["name"] == "rendering.pth"
    assert blend["rendering_weights"] == rendering_weights(RESOLUTION, 8, 0.5)
    for role in ("structure", "rendering"):  # and where each was, for evaluate's projection
        assert blend[role]["path"] == str(model_files[role].resolve()) and blend[role]["cultures"] == {}
    assert card["source_file"].items() <= blend["structure"].items() and "layer-swapped at 8 px" in card["description"]
    assert json.loads(out.with_suffix(".json").read_text()) == card
    assert sorted(p.name for p in out.parent.iterdir()) == ["toon.json", "toon.safetensors", "toon_blend_grid.png"]

    grid = np.asarray(Image.open(grid_path(out)))
    rows, columns = 4, 3  # structure, the blend at 4 and at 8, rendering x seeds 0-2
    assert grid.shape == (rows * RESOLUTION + (rows - 1) * GRID_GAP, columns * RESOLUTION + (columns - 1) * GRID_GAP, 3)
    step = RESOLUTION + GRID_GAP
    for row, generator in enumerate([structure, blend_generators(structure, rendering, 4, 0.5), in_memory, rendering]):
        for column, seed in enumerate(SEEDS):
            tile = grid[row * step:row * step + RESOLUTION, column * step:column * step + RESOLUTION]
            assert np.array_equal(tile, render(generator, seed, 0.7, "const")), (row, column)


def test_cli_default_grid_shows_the_sources_around_the_default_resolutions_below_the_models(tmp_path, model_files):
    out = tmp_path / "toon.safetensors"
    assert cli.main(["blend", "--structure", str(model_files["structure"]), "--rendering",
                     str(model_files["rendering"]), "--resolution", "4", "--out", str(out)]) == 0
    grid = np.asarray(Image.open(grid_path(out)))
    rows, columns = 3, 4  # structure, the blend at 8 (the only default below 16 px), rendering x seeds 0-3
    assert grid.shape[:2] == (rows * (RESOLUTION + GRID_GAP) - GRID_GAP, columns * (RESOLUTION + GRID_GAP) - GRID_GAP)
    structure, _ = load_generator(model_files["structure"])
    rendering, _ = load_generator(model_files["rendering"])
    middle = grid[RESOLUTION + GRID_GAP:2 * RESOLUTION + GRID_GAP, :RESOLUTION]
    assert np.array_equal(middle, render(blend_generators(structure, rendering, 8), 0, 0.7, "const"))


@pytest.mark.parametrize("arguments, message", [
    (["--resolution", "12"], "swap resolution 12 is not one of"),
    (["--resolution", "8", "--width", "0"], "blend width must be a positive finite number"),
    (["--resolution", "8", "--rendering", "wide"], r"only in rendering: synthesis\.b32\."),
    (["--resolution", "8", "--rendering", "missing"], "does not exist"),
    (["--resolution", "8", "--structure", "resnet"], "the structure model .*resnet.pth is a resnet_1blocks generator "
                                                     ".*; blend takes StyleGAN2 generators"),
    (["--resolution", "8", "--grid-resolutions", "8,x"], "grid resolutions '8,x'"),
    (["--resolution", "8", "--grid-resolutions", "8,64"], "swap resolution 64 is not one of"),
    (["--resolution", "8", "--grid-seeds", "0-99"], "100 grid seeds given"),
    (["--resolution", "8", "--out", "toon.png"], "blend writes a .safetensors file"),
    (["--resolution", "8", "--out", "structure.safetensors", "--structure", "structure.json"],
     "blend would overwrite its input"),
])
def test_cli_refuses_bad_input_and_writes_nothing(tmp_path, model_files, capsys, arguments, message):
    (tmp_path / "structure.json").write_text("{}")
    given = {"--structure": "structure", "--rendering": "rendering", "--out": "toon.safetensors"}
    for flag in given:
        if flag in arguments:
            given[flag] = arguments.pop(arguments.index(flag) + 1)
            arguments.remove(flag)
    paths = {flag: model_files.get(value, tmp_path / value) for flag, value in given.items()}
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit:
        cli.main(["blend"] + [str(a) for flag, path in paths.items() for a in (flag, path)] + arguments)
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("culturegan blend: ") and re.search(message, error), error
    assert sorted(p.name for p in tmp_path.iterdir()) == before
