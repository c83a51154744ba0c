"""Loading generators and discriminators from files whose architecture is read off the keys:
pytorch-CycleGAN-and-pix2pix layouts (checked against a straightforward torch implementation of
that layout), converted files with model cards, and training runs."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from culturegan import cli
from culturegan.models import (Architecture, NLayerDiscriminator, ResnetGenerator, convert, infer_architecture,
                               load_discriminator, load_generator)


def cyclegan_state(ngf=8, n_blocks=2, in_channels=3, out_channels=3, seed=0):
    """A state_dict with the keys and shapes pytorch-CycleGAN-and-pix2pix saves for
    resnet_Nblocks with instance norm (written out here, independently of our model code)."""
    g = torch.Generator().manual_seed(seed)

    def conv(key, out, inp, k):
        state[f"{key}.weight"] = torch.randn(out, inp, k, k, generator=g) * (2 / (inp * k * k)) ** 0.5
        state[f"{key}.bias"] = torch.randn(out, generator=g) * 0.1

    state = {}
    conv("model.1", ngf, in_channels, 7)
    conv("model.4", 2 * ngf, ngf, 3)
    conv("model.7", 4 * ngf, 2 * ngf, 3)
    for i in range(10, 10 + n_blocks):
        conv(f"model.{i}.conv_block.1", 4 * ngf, 4 * ngf, 3)
        conv(f"model.{i}.conv_block.5", 4 * ngf, 4 * ngf, 3)
    up = 10 + n_blocks
    for key, inp in ((f"model.{up}", 4 * ngf), (f"model.{up + 3}", 2 * ngf)):  # ConvTranspose: (in, out, k, k)
        state[f"{key}.weight"] = torch.randn(inp, inp // 2, 3, 3, generator=g) * (2 / (inp * 9)) ** 0.5
        state[f"{key}.bias"] = torch.randn(inp // 2, generator=g) * 0.1
    conv(f"model.{up + 7}", out_channels, ngf, 7)
    return state


def cyclegan_forward(state, x, n_blocks):
    """The resnet generator's layout, computed directly from the state_dict with torch.nn.functional."""
    def norm_relu(h, relu=True):
        h = F.instance_norm(h, eps=1e-5)
        return F.relu(h) if relu else h

    def conv(h, key, pad, stride=1):
        if pad:
            h = F.pad(h, (pad,) * 4, mode="reflect")
        return F.conv2d(h, state[f"{key}.weight"], state[f"{key}.bias"], stride=stride)

    h = norm_relu(conv(x, "model.1", 3))
    h = norm_relu(F.conv2d(h, state["model.4.weight"], state["model.4.bias"], stride=2, padding=1))
    h = norm_relu(F.conv2d(h, state["model.7.weight"], state["model.7.bias"], stride=2, padding=1))
    for i in range(10, 10 + n_blocks):
        r = norm_relu(conv(h, f"model.{i}.conv_block.1", 1))
        h = h + norm_relu(conv(r, f"model.{i}.conv_block.5", 1), relu=False)
    for key in (f"model.{10 + n_blocks}", f"model.{13 + n_blocks}"):
        h = norm_relu(F.conv_transpose2d(h, state[f"{key}.weight"], state[f"{key}.bias"], stride=2, padding=1,
                                         output_padding=1))
    return torch.tanh(conv(h, f"model.{17 + n_blocks}", 3))


def test_a_cyclegan_file_loads_and_computes_that_layout(tmp_path):
    state = cyclegan_state(n_blocks=3)
    # as old checkpoints are: DataParallel prefix and stale InstanceNorm running statistics
    saved = {f"module.{k}": v for k, v in state.items()}
    saved.update({"module.model.2.running_mean": torch.zeros(8), "module.model.2.running_var": torch.ones(8)})
    torch.save(saved, tmp_path / "latest_net_G_A.pth")
    generator, card = load_generator(tmp_path / "latest_net_G_A.pth")
    assert card["architecture"]["depth"] == 3 and card["description"].startswith("resnet_3blocks")
    assert len(card["source_file"]["sha256"]) == 64
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(generator(x), cyclegan_forward(state, x, 3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("architecture", [
    Architecture("resnet_generator", width=8, depth=6),
    Architecture("resnet_generator", width=8, depth=2, dropout=True),
    Architecture("resnet_generator", width=8, depth=2, norm="batch"),
    Architecture("resnet_generator", in_channels=1, out_channels=3, width=4, depth=1),
    Architecture("resnet_generator", width=8, depth=2, upsample="bilinear"),
    Architecture("patchgan", out_channels=1, width=8, depth=3),
    Architecture("patchgan", out_channels=1, width=8, depth=2, norm="batch"),
    Architecture("multi_generator", width=8, depth=2, num_cultures=3, style_dim=16, feature_dim=431),
], ids=lambda a: a.describe())
def test_the_architecture_is_read_off_the_keys(architecture):
    assert infer_architecture(architecture.build(fused=False).state_dict()) == architecture


def test_bilinear_upsampling_draws_no_checkerboard():
    """A generator's output for a flat input, after training-free random initialisation: the
    transposed convolutions' uneven overlap leaves a one-pixel period in it, the bilinear
    upsampling does not (the one-pixel period's share of the high-frequency power)."""
    def checkerboard_share(upsample):
        torch.manual_seed(0)
        generator = ResnetGenerator(ngf=8, n_blocks=1, upsample=upsample).eval()
        with torch.no_grad():
            out = generator(torch.zeros(1, 3, 32, 32))[0, 0]
        spectrum = torch.fft.fft2(out - out.mean()).abs().square()
        return float((spectrum[16, :].sum() + spectrum[:, 16].sum()) / spectrum.sum())
    assert checkerboard_share("transpose") > 10 * checkerboard_share("bilinear")
    with pytest.raises(ValueError, match="upsample must be one of transpose, bilinear"):
        ResnetGenerator(upsample="nearest")


def test_published_sizes_and_convert_writes_a_card(tmp_path):
    torch.save(ResnetGenerator().state_dict(), tmp_path / "latest_net_G.pth")
    path, card = convert(tmp_path / "latest_net_G.pth", tmp_path / "out" / "ukiyoe.safetensors",
                         {"source": "photo", "target": "ukiyoe"})
    assert (card["tensors"], card["parameters"]) == (48, 11_378_179)
    assert json.loads(path.with_suffix(".json").read_text()) == card
    with safe_open(str(path), "pt") as file:
        assert json.loads(file.metadata()["culturegan.model"])["cultures"] == {"source": "photo", "target": "ukiyoe"}
    generator, loaded_card = load_generator(path)
    assert loaded_card == card and not generator.training
    torch.save(NLayerDiscriminator().state_dict(), tmp_path / "latest_net_D_A.pth")
    _, card = convert(tmp_path / "latest_net_D_A.pth", tmp_path / "d.safetensors")
    assert (card["tensors"], card["parameters"]) == (10, 2_764_737)
    discriminator, _ = load_discriminator(tmp_path / "d.safetensors")
    assert discriminator(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 6, 6)
    with pytest.raises(ValueError, match="not a generator"):
        load_generator(tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="overwrite its input"):
        convert(path, path)


def test_convert_keeps_a_multi_generators_reference_statistics_and_gives_old_files_identity_ones(tmp_path):
    architecture = Architecture("multi_generator", width=4, depth=1, num_cultures=3, style_dim=8, feature_dim=431)
    generator = architecture.build(fused=False)
    generator.fit_reference_statistics(torch.rand(5, 431) * torch.linspace(0.01, 2, 431))
    state = generator.state_dict()
    torch.save(state, tmp_path / "fitted.pth")
    torch.save({k: v for k, v in state.items() if not k.startswith("reference_") or "projection" in k},
               tmp_path / "old.pth")  # a multi-culture generator saved before the statistics
    for name, mean, scale in (("fitted", generator.reference_mean, generator.reference_scale),
                              ("old", torch.zeros(431), torch.ones(431))):
        path, card = convert(tmp_path / f"{name}.pth", tmp_path / f"{name}.safetensors")
        assert card["architecture"]["feature_dim"] == 431
        with safe_open(str(path), "pt") as file:
            assert torch.equal(file.get_tensor("reference_mean"), mean)
        loaded, _ = load_generator(path)
        assert torch.equal(loaded.reference_mean, mean) and torch.equal(loaded.reference_scale, scale)


def test_files_that_cannot_be_mapped_say_what_was_found(tmp_path):
    state = cyclegan_state(n_blocks=2)
    del state["model.11.conv_block.5.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"inferred: resnet_2blocks.*1 missing \['model.11.conv_block.5.weight'\]"):
        load_generator(tmp_path / "broken.pth")
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="cannot tell the architecture.*encoder.weight"):
        load_generator(tmp_path / "other.pth")
    state = cyclegan_state(n_blocks=2)
    state["model.13.conv_block.1.weight"] = state.pop("model.11.conv_block.1.weight")
    torch.save(state, tmp_path / "gap.pth")
    with pytest.raises(ValueError, match=r"residual blocks at model indices \[10, 11, 13\]"):
        load_generator(tmp_path / "gap.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator(tmp_path / "missing.pth")


def test_cli_convert(tmp_path, capsys):
    torch.save(cyclegan_state(n_blocks=1), tmp_path / "g.pth")
    assert cli.main(["convert", str(tmp_path / "g.pth"), str(tmp_path / "g.safetensors"), "--target-culture",
                     "ukiyoe"]) == 0
    assert "resnet_1blocks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as error:
        cli.main(["convert", str(tmp_path / "g.pth"), str(tmp_path / "g.bin")])
    assert error.value.code == 2
