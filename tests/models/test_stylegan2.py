"""culturegan.models.stylegan2: NVlabs' StyleGAN2 networks, layout and math.

The networks are compared, in float64, with a compact independent restatement of NVlabs'
forward (training/networks.py, torch_utils/ops) written below from the state_dict alone:
the per-sample weights of fused_modconv with one grouped convolution, the upsampling
convolution as one true convolution of the zero-stuffed input with W * f, the skip
generator's image sum, the resnet blocks and the minibatch-std epilogue.
"""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from culturegan.losses import r1_penalty
from culturegan.models.stylegan2 import Discriminator, Generator

SQRT2 = math.sqrt(2)
Z_DIM = W_DIM = 8
C_DIM = 3


def small_generator(resolution=16, c_dim=0, conv_clamp=None, **synthesis):
    synthesis = dict(channel_base=16 * resolution, channel_max=8, conv_clamp=conv_clamp, **synthesis)
    return Generator(Z_DIM, c_dim, W_DIM, resolution, 3, mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=synthesis)


def small_discriminator(resolution=16, c_dim=0, conv_clamp=None, **kwargs):
    return Discriminator(c_dim, resolution, 3, channel_base=16 * resolution, channel_max=8, conv_clamp=conv_clamp,
                         mapping_kwargs=dict(num_layers=2), **kwargs)


def randomized(net):
    """Every parameter and buffer random (noise strengths, biases and w_avg are 0 at
    initialisation, which would hide their terms), the filters kept; in eval mode, as G_ema,
    so that w_avg stays put."""
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if not name.endswith("resample_filter"):
                tensor.normal_(0, 0.5 if name.endswith(("bias", "noise_strength", "w_avg")) else 1)
    return net.eval()


# ------------------------------------------------- NVlabs' forward, restated in float64

def lrelu(x, gain=1.0, clamp=None):
    y = F.leaky_relu(x, 0.2) * SQRT2 * gain
    return y if clamp is None else y.clamp(-clamp * gain, clamp * gain)


def fc(sd, name, x, lr=1.0, act=False):
    weight, bias = sd[f"{name}.weight"], sd[f"{name}.bias"]
    y = x @ (weight * lr / math.sqrt(weight.shape[1])).t() + bias * lr
    return lrelu(y) if act else y


def normalize(x):
    return x / (x.square().mean(1, keepdim=True) + 1e-8).sqrt()


def mapping(sd, prefix, z, c, num_layers, psi=1.0, cutoff=None, num_ws=None):
    parts = [] if z is None else [normalize(z)]
    if c is not None:
        parts.append(normalize(fc(sd, f"{prefix}.embed", c)))
    x = torch.cat(parts, 1)
    for i in range(num_layers):
        x = fc(sd, f"{prefix}.fc{i}", x, lr=0.01, act=True)
    if num_ws is None:
        return x
    ws = x[:, None].repeat(1, num_ws, 1)
    cut = num_ws if cutoff is None else cutoff
    ws[:, :cut] = sd[f"{prefix}.w_avg"] + psi * (ws[:, :cut] - sd[f"{prefix}.w_avg"])
    return ws


def depthwise_fir(x, f, pads):
    """True convolution of each channel with f after zero padding (x0, x1, y0, y1)."""
    channels = x.shape[1]
    return F.conv2d(F.pad(x, pads), f.flip([0, 1])[None, None].repeat(channels, 1, 1, 1), groups=channels)


def zero_stuff(x):
    """x at the even positions of a grid twice its size, zeros elsewhere."""
    n, c, h, w = x.shape
    stuffed = x.new_zeros(n, c, 2 * h, 2 * w)
    stuffed[:, :, ::2, ::2] = x
    return stuffed


def upsample(img, f):
    return depthwise_fir(zero_stuff(img), f * 4, [2, 1, 2, 1])


def up_conv(x, weight, f, groups):
    """NVlabs' transposed convolution (a true convolution of the zero-stuffed input with W)
    followed by the blur with gain 4, as one true convolution with K = W * 4f (6x6 taps); the
    output starts 2 samples into the full convolution."""
    out_channels, in_channels, k, _ = weight.shape
    combined = F.conv2d(F.pad(weight.reshape(-1, 1, k, k), [3] * 4), (4 * f).flip([0, 1])[None, None])
    combined = combined.reshape(out_channels, in_channels, k + 3, k + 3)
    return F.conv2d(F.pad(zero_stuff(x), [3, 2, 3, 2]), combined.flip([2, 3]), groups=groups)


def modulated(x, weight, styles, demodulate=True, up=False, f=None):
    """NVlabs' fused_modconv: the N modulated weights, one grouped convolution over the batch."""
    n, in_channels, h, w = x.shape
    per_sample = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        per_sample = per_sample * (per_sample.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    per_sample = per_sample.reshape(-1, in_channels, *weight.shape[2:])
    grouped = x.reshape(1, n * in_channels, h, w)
    y = up_conv(grouped, per_sample, f, n) if up else F.conv2d(grouped, per_sample, padding=weight.shape[2] // 2,
                                                               groups=n)
    return y.reshape(n, -1, *y.shape[2:])


def synthesis_layer(sd, name, x, w, clamp, f=None):
    styles = fc(sd, f"{name}.affine", w)
    y = modulated(x, sd[f"{name}.weight"], styles, up=f is not None, f=f)
    y = y + sd[f"{name}.noise_const"] * sd[f"{name}.noise_strength"]
    return lrelu(y + sd[f"{name}.bias"][:, None, None], clamp=clamp)


def to_rgb(sd, name, x, w, clamp):
    styles = fc(sd, f"{name}.affine", w) / math.sqrt(x.shape[1])
    y = modulated(x, sd[f"{name}.weight"], styles, demodulate=False) + sd[f"{name}.bias"][:, None, None]
    return y if clamp is None else y.clamp(-clamp, clamp)


def synthesis(sd, ws, resolution, clamp):
    """The skip generator with noise_mode 'const'; ws index of b{r}: conv0 2 log2 r - 5."""
    x = sd["synthesis.b4.const"][None].repeat(ws.shape[0], 1, 1, 1)
    x = synthesis_layer(sd, "synthesis.b4.conv1", x, ws[:, 0], clamp)
    img = to_rgb(sd, "synthesis.b4.torgb", x, ws[:, 1], clamp)
    for log2 in range(3, int(math.log2(resolution)) + 1):
        block, first = f"synthesis.b{2 ** log2}", 2 * log2 - 5
        x = synthesis_layer(sd, f"{block}.conv0", x, ws[:, first], clamp, f=sd[f"{block}.conv0.resample_filter"])
        x = synthesis_layer(sd, f"{block}.conv1", x, ws[:, first + 1], clamp)
        img = upsample(img, sd[f"{block}.resample_filter"]) + to_rgb(sd, f"{block}.torgb", x, ws[:, first + 2], clamp)
    return img


def d_conv(sd, name, x, gain=1.0, clamp=None, down=False):
    weight = sd[f"{name}.weight"]
    weight = weight / math.sqrt(weight[0].numel())
    if down and weight.shape[2] == 1:  # skip: blur-downsample, then the 1x1 convolution, linear
        x = depthwise_fir(x, sd[f"{name}.resample_filter"], [1, 1, 1, 1])[:, :, ::2, ::2]
        return F.conv2d(x, weight) * gain
    if down:  # blur with padding 1 + 1, then a strided correlation
        y = F.conv2d(depthwise_fir(x, sd[f"{name}.resample_filter"], [2, 2, 2, 2]), weight, stride=2)
    else:
        y = F.conv2d(x, weight, padding=weight.shape[2] // 2)
    return lrelu(y + sd[f"{name}.bias"][:, None, None], gain, clamp)


def minibatch_std(x, group_size):
    """Sample i is grouped with every sample j = i mod (N / group)."""
    n = x.shape[0]
    groups = n // min(group_size, n)
    std = torch.stack([(x[i % groups::groups].var(0, unbiased=False) + 1e-8).sqrt().mean() for i in range(n)])
    return torch.cat([x, std[:, None, None, None].expand(-1, 1, *x.shape[2:])], 1)


def discriminator(sd, img, c, resolution, clamp, group_size=4):
    x = d_conv(sd, f"b{resolution}.fromrgb", img, clamp=clamp)
    while resolution > 4:
        block = f"b{resolution}"
        skip = d_conv(sd, f"{block}.skip", x, gain=math.sqrt(0.5), down=True)
        x = d_conv(sd, f"{block}.conv0", x, clamp=clamp)
        x = skip + d_conv(sd, f"{block}.conv1", x, gain=math.sqrt(0.5), clamp=clamp, down=True)
        resolution //= 2
    x = d_conv(sd, "b4.conv", minibatch_std(x, group_size), clamp=clamp)
    out = fc(sd, "b4.out", fc(sd, "b4.fc", x.flatten(1), act=True))
    if c is None:
        return out
    cmap = mapping(sd, "mapping", None, c, num_layers=2)
    return (out * cmap).sum(1, keepdim=True) / math.sqrt(cmap.shape[1])


# ------------------------------------------------------------------------ equivalence

@pytest.mark.parametrize("resolution, c_dim, clamp", [(16, 0, None), (32, C_DIM, 0.5)])
def test_generator_matches_nvlabs_math_in_float64(resolution, c_dim, clamp):
    G = randomized(small_generator(resolution, c_dim, clamp)).double()
    z = torch.randn(3, Z_DIM, dtype=torch.float64)
    c = torch.randn(3, c_dim, dtype=torch.float64) if c_dim else None
    sd = G.state_dict()
    ws = G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=3)
    torch.testing.assert_close(ws, mapping(sd, "mapping", z, c, 2, 0.7, 3, G.num_ws), rtol=1e-10, atol=1e-10)
    expected = synthesis(sd, ws, resolution, clamp)
    torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), expected, rtol=1e-10, atol=1e-10)
    if clamp is not None:  # the clamp was reached, so it was tested
        assert not torch.allclose(synthesis(sd, ws, resolution, None), expected)


def test_float32_generator_matches_the_float64_restatement():
    G = randomized(small_generator(16))
    z = torch.randn(2, Z_DIM)
    sd = {k: v.double() for k, v in G.state_dict().items()}
    expected = synthesis(sd, mapping(sd, "mapping", z.double(), None, 2, num_ws=G.num_ws), 16, None)
    torch.testing.assert_close(G(z, None, noise_mode="const").double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resolution, c_dim, clamp", [(16, 0, None), (32, C_DIM, 0.5)])
def test_discriminator_matches_nvlabs_math_in_float64(resolution, c_dim, clamp):
    D = randomized(small_discriminator(resolution, c_dim, clamp)).double()
    img = torch.randn(8, 3, resolution, resolution, dtype=torch.float64)
    c = torch.randn(8, c_dim, dtype=torch.float64) if c_dim else None
    expected = discriminator(D.state_dict(), img, c, resolution, clamp)
    torch.testing.assert_close(D(img, c), expected, rtol=1e-10, atol=1e-10)
    if clamp is not None:
        assert not torch.allclose(discriminator(D.state_dict(), img, c, resolution, None), expected)


def test_r1_penalty_gradients_match_nvlabs_math():
    """Double backward through every op: the R1 penalty's parameter gradients, float64."""
    D = randomized(small_discriminator(16, conv_clamp=0.5)).double()
    real = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    names = [name for name, _ in D.named_parameters()]
    grads = torch.autograd.grad(r1_penalty(lambda x: D(x, None), real), list(D.parameters()), allow_unused=True)

    sd = {name: tensor.detach().clone().requires_grad_(name in names) for name, tensor in D.state_dict().items()}
    expected = torch.autograd.grad(r1_penalty(lambda x: discriminator(sd, x, None, 16, 0.5), real),
                                   [sd[name] for name in names], allow_unused=True)
    for name, grad, want, parameter in zip(names, grads, expected, D.parameters()):
        # Some biases only move the activations' masks, so the input gradient does not depend on them.
        grad = torch.zeros_like(parameter) if grad is None else grad
        want = torch.zeros_like(parameter) if want is None else want
        torch.testing.assert_close(grad, want, rtol=1e-8, atol=1e-10, msg=name)
        assert not name.endswith("weight") or want.abs().sum() > 0, name


# --------------------------------------------------------------------------- behaviour

@pytest.mark.parametrize("resolution", [16, 32])
def test_generator_shapes_and_w_indexing(resolution):
    G = small_generator(resolution)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    img = G(torch.randn(2, Z_DIM), None)
    assert img.shape == (2, 3, resolution, resolution) and img.dtype == torch.float32
    assert G.mapping(torch.randn(5, Z_DIM), None).shape == (5, G.num_ws, W_DIM)


def test_synthesis_layer_options():
    G = small_generator(16, use_noise=False, kernel_size=5, activation="relu")
    assert not [name for name in G.state_dict() if "noise" in name]
    assert G.state_dict()["synthesis.b8.conv0.weight"].shape == (8, 8, 5, 5)
    assert G(torch.randn(2, Z_DIM), None).shape == (2, 3, 16, 16)


def test_noise_modes():
    G = randomized(small_generator())
    ws = G.mapping(torch.randn(2, Z_DIM), None)
    const = G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), const, rtol=0, atol=0)
    assert not torch.allclose(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random"))
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, const, atol=1e-3)
    with torch.no_grad():  # the only difference between 'const' and 'none' is the noise
        for name, buffer in G.named_buffers():
            if name.endswith("noise_const"):
                buffer.zero_()
    torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), none, rtol=0, atol=0)


def test_truncation_pulls_towards_w_avg():
    G = randomized(small_generator())
    z = torch.randn(4, Z_DIM)
    w_avg = G.mapping.w_avg
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0), w_avg.expand(4, G.num_ws, -1))
    free = G.mapping(z, None)
    cut = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], (free[:, :2] + w_avg) / 2)
    torch.testing.assert_close(cut[:, 2:], free[:, 2:], rtol=0, atol=0)


def test_w_avg_tracks_training_mappings_unless_skipped():
    G = small_generator().train()
    z = torch.randn(6, Z_DIM)
    w = G.mapping(z, None, skip_w_avg_update=True)[:, 0]
    assert not G.mapping.w_avg.any()
    G.mapping(z, None)
    torch.testing.assert_close(G.mapping.w_avg, w.mean(0) * (1 - 0.995))
    G.eval()
    before = G.mapping.w_avg.clone()
    G.mapping(torch.randn(6, Z_DIM), None)
    torch.testing.assert_close(G.mapping.w_avg, before, rtol=0, atol=0)


def test_mapping_weights_are_stored_at_100x_their_effect():
    G = Generator(512, 0, 512, 4, 3, synthesis_kwargs=dict(channel_base=64, channel_max=16))
    stored = G.mapping.fc0.weight
    assert 90 < stored.std() < 110  # randn / lr_multiplier 0.01
    x = torch.randn(7, 512)
    y = torch.nn.functional.leaky_relu(x @ (stored * 0.01 / math.sqrt(512)).t() + G.mapping.fc0.bias * 0.01, 0.2)
    torch.testing.assert_close(G.mapping.fc0(x), y * SQRT2)
    assert 0.9 < G.synthesis.b4.conv1.weight.std() < 1.1  # elsewhere stored at unit variance


def test_discriminator_output_and_minibatch_groups():
    D = small_discriminator(16, C_DIM)
    assert D(torch.randn(8, 3, 16, 16), torch.randn(8, C_DIM)).shape == (8, 1)
    assert D(torch.randn(2, 3, 16, 16), torch.randn(2, C_DIM)).shape == (2, 1)  # one group of 2
    with pytest.raises(ValueError, match="N must be a multiple of it; got N = 6"):
        D(torch.randn(6, 3, 16, 16), torch.randn(6, C_DIM))
    whole = small_discriminator(16, epilogue_kwargs=dict(mbstd_group_size=None, mbstd_num_channels=2))
    assert whole(torch.randn(6, 3, 16, 16), None).shape == (6, 1)


def test_gradients_reach_every_parameter():
    G, D = small_generator(16, C_DIM), randomized(small_discriminator(16, C_DIM))
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    c = torch.randn(4, C_DIM)
    D(G(torch.randn(4, Z_DIM), c, noise_mode="random"), c).sum().backward()
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_freeze_d_keeps_the_names_and_makes_buffers():
    free, frozen = small_discriminator(16), small_discriminator(16, block_kwargs=dict(freeze_layers=4))
    assert frozen.state_dict().keys() == free.state_dict().keys()
    buffers = dict(frozen.named_buffers())
    assert all(f"b16.{layer}.weight" in buffers for layer in ("fromrgb", "conv0", "conv1", "skip"))
    assert "b8.conv0.weight" in dict(frozen.named_parameters())
    frozen.load_state_dict(free.state_dict())
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(frozen(img, None), free(img, None))


def test_state_dict_round_trip_through_init_kwargs():
    G, D = randomized(small_generator(16, C_DIM, 256)), randomized(small_discriminator(16, C_DIM))
    G2 = Generator(**json.loads(json.dumps(G.init_kwargs)))
    D2 = Discriminator(**json.loads(json.dumps(D.init_kwargs)))
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    z, c = torch.randn(2, Z_DIM), torch.randn(2, C_DIM)
    torch.testing.assert_close(G2(z, c, noise_mode="const"), G(z, c, noise_mode="const"), rtol=0, atol=0)
    img = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(D2(img, c), D(img, c), rtol=0, atol=0)


def test_half_precision_blocks_run_in_full_precision_off_cuda():
    G = randomized(small_generator(16, conv_clamp=256, num_fp16_res=2))
    D = randomized(small_discriminator(16, conv_clamp=256, num_fp16_res=2))
    assert G.synthesis.b16.use_fp16 and G.synthesis.b8.use_fp16 and not G.synthesis.b4.use_fp16
    ws = G.mapping(torch.randn(2, Z_DIM), None)
    img = G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(img, G.synthesis(ws, noise_mode="const", force_fp32=True), rtol=0, atol=0)
    torch.testing.assert_close(D(img, None), D(img, None, force_fp32=True), rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="float16 blocks run on CUDA only")
def test_float16_blocks_on_cuda_stay_close_to_float32():
    G = randomized(small_generator(32, conv_clamp=256, num_fp16_res=2)).cuda()
    D = randomized(small_discriminator(32, conv_clamp=256, num_fp16_res=2)).cuda()
    ws = G.mapping(torch.randn(4, Z_DIM, device="cuda"), None)
    img = G.synthesis(ws, noise_mode="const")
    assert img.dtype == torch.float32
    reference = G.synthesis(ws, noise_mode="const", force_fp32=True)
    assert (img - reference).abs().max() < 2e-2 * reference.abs().max()
    logits, reference = D(img, None), D(img, None, force_fp32=True)
    assert (logits - reference).abs().max() < 2e-2 * reference.abs().max()


def count(tensors):
    tensors = list(tensors)
    return len(tensors), sum(t.numel() for t in tensors)


# NVlabs' train.py configs (resolution, channel_base, C(64)) and the counts the notes derived by
# hand from NVlabs' source: G (parameter tensors, values), G buffers, D (parameter tensors, values).
@pytest.mark.parametrize("resolution, channel_base, channels_64, g_counts, g_buffers, d_counts", [
    pytest.param(256, 16384, 256, (110, 24_767_458), 34, (38, 24_001_089), id="paper256"),
    pytest.param(1024, 32768, 512, (138, 30_370_060), 44, (48, 29_012_513), id="stylegan2-1024"),
])
def test_parameter_counts_of_the_released_configs(resolution, channel_base, channels_64, g_counts, g_buffers,
                                                  d_counts):
    common = dict(channel_base=channel_base, channel_max=512, num_fp16_res=4, conv_clamp=256)
    G = Generator(512, 0, 512, resolution, 3, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=common)
    D = Discriminator(0, resolution, 3, **common, epilogue_kwargs=dict(mbstd_group_size=8))
    assert count(G.parameters()) == g_counts and len(list(G.buffers())) == g_buffers
    assert count(G.mapping.parameters()) == (16, 2_101_248)
    assert count(D.parameters()) == d_counts
    shapes = {name: tuple(t.shape) for name, t in {**G.state_dict(), **D.state_dict()}.items()}
    assert shapes["synthesis.b64.conv0.weight"] == (channels_64, 512, 3, 3)
    assert shapes["synthesis.b64.conv0.affine.weight"] == (512, 512)
    assert shapes[f"synthesis.b{resolution}.torgb.weight"] == (3, channel_base // resolution, 1, 1)
    assert shapes["synthesis.b8.conv1.noise_const"] == (8, 8) and shapes["mapping.w_avg"] == (512,)
    assert shapes[f"b{resolution}.fromrgb.weight"] == (channel_base // resolution, 3, 1, 1)
    assert shapes["b64.skip.weight"] == (512, channels_64, 1, 1)  # C(32) from C(64)
    assert shapes["b4.conv.weight"] == (512, 513, 3, 3) and shapes["b4.fc.weight"] == (512, 8192)
    assert shapes["b4.out.weight"] == (1, 512) and shapes["b8.conv1.resample_filter"] == (4, 4)


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("build, message", [
    (lambda: small_generator(architecture="orig"), "generator architecture 'orig' is not supported"),
    (lambda: small_generator(architecture="resnet"), "generator architecture 'resnet' is not supported"),
    (lambda: small_discriminator(architecture="skip"), "discriminator architecture 'skip' is not supported"),
    (lambda: small_generator(fused=True), r"synthesis_kwargs has unknown keys \['fused'\]"),
    (lambda: small_generator(w_dim=4), r"synthesis_kwargs has unknown keys \['w_dim'\]"),
    (lambda: small_generator(activation="tanh"), "activation 'tanh' is not supported"),
    (lambda: small_generator(kernel_size=2), "kernel_size must be odd"),
    (lambda: small_generator(resolution=24), "img_resolution must be a power of 2"),
    (lambda: Generator(8, 0, 8, 64, 3, synthesis_kwargs=dict(channel_base=32)), "0 channels at resolution 64"),
    (lambda: small_generator(conv_clamp=-1), "conv_clamp must be > 0, got -1"),
    (lambda: Generator(8, 0, 8, 16, 3, mapping_kwargs=dict(num_ws=3)), r"mapping_kwargs has unknown keys"),
    (lambda: Generator(8, 0, 8, 16, 3, mapping_kwargs=dict(w_avg_beta=2)), "w_avg_beta must be None or a number"),
    (lambda: Generator(8, 0, 8, 16, 3, synthesis_kwargs=dict(channel_base=2.5e4)), "channel_base must be an int"),
    (lambda: Generator(8, 0, 8, 16, 3, synthesis_kwargs=dict(channel_base=np.int64(128))), "JSON values"),
    (lambda: Generator(8, 0, 8, 16, 3, mapping_kwargs=dict(lr_multiplier=0)), "lr_multiplier must be > 0, got 0"),
    (lambda: Discriminator(3, 16, 3, mapping_kwargs=dict(w_avg_beta=0.9)), r"mapping_kwargs has unknown keys"),
    (lambda: small_discriminator(block_kwargs=dict(freeze_layers=-1)), "freeze_layers must be an int >= 0"),
    (lambda: small_discriminator(epilogue_kwargs=dict(mbstd_num_channels=3)), "mbstd_num_channels .3. must divide"),
    (lambda: small_discriminator(block_kwargs=[]), "block_kwargs must be a dict"),
])
def test_bad_constructor_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_forward_inputs():
    G, D = small_generator(16, C_DIM), small_discriminator(16)
    z, c = torch.randn(2, Z_DIM), torch.randn(2, C_DIM)
    cases = [
        (lambda: G(torch.randn(2, Z_DIM + 1), c), r"z must have shape \(N, 8\)"),
        (lambda: G(z, None), "c must be a floating-point tensor"),
        (lambda: G(z, torch.randn(3, C_DIM)), "c has batch size 3, but the other input has 2"),
        (lambda: G(z, c, noise_mode="fixed"), "noise_mode 'fixed' is not supported"),
        (lambda: G(z, c, truncation_psi=0.5, truncation_cutoff=-1), "truncation_cutoff must be an int >= 0"),
        (lambda: G.synthesis(torch.randn(2, 3, W_DIM)), rf"ws must have shape \(N, {G.num_ws}, {W_DIM}\)"),
        (lambda: D(torch.randn(2, 3, 32, 32), None), r"img must have shape \(N, 3, 16, 16\)"),
        (lambda: D(torch.randn(2, 3, 16, 16).long(), None), "img must be a floating-point tensor"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="truncation_psi must be a finite number, got None"):  # ops' convention
        G(z, c, truncation_psi=None)
