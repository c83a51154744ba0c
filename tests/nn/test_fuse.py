"""culturegan.nn: fused blocks are drop-in for the torch layers they replace, and fuse() rewrites
CycleGAN-style models without changing their function, parameters or state_dict."""

import copy

import pytest
import torch
from torch import nn

from culturegan import ops
from culturegan.models import NLayerDiscriminator, ResnetGenerator
from culturegan.nn import FusedConvLeakyReLU, FusedConvNormAct, FusedRun, PassThrough, fuse

BACKENDS = [b for b in ("cpu", "reference") if not ops.unavailable_reason(b, "cpu")]


def resnet_generator():
    return ResnetGenerator(ngf=8, n_blocks=2)


def patchgan():
    return NLayerDiscriminator(ndf=8, n_layers=3)


def outputs_and_grads(model, x):
    x = x.clone().requires_grad_()
    y = model(x)
    grads = torch.autograd.grad(y.square().mean(), [x, *model.parameters()])
    return y, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make, size, fused_count", [(resnet_generator, 32, 9), (patchgan, 64, 4)],
                         ids=["resnet_generator", "patchgan"])
def test_fuse_keeps_function_gradients_and_state_dict(backend, make, size, fused_count):
    model = make().double()
    with torch.no_grad():  # affine-free norms; random biases so that cancelled biases would show
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    original = copy.deepcopy(model)
    keys = {k: v.shape for k, v in model.state_dict().items()}
    report = fuse(model)
    for module in model.modules():
        if isinstance(module, FusedRun):
            module.block.backend = backend
    assert len(report.fused) == fused_count, str(report)
    assert {k: v.shape for k, v in model.state_dict().items()} == keys
    assert sum(isinstance(m, FusedRun) for m in model.modules()) == fused_count
    assert sum(isinstance(m, PassThrough) for m in model.modules()) >= fused_count  # norms, pads, activations

    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    y, grads = outputs_and_grads(model, x)
    y_ref, grads_ref = outputs_and_grads(original, x)
    torch.testing.assert_close(y, y_ref)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7)

    # Checkpoints go both ways.
    original.load_state_dict(model.state_dict())
    model.load_state_dict(original.state_dict())
    torch.testing.assert_close(model(x), original(x))


def test_fused_model_follows_dtype_and_parameter_updates():
    model = resnet_generator()
    fuse(model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    reference = resnet_generator()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
    model.double()
    assert model(x.double()).dtype == torch.float64


def test_fuse_reports_what_it_leaves_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.InstanceNorm2d(4, track_running_stats=True), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding_mode="circular", padding=1), nn.LeakyReLU(0.2),
                          nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    report = fuse(model)
    assert report.fused == []
    assert any("track_running_stats" in s for s in report.skipped), report.skipped
    assert any("circular" in s for s in report.skipped), report.skipped
    assert isinstance(model[0], nn.Conv2d)  # untouched


def test_blocks_are_drop_in_for_sequential_layers():
    conv_act = nn.Sequential(nn.Conv2d(3, 8, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
    conv_norm_act = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"),
                                  nn.InstanceNorm2d(8, affine=True), nn.ReLU())
    up = nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
                       nn.InstanceNorm2d(4), nn.ReLU())
    fused = [FusedConvLeakyReLU(3, 8, 4, stride=2, padding=1),
             FusedConvNormAct(3, 8, 3, padding=1, padding_mode="reflect", affine=True),
             FusedConvNormAct(3, 4, 3, stride=2, padding=1, output_padding=1, transposed=True)]
    x = torch.randn(2, 3, 12, 10)
    for plain, block in zip((conv_act, conv_norm_act, up), fused):
        assert block.state_dict().keys() == plain.state_dict().keys()
        block.load_state_dict(plain.state_dict())
        torch.testing.assert_close(block(x), plain(x), atol=1e-5, rtol=1e-5)
        plain.load_state_dict(block.state_dict())


def test_adain_block_takes_a_style_per_sample():
    block = FusedConvNormAct(3, 4, 3, padding=1, norm="adain", activation="leaky_relu")
    x = torch.randn(2, 3, 8, 8)
    scale, shift = torch.rand(2, 4) + 0.5, torch.randn(2, 4)
    y = block(x, scale, shift)
    normalized = nn.functional.instance_norm(block[0](x))
    expected = nn.functional.leaky_relu(normalized * scale[..., None, None] + shift[..., None, None], 0.2)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="AdaIN block takes style_scale"):
        block(x)
    with pytest.raises(ValueError, match="affine must be False"):
        FusedConvNormAct(3, 4, 3, norm="adain", affine=True)


def test_cyclegan_models_have_the_published_sizes():
    """resnet_9blocks: 48 tensors, 11,378,179 parameters; basic PatchGAN: 2,764,737 (CycleGAN's)."""
    generator, discriminator = ResnetGenerator(), NLayerDiscriminator()
    assert len(generator.state_dict()) == 48
    assert sum(p.numel() for p in generator.parameters()) == 11_378_179
    assert sum(p.numel() for p in discriminator.parameters()) == 2_764_737
    fused = ResnetGenerator(fused=True)
    assert fused.state_dict().keys() == generator.state_dict().keys()
