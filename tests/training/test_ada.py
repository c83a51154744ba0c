"""ADA: the augmentation pipeline (exact identity at p = 0, exact pixel blits, colour transforms
that keep what they must, differentiable to second order) and the p controller (NVlabs' rate,
clamping, exact resume)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from culturegan.training import ada
from culturegan.training.ada import AdaController, AugmentPipe, make_augment_pipe
from helpers import culture_images


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(count: int = 16, channels: int = 3, size: int = 16, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(count, channels, size, size, dtype=dtype) * 2 - 1)


# ----------------------------------------------------------------------------- pipe: exactness

def test_bgc_is_nvlabs_preset_at_nvlabs_strengths():
    """stylegan2-ada-pytorch's train.py augpipe_specs['bgc'] (every member at multiplier 1) and
    augment.py AugmentPipe's default strengths, written out here: a change to either must be a
    deliberate one."""
    pipe = make_augment_pipe("bgc")
    members = ["xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
               "lumaflip", "hue", "saturation"]
    assert pipe.multipliers == dict.fromkeys(members, 1.0)
    assert pipe.strengths == {"xint_max": 0.125, "scale_std": 0.2, "rotate_max": 1.0, "aniso_std": 0.2,
                              "xfrac_std": 0.125, "brightness_std": 0.2, "contrast_std": 0.5, "hue_max": 1.0,
                              "saturation_std": 1.0}


def test_p_zero_is_the_exact_identity():
    images = _images()
    pipe = make_augment_pipe("bgc", p=0.0)
    for seed in range(3):
        assert torch.equal(pipe(images, _generator(seed)), images)


def test_xflip_at_p_one_flips_each_sample_or_leaves_it():
    images = _images(32)
    out = make_augment_pipe({"xflip": 1}, p=1.0)(images, _generator())
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < len(images)


def test_rotate90_is_an_exact_quarter_turn():
    images = _images(32)
    out = make_augment_pipe({"rotate90": 1}, p=1.0)(images, _generator())
    turns = [[k for k in range(4) if torch.equal(o, torch.rot90(i, k, dims=(1, 2)))] for o, i in zip(out, images)]
    assert all(len(t) == 1 for t in turns)
    assert {t[0] for t in turns} == {0, 1, 2, 3}


def test_xint_is_an_exact_shift_with_a_reflected_border():
    size, reach = 16, round(0.125 * 16)
    images = _images(32, size=size)
    out = make_augment_pipe({"xint": 1}, p=1.0)(images, _generator())
    padded = F.pad(images, [reach] * 4, mode="reflect")

    def shifts(n):
        return [(dx, dy) for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1)
                if torch.equal(out[n], padded[n, :, reach - dy:reach - dy + size, reach - dx:reach - dx + size])]

    matches = [shifts(n) for n in range(len(images))]
    assert all(len(m) == 1 for m in matches)
    assert len({m[0] for m in matches}) > 5


def test_blit_and_wavelet_resampling_agree_on_translations():
    """The exact gather and NVlabs' resampling path work in the same pixel frame."""
    images = culture_images("ukiyoe", 2, size=32).double()
    one = torch.ones(2, dtype=torch.float64)
    filter_ = AugmentPipe().Hz_geom
    for tx, ty in [(3, 0), (0, -2), (-1, 4)]:
        g_inv = ada._translate2d(one * tx, one * ty)
        torch.testing.assert_close(ada._resample(images, g_inv, filter_), ada._blit(images, g_inv),
                                   atol=1e-6, rtol=0)


def test_resampling_turns_the_same_way_as_the_blit():
    """A quarter turn through the wavelet path lands near the exact one (the asymmetric filter
    blurs mirrored transforms a little), and far from the opposite turn."""
    images = culture_images("ukiyoe", 1, size=32)
    quarter = ada._rotate2d(torch.full([1], math.pi / 2))
    resampled = ada._resample(images, quarter, AugmentPipe().Hz_geom)
    assert (resampled - ada._blit(images, quarter.round())).abs().mean() < 0.05
    assert (resampled - ada._blit(images, quarter.round().transpose(1, 2))).abs().mean() > 0.2


def test_general_geometry_has_no_black_border_and_keeps_range():
    """Rotations and scalings reflect at the border as NVlabs does: no zeros flood the corners."""
    images = culture_images("kente", 8, size=32)
    out = make_augment_pipe("geom", p=1.0)(images, _generator())
    corners = out[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners.abs() > 1e-3).float().mean() > 0.9
    assert out.abs().max() < 2.0        # the wavelet filter rings at hard edges, but boundedly


# ----------------------------------------------------------------------------- pipe: colour

def _colour(name: str, images: torch.Tensor, **strengths) -> torch.Tensor:
    return make_augment_pipe({name: 1}, p=1.0, **strengths)(images, _generator())


def test_brightness_adds_one_offset_per_sample():
    images = _images(8)
    delta = (_colour("brightness", images) - images).flatten(1)
    torch.testing.assert_close(delta, delta[:, :1].expand_as(delta), atol=1e-6, rtol=0)
    assert delta[:, 0].abs().max() > 0.05


def test_contrast_scales_each_sample_about_zero():
    images = _images(8)
    ratio = (_colour("contrast", images) / images).flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4, rtol=1e-4)


def test_lumaflip_reflects_luma_and_keeps_chroma():
    images = _images(16)
    out = _colour("lumaflip", images)
    reflected = images - 2 * images.mean(dim=1, keepdim=True)
    per_sample = [torch.equal(o, i) or torch.allclose(o, r, atol=1e-6) for o, i, r in zip(out, images, reflected)]
    assert all(per_sample)
    assert not torch.equal(out, images)


@pytest.mark.parametrize("name", ["hue", "saturation"])
def test_hue_and_saturation_keep_each_pixels_luma(name):
    images = _images(8)
    out = _colour(name, images)
    torch.testing.assert_close(out.mean(dim=1), images.mean(dim=1), atol=1e-5, rtol=0)
    assert (out - images).abs().max() > 0.05


def test_hue_rotation_keeps_the_chroma_length():
    images = _images(8)
    out = _colour("hue", images)

    def chroma(x):
        return (x - x.mean(dim=1, keepdim=True)).norm(dim=1)

    torch.testing.assert_close(chroma(out), chroma(images), atol=1e-5, rtol=1e-5)


def test_zero_strength_colour_transforms_keep_the_images():
    images = _images(8)
    for name, strength in [("brightness", "brightness_std"), ("contrast", "contrast_std"), ("hue", "hue_max")]:
        torch.testing.assert_close(_colour(name, images, **{strength: 0.0}), images, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- pipe: contract

@pytest.mark.parametrize("channels,dtype", [(3, torch.float32), (1, torch.float32), (3, torch.float64)])
def test_bgc_keeps_shape_dtype_device_and_stays_finite(channels, dtype):
    reals = culture_images("ink_wash", 6, size=32).to(dtype)
    reals = reals.mean(dim=1, keepdim=True) if channels == 1 else reals
    fakes = torch.tanh(torch.randn(6, channels, 32, 32, dtype=dtype) * 3)
    pipe = make_augment_pipe("bgc", p=1.0)
    for images in (reals, fakes):
        out = pipe(images)
        assert out.shape == images.shape and out.dtype == images.dtype and out.device == images.device
        assert torch.isfinite(out).all()
        assert not torch.equal(out, images)


def test_same_generator_or_global_seed_gives_the_same_augmentation():
    images = _images(8)
    pipe = make_augment_pipe("bgc", p=0.7)
    assert torch.equal(pipe(images, _generator(5)), pipe(images, _generator(5)))
    assert not torch.equal(pipe(images, _generator(5)), pipe(images, _generator(6)))
    torch.manual_seed(11)
    first = pipe(images)
    torch.manual_seed(11)
    assert torch.equal(pipe(images), first)


@pytest.mark.parametrize("preset", ["blit", "geom", "color"])
def test_augmentation_is_differentiable_twice(preset):
    images = _images(2, size=6, dtype=torch.float64).requires_grad_(True)
    pipe = make_augment_pipe(preset, p=1.0)

    def augment(x):
        return pipe(x, _generator(3))

    # fast_mode checks random projections of the Jacobians: the full ones take minutes here.
    assert torch.autograd.gradcheck(augment, (images,), fast_mode=True)
    assert torch.autograd.gradgradcheck(augment, (images,), fast_mode=True)


def test_whole_bgc_jacobian_matches_finite_differences():
    images = _images(1, size=6, dtype=torch.float64).requires_grad_(True)
    pipe = make_augment_pipe("bgc", p=1.0)
    assert torch.autograd.gradcheck(lambda x: pipe(x, _generator(3)), (images,))


def test_bilinear_grid_sample_matches_torch_to_the_second_derivative():
    """ADA's own grid_sample (double backward on torch 2.11's CUDA too) gives torch's values, its
    images' gradient, and the gradient of that gradient, which R1 takes (native on this torch)."""
    torch.manual_seed(0)
    images = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 4, 6, 2, dtype=torch.float64) * 2.4 - 1.2  # beyond the border too: zeros
    upstream = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn_like(images)
    found = []
    for sample in (ada._BilinearGridSample.apply,
                   lambda x, g: F.grid_sample(x, g, mode="bilinear", padding_mode="zeros", align_corners=False)):
        output = sample(images, grid)
        (gradient,) = torch.autograd.grad((output * upstream).sum(), images, create_graph=True)
        (second,) = torch.autograd.grad((gradient * weights).sum(), upstream)
        found.append((output, gradient, second))
    for mine, torchs in zip(*found):
        torch.testing.assert_close(mine, torchs)
    assert torch.autograd.gradgradcheck(lambda x: ada._BilinearGridSample.apply(x, grid), (images,))


def test_bf16_autocast_differentiates_through_the_geometric_augmentations_twice():
    """The trainer's amp modes run the pipe under autocast: it augments as in float32, and G's
    gradient and R1's double backward pass through it."""
    torch.manual_seed(0)
    discriminator = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Flatten(),
                                        torch.nn.Linear(4 * 16 * 16, 1))
    reals = _images(4).requires_grad_(True)
    pipe = make_augment_pipe("geom", p=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        augmented = pipe(reals.to(torch.bfloat16), _generator())
        logits = discriminator(augmented)
    # the pipe runs in float32 under autocast too: its matrices and grid in bf16 moved pixels
    in_float32 = pipe(reals.detach().to(torch.bfloat16).float(), _generator()).to(torch.bfloat16)
    assert augmented.dtype == torch.bfloat16 and torch.equal(augmented, in_float32)
    (gradient,) = torch.autograd.grad(logits.float().sum(), reals, create_graph=True)
    gradient.square().sum().backward()
    weight_grad = discriminator[0].weight.grad
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0 and weight_grad.abs().sum() > 0


def test_r1_double_backward_through_the_augmentation():
    torch.manual_seed(0)
    discriminator = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Softplus(),
                                        torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 1))
    reals = _images(4).requires_grad_(True)
    logits = discriminator(make_augment_pipe("bgc", p=1.0)(reals, _generator()))
    (gradient,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
    gradient.square().sum().backward()
    weight_grad = discriminator[0].weight.grad
    assert weight_grad is not None and torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0


# ----------------------------------------------------------------------------- controller

def _run(controller: AdaController, logits: list[torch.Tensor], batch: int) -> list[float]:
    history = []
    for step_logits in logits:
        controller.observe(step_logits)
        controller.step(batch)
        history.append(controller.p)
    return history


def test_p_rises_at_nvlabs_rate_when_d_is_overconfident_and_falls_otherwise():
    pipe = make_augment_pipe("bgc")
    controller = AdaController(pipe, target=0.6, ada_kimg=500, interval=4)
    rate = 64 * 4 / 500_000
    sure = [torch.ones(64)] * 8                                      # r_t = 1 > 0.6
    history = _run(controller, sure, 64)
    assert history[:3] == [0.0] * 3                                  # p moves only every 4th step
    assert history[3] == pytest.approx(rate, rel=1e-6) and history[7] == pytest.approx(2 * rate, rel=1e-6)
    unsure = [torch.tensor([1.0, -1.0] * 32)] * 4                    # r_t = 0 < 0.6
    assert _run(controller, unsure, 64)[-1] == pytest.approx(rate, rel=1e-5)
    assert _run(controller, unsure * 3, 64)[-1] == 0.0               # clamped at 0


def test_r_t_is_the_mean_sign_over_the_whole_interval():
    controller = AdaController(make_augment_pipe("bgc"), target=0.6, interval=2)
    # 0.5 then 0.8: 0.65 over the interval, above the target, though the first step is below.
    controller.observe(torch.tensor([1.0, 1.0, 1.0, -1.0]))
    assert controller.step(4) is None
    controller.observe(torch.tensor([1.0] * 9 + [-1.0]))
    assert controller.step(10) == pytest.approx((3 - 1 + 9 - 1) / 14)
    assert controller.p > 0


def test_p_is_clamped_at_one():
    controller = AdaController(make_augment_pipe("bgc", p=0.99), ada_kimg=0.001, interval=1)
    assert _run(controller, [torch.ones(8)] * 3, 8)[-1] == 1.0


def test_resume_continues_exactly():
    torch.manual_seed(1)
    logits = [torch.randn(32) + 1.0 for _ in range(40)]
    reference = AdaController(make_augment_pipe("bgc"), ada_kimg=5)
    expected = _run(reference, logits, 32)

    first = AdaController(make_augment_pipe("bgc"), ada_kimg=5)
    _run(first, logits[:17], 32)                                    # stops mid-interval
    state = json.loads(json.dumps(first.state_dict()))
    resumed = AdaController(make_augment_pipe("bgc"), ada_kimg=5)
    resumed.load_state_dict(state)
    assert _run(resumed, logits[17:], 32) == expected[17:]
    assert max(expected) > 0 and any(b < a for a, b in zip(expected, expected[1:]))   # p went up and down


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,key", [({"target": 0.0}, "target"), ({"target": 1.0}, "target"),
                                        ({"target": -0.6}, "target"), ({"ada_kimg": 0}, "ada_kimg"),
                                        ({"ada_kimg": -1}, "ada_kimg"), ({"interval": 0}, "interval")])
def test_bad_controller_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        AdaController(make_augment_pipe("bgc"), **kwargs)


@pytest.mark.parametrize("make,key", [
    (lambda: make_augment_pipe("bgc", p=-0.1), "p must"),
    (lambda: make_augment_pipe({"xflp": 1}), "xflp"),
    (lambda: make_augment_pipe("bgcx"), "bgcx"),
    (lambda: make_augment_pipe("bgc", scale_sd=0.1), "scale_sd"),
    (lambda: AugmentPipe(hue=-1), "hue"),
])
def test_bad_pipe_settings_name_the_key(make, key):
    with pytest.raises(ValueError, match=key):
        make()


def test_bad_images_and_missing_observations_are_refused():
    pipe = make_augment_pipe("bgc", p=0.5)
    with pytest.raises(ValueError, match="channels"):
        pipe(_images(2, channels=4))
    with pytest.raises(ValueError, match="N, C, H, W"):
        pipe(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="p must"):
        AdaController(pipe).load_state_dict({"p": -1.0, "steps": 0, "sign_sum": 0.0, "sign_count": 0.0})
    for sign_sum, sign_count in ((0.0, -1.0), (float("nan"), 4.0), (5.0, 4.0)):
        with pytest.raises(ValueError, match="sign counts"):
            AdaController(pipe).load_state_dict({"p": 0.5, "steps": 0, "sign_sum": sign_sum, "sign_count": sign_count})
    with pytest.raises(RuntimeError, match="observe"):
        AdaController(pipe, interval=1).step(8)
