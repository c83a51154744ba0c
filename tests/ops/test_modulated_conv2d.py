"""modulated_conv2d: every backend against the float64 reference (the N modulated weights),
StyleGAN2's invariances, float16 range, gradients to second order, torch.compile, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from culturegan import ops
from helpers import (BACKENDS, CPU_BACKENDS, DTYPES, FAST_BACKENDS, HALVES, assert_close_to_conv,
                     assert_compiles_like_eager, assert_gradcheck_and_gradgradcheck, bad_input_params, interpreted,
                     make_layout)

# (batch, C_in, C_out, H, W, kernel, up, down, demodulate, noise, layout): StyleGAN2's conv0
# (3x3, up 2, true convolution), conv1 and ToRGB (1x1, no demodulation), a downsampling one,
# batch 1 and 3, odd sizes, 1x1 images; noise per pixel, per pixel and channel, or a broadcast row.
CASES = [
    (3, 4, 5, 5, 7, 3, 1, 1, True, "pixel", "contiguous"),
    (2, 4, 6, 4, 5, 3, 2, 1, True, "pixel", "channels_last"),
    (1, 5, 3, 6, 6, 1, 1, 1, False, None, "contiguous"),
    (2, 4, 3, 7, 6, 3, 1, 2, True, None, "strided"),
    (1, 3, 4, 1, 1, 3, 1, 1, True, "full", "contiguous"),
    (2, 3, 4, 1, 1, 3, 2, 1, True, "row", "channels_last"),
    (2, 4, 3, 5, 4, 1, 2, 1, False, "pixel", "strided"),
]

# Half outputs are rounded three times (x * s, the convolution, * d) and so are the scales.
HALF_SCALE = 8.0


def make_inputs(case, dtype, device, requires_grad=False):
    """x in the case's layout; the weight as StyleGAN2 stores it (N(0, 1), no gain) and styles
    near 1 (the affine layer's bias init), both float32 for half x as NVlabs' fp16 layers pass
    them, float64 for float64 x; noise of the case's kind."""
    batch, c_in, c_out, height, width, kernel, up, down, _, noise_kind, layout = case
    params = torch.promote_types(dtype, torch.float32)
    x = make_layout(torch.randn(batch, c_in, height, width, device=device).to(dtype), layout)
    weight = torch.randn(c_out, c_in, kernel, kernel, device=device).to(params)
    styles = (1 + 0.5 * torch.randn(batch, c_in, device=device)).to(params)
    out_h, out_w = height * up // down, width * up // down
    noise_shape = {"pixel": (batch, 1, out_h, out_w), "full": (batch, c_out, out_h, out_w), "row": (1, 1, 1, out_w),
                   None: None}[noise_kind]
    noise = None if noise_shape is None else torch.randn(noise_shape, device=device).to(dtype)
    tensors = [x, weight, styles, noise]
    return [t if t is None else t.requires_grad_(requires_grad) for t in tensors]


def options(case, device):
    """(up, down, padding, resample_filter, demodulate, flip_weight) as StyleGAN2's layers pass them."""
    kernel, up, down, demodulate = case[5:9]
    return up, down, kernel // 2, ops.setup_filter([1, 3, 3, 1], device=device), demodulate, up == 1


def reference64(tensors, *rest):
    leaves = [t if t is None else t.detach().double().requires_grad_() for t in tensors]
    return leaves, ops.modulated_conv2d_reference(*leaves, *rest)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_gradients_match_reference(device, backend, dtype, case):
    if interpreted(device, backend) and dtype != torch.float32:
        pytest.skip("the Triton interpreter gets float32 only (slow)")
    tensors = make_inputs(case, dtype, device, requires_grad=True)
    rest = options(case, device)
    y = ops.modulated_conv2d(*tensors, *rest, backend=backend)
    leaves, y64 = reference64(tensors, *rest)
    assert y.shape == y64.shape and y.dtype == dtype
    assert_close_to_conv(y, y64, dtype, f"{backend} forward", HALF_SCALE)
    if dtype in HALVES:
        return  # half gradients: float32 scales, the steps' own half backward
    wanted = [(name, t, leaf) for name, t, leaf in zip(("x", "weight", "styles", "noise"), tensors, leaves)
              if t is not None]
    grad = torch.randn_like(y64)
    got = torch.autograd.grad(y, [t for _, t, _ in wanted], grad.to(dtype))
    want = torch.autograd.grad(y64, [leaf for _, _, leaf in wanted], grad)
    for (name, _, _), g, w in zip(wanted, got, want):
        assert_close_to_conv(g, w, dtype, f"{backend} grad {name}")


def test_reference_is_stylegan2s_definition():
    """The reference against the formula written out per sample: W * s, normalised per output
    channel, F.conv2d of that sample alone, plus noise."""
    x, weight = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    styles, noise = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 1, 5, 5, dtype=torch.float64)
    y = ops.modulated_conv2d_reference(x, weight, styles, noise, padding=1)
    for n in range(2):
        modulated = weight * styles[n].view(1, -1, 1, 1)
        modulated = modulated / (modulated.square().sum([1, 2, 3], keepdim=True) + 1e-8).sqrt()
        torch.testing.assert_close(y[n], F.conv2d(x[n:n + 1], modulated, padding=1)[0] + noise[n])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_demodulation_ignores_the_style_scale_and_its_absence_keeps_it(backend):
    """Demodulated outputs are invariant to scaling a sample's styles; without demodulation
    (ToRGB) they scale with them."""
    x, weight = torch.randn(2, 4, 6, 6, dtype=torch.float64), torch.randn(3, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(2, 4, dtype=torch.float64)
    sample_scale = torch.tensor([[3.0], [0.25]], dtype=torch.float64)
    for demodulate, factor in ((True, 1.0), (False, sample_scale.view(2, 1, 1, 1))):
        y = ops.modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, backend=backend)
        scaled = ops.modulated_conv2d(x, weight, styles * sample_scale, padding=1, demodulate=demodulate,
                                      backend=backend)
        torch.testing.assert_close(scaled, y * factor)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_float16_stays_in_range_where_the_plain_fold_overflows(device, backend):
    """Large styles and raw N(0, 1) weights: the plain fold (x * s, the float16 convolution, * d)
    overflows float16, the op's pre-normalised scales do not, and the result is float32's."""
    if interpreted(device, backend):
        pytest.skip("the Triton interpreter gets float32 only (slow)")
    x = (4 * torch.randn(2, 64, 4, 4, device=device)).half()
    weight = torch.randn(8, 64, 3, 3, device=device)
    styles = 300 * (1 + torch.rand(2, 64, device=device))
    weight[3] = 0  # an all-zero output channel: its pre-normalisation factor stays finite
    styles[1, :] = 0  # an all-zero style: its sample's output is 0, not NaN
    if device == "cpu" or backend != "reference":
        demodulation = (styles.square() @ weight.square().sum([2, 3]).t() + 1e-8).rsqrt()
        plain = F.conv2d(x * styles.half()[:, :, None, None], weight.half(), padding=1)
        assert not torch.isfinite(plain * demodulation.half()[:, :, None, None]).all()
    y = ops.modulated_conv2d(x, weight, styles, padding=1, backend=backend)
    assert torch.isfinite(y).all()
    assert (y[1] == 0).all() and (y[:, 3] == 0).all()
    _, y64 = reference64([x, weight, styles, None], 1, 1, 1)
    assert_close_to_conv(y, y64, torch.float16, f"{backend} float16", HALF_SCALE)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("case", [CASES[1], CASES[6]], ids=["up-demodulated-noise", "1x1-up-torgb-noise"])
def test_gradcheck_and_gradgradcheck_float64(device, backend, case):
    """Second order in x, weight, styles and noise (R1 and path-length regularisation)."""
    small = (1, 2, 1, 2, 2, *case[5:])
    tensors = make_inputs(small, torch.float64, device, requires_grad=True)
    rest = options(small, device)

    def fn(*tensors):
        return ops.modulated_conv2d(*tensors, *rest, backend=backend)

    assert_gradcheck_and_gradgradcheck(fn, tuple(tensors), device, backend)


# Compiling takes 10-25 s per backend on a 2-core CPU: the fast backends that run compiled code.
@pytest.mark.parametrize("device, backend", [p for p in FAST_BACKENDS if not interpreted(*p.values)])
def test_torch_compile_fullgraph(device, backend):
    case = CASES[1]
    tensors = make_inputs(case, torch.float32, device, requires_grad=True)
    rest = options(case, device)

    def loss(*tensors):
        return ops.modulated_conv2d(*tensors, *rest, backend=backend).square().sum()

    assert_compiles_like_eager(loss, tensors)


def test_autocast_runs_in_autocasts_dtype():
    x, weight, styles = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.modulated_conv2d(x, weight, styles, padding=1)
    assert y.dtype == torch.bfloat16
    _, y64 = reference64([x.bfloat16(), weight.bfloat16(), styles.bfloat16(), None], 1, 1, 1)
    assert_close_to_conv(y, y64, torch.bfloat16, "autocast", HALF_SCALE)


def _input(**changes):
    base = dict(x=torch.randn(2, 4, 6, 6), weight=torch.randn(3, 4, 3, 3), styles=torch.randn(2, 4), padding=1)
    return {**base, **changes}


BAD_INPUTS = [
    ("3-D x", lambda: _input(x=torch.randn(4, 6, 6)), ValueError, "x must have 4 dimensions"),
    ("channel mismatch", lambda: _input(weight=torch.randn(3, 5, 3, 3)), ValueError,
     "which takes 5 input channels, but x has 4"),
    ("integer weight", lambda: _input(weight=torch.ones(3, 4, 3, 3, dtype=torch.int32)), TypeError,
     "weight must be a floating-point tensor"),
    ("styles per channel only", lambda: _input(styles=torch.randn(4)), ValueError,
     "styles must have shape (2, 4) (x's samples and input channels), got shape (4,)"),
    ("styles of another batch", lambda: _input(styles=torch.randn(3, 4)), ValueError,
     "styles must have shape (2, 4)"),
    ("integer styles", lambda: _input(styles=torch.ones(2, 4, dtype=torch.int64)), TypeError,
     "styles must be a floating-point tensor"),
    ("styles on another device", lambda: _input(styles=torch.randn(2, 4, device="meta")), ValueError,
     "styles is on meta but x is on cpu"),
    ("styles a list", lambda: _input(styles=[[1.0] * 4] * 2), TypeError, "styles must be a torch.Tensor"),
    ("noise of the input's size", lambda: _input(noise=torch.randn(2, 1, 6, 6), up=2), ValueError,
     "noise of shape (2, 1, 6, 6) does not broadcast to the output's shape (2, 3, 12, 12)"),
    ("noise of another batch", lambda: _input(noise=torch.randn(3, 1, 6, 6)), ValueError, "does not broadcast"),
    ("noise with more dimensions", lambda: _input(noise=torch.randn(1, 2, 1, 6, 6)), ValueError,
     "does not broadcast"),
    ("integer noise", lambda: _input(noise=torch.ones(2, 1, 6, 6, dtype=torch.int64)), TypeError,
     "noise must be a floating-point tensor"),
    ("up zero", lambda: _input(up=0), ValueError, "up must be an int >= 1"),
    ("filter with grad", lambda: _input(resample_filter=torch.ones(4, requires_grad=True), up=2), ValueError,
     "f is a fixed filter"),
    ("empty output", lambda: _input(x=torch.randn(2, 4, 1, 1), padding=0), ValueError, "the output would be empty"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_is_rejected(device, backend, make, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        ops.modulated_conv2d(**make(), backend=backend)


def test_weight_scale_is_the_only_float16_assumption():
    """float16 x with float16 weight and styles (not NVlabs' float32 parameters) works too."""
    x, weight, styles = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), 1 + torch.rand(2, 3)
    y = ops.modulated_conv2d(x.half(), weight.half(), styles.half(), padding=1, backend="cpu")
    _, y64 = reference64([x.half(), weight.half(), styles.half(), None], 1, 1, 1)
    assert y.dtype == torch.float16
    assert_close_to_conv(y, y64, torch.float16, "float16 parameters", HALF_SCALE)
    assert math.isfinite(y.float().abs().max().item())
