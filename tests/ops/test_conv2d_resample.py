"""conv2d_resample: every backend against the float64 reference (the definition in its plain
order), NVlabs' resampling identities, gradients to second order, torch.compile, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from culturegan import ops
from helpers import (BACKENDS, CPU_BACKENDS, DTYPES, HALVES, assert_close_to_conv, assert_compiles_like_eager,
                     assert_gradcheck_and_gradgradcheck, bad_input_params, interpreted, make_layout)

# (C_in, C_out, H, W, kernel, up, down, padding, groups, filter, layout, flip_weight, flip_filter):
# StyleGAN2's layers (3x3 up with padding 1, 3x3 down, 1x1 up and down), groups (the grouped
# modulated form), 1x1 images, uneven and negative padding, up and down together, no filter and
# a separable one; among the up, the down and the other rows each flip takes both values.
GEOMETRIES = [
    (4, 6, 5, 7, 3, 1, 1, 1, 1, "binomial", "contiguous", True, False),
    (4, 6, 5, 7, 3, 2, 1, 1, 1, "binomial", "channels_last", False, False),
    (4, 6, 8, 9, 3, 1, 2, 1, 1, "binomial", "strided", True, True),
    (4, 6, 5, 4, 1, 2, 1, 0, 1, "binomial", "contiguous", False, True),
    (4, 6, 8, 7, 1, 1, 2, 0, 1, "binomial", "channels_last", True, False),
    (4, 6, 5, 6, 3, 2, 1, 1, 2, "binomial", "contiguous", True, True),
    (4, 4, 7, 7, 3, 1, 2, 1, 4, "binomial", "strided", False, False),
    (3, 2, 1, 1, 3, 1, 1, 1, 1, "binomial", "contiguous", False, True),
    (3, 2, 1, 1, 3, 2, 1, 1, 1, "binomial", "channels_last", True, False),
    (4, 3, 6, 5, 3, 1, 1, (2, 0, 1, -1), 1, "binomial", "contiguous", False, False),
    (2, 3, 5, 5, 3, 2, 2, 1, 1, "binomial", "contiguous", True, True),
    (2, 3, 4, 5, 3, 2, 1, 1, 1, None, "strided", False, True),
    (2, 3, 9, 8, 3, 1, 2, (1, 2), 1, "separable", "contiguous", False, True),
    (2, 3, 4, 4, 3, 1, 1, (-5, 8, 1, 1), 1, None, "contiguous", True, False),  # a crop wider than x, padded back
]
FILTERS = {None: None, "binomial": [1, 3, 3, 1], "separable": [1, 2, 4, 6, 6, 4, 2, 1]}


def resample_filter(name, device):
    return None if name is None else ops.setup_filter(FILTERS[name], device=device)


def make_inputs(geometry, dtype, device, requires_grad=False):
    """x (2 samples) in the geometry's layout and a weight scaled to keep the output's variance
    near x's, made in float32, then cast."""
    c_in, c_out, height, width, kernel, groups, layout = (*geometry[:5], geometry[8], geometry[10])
    x = make_layout(torch.randn(2, c_in, height, width, device=device).to(dtype), layout)
    weight = torch.randn(c_out, c_in // groups, kernel, kernel, device=device) / math.sqrt(c_in // groups * kernel ** 2)
    return x.requires_grad_(requires_grad), weight.to(dtype).requires_grad_(requires_grad)


def arguments(geometry, device):
    """The call's arguments after x and weight: f, up, down, padding, groups, flip_weight, flip_filter."""
    up, down, padding, groups, name, _, flip_weight, flip_filter = geometry[5:]
    return resample_filter(name, device), up, down, padding, groups, flip_weight, flip_filter


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_forward_and_gradients_match_reference(device, backend, dtype, geometry):
    if interpreted(device, backend) and dtype != torch.float32:
        pytest.skip("the Triton interpreter gets float32 only (slow)")
    x, weight = make_inputs(geometry, dtype, device, requires_grad=True)
    rest = arguments(geometry, device)
    y = ops.conv2d_resample(x, weight, *rest, backend=backend)
    leaves64 = [t.detach().double().requires_grad_() for t in (x, weight)]
    y64 = ops.conv2d_resample_reference(*leaves64, *rest)
    assert y.shape == y64.shape and y.dtype == dtype
    assert_close_to_conv(y, y64, dtype, f"{backend} forward")
    if dtype in HALVES:
        return  # half gradients: the same steps in ATen's and upfirdn2d's half backward
    grad = torch.randn_like(y64)
    got = torch.autograd.grad(y, (x, weight), grad.to(dtype))
    want = torch.autograd.grad(y64, leaves64, grad)
    for name, g, w in zip(("x", "weight"), got, want):
        assert_close_to_conv(g, w, dtype, f"{backend} grad {name}")


def test_output_sizes_follow_the_factors():
    """A 3x3 convolution with padding 1 maps H to H * up // down, as NVlabs' layers rely on."""
    f = ops.setup_filter([1, 3, 3, 1])
    x, weight = torch.randn(2, 3, 8, 6), torch.randn(5, 3, 3, 3)
    for up, down, size in ((1, 1, (8, 6)), (2, 1, (16, 12)), (1, 2, (4, 3)), (2, 2, (8, 6))):
        assert ops.conv2d_resample(x, weight, f, up, down, 1).shape == (2, 5, *size)


def test_resampling_identities():
    """With a 1x1 identity weight the op is NVlabs' upsample2d / downsample2d, and without
    resampling it is F.conv2d (flip_weight=False: with the kernel flipped)."""
    f = ops.setup_filter([1, 3, 3, 1], device="cpu").double()
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    identity = torch.eye(3, dtype=torch.float64)[:, :, None, None]
    for backend in ("cpu", "reference"):
        torch.testing.assert_close(ops.conv2d_resample(x, identity, f, up=2, backend=backend), ops.upsample2d(x, f))
        torch.testing.assert_close(ops.conv2d_resample(x, identity, f, down=2, backend=backend),
                                   ops.downsample2d(x, f))
        weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
        torch.testing.assert_close(ops.conv2d_resample(x, weight, padding=1, backend=backend),
                                   F.conv2d(x, weight, padding=1))
        torch.testing.assert_close(ops.conv2d_resample(x, weight, padding=1, flip_weight=False, backend=backend),
                                   F.conv2d(x, weight.flip([2, 3]), padding=1))


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("case", [(3, 2, 1, 1), (3, 1, 2, 1), (1, 2, 1, 2)], ids=["up", "down", "1x1-up-groups"])
def test_gradcheck_and_gradgradcheck_float64(device, backend, case):
    kernel, up, down, groups = case
    # One channel per group: finite differences over every element are the test's cost.
    x = torch.randn(1, groups, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(groups, 1, kernel, kernel, dtype=torch.float64, device=device, requires_grad=True)
    f = ops.setup_filter([1, 3, 3, 1], device=device)

    def fn(x, weight):
        return ops.conv2d_resample(x, weight, f, up, down, kernel // 2, groups, up == 1, backend=backend)

    assert_gradcheck_and_gradgradcheck(fn, (x, weight), device, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    x, weight = make_inputs(GEOMETRIES[1], torch.float32, device, requires_grad=True)
    f = ops.setup_filter([1, 3, 3, 1], device=device)

    def loss(x, weight):
        return ops.conv2d_resample(x, weight, f, up=2, padding=1, flip_weight=False, backend=backend).square().sum()

    assert_compiles_like_eager(loss, (x, weight))


def _input(**changes):
    base = dict(x=torch.randn(2, 4, 6, 6), weight=torch.randn(3, 4, 3, 3), f=ops.setup_filter([1, 3, 3, 1]))
    return {**base, **changes}


BAD_INPUTS = [
    ("3-D x", lambda: _input(x=torch.randn(4, 6, 6)), ValueError, "x must have 4 dimensions"),
    ("integer x", lambda: _input(x=torch.ones(2, 4, 6, 6, dtype=torch.int64)), TypeError,
     "x must be a floating-point tensor"),
    ("channel mismatch", lambda: _input(weight=torch.randn(3, 5, 3, 3)), ValueError,
     "takes 5 input channels and C_out must divide by groups, but x has 4 channels"),
    ("groups do not divide C_out", lambda: _input(weight=torch.randn(3, 2, 3, 3), groups=2), ValueError,
     "C_out must divide by groups"),
    ("groups zero", lambda: _input(groups=0), ValueError, "groups must be an int >= 1"),
    ("weight dtype", lambda: _input(weight=torch.randn(3, 4, 3, 3, dtype=torch.float64)), TypeError,
     "weight has dtype torch.float64 but x has dtype torch.float32"),
    ("weight 2-D", lambda: _input(weight=torch.randn(3, 4)), ValueError, "weight must have 4 dimensions"),
    ("weight on another device", lambda: _input(weight=torch.randn(3, 4, 3, 3, device="meta")), ValueError,
     "weight is on meta but x is on cpu"),
    ("up zero", lambda: _input(up=0), ValueError, "up must be an int >= 1"),
    ("down a float", lambda: _input(down=2.0), ValueError, "down must be an int >= 1"),
    ("up a pair", lambda: _input(up=(2, 2)), ValueError, "up must be an int >= 1 (one factor for both axes)"),
    ("padding of 3", lambda: _input(padding=(1, 1, 1)), TypeError, "padding must be an int, an (x, y) pair"),
    ("filter with grad", lambda: _input(f=torch.ones(4, requires_grad=True)), ValueError, "f is a fixed filter"),
    ("3-D filter", lambda: _input(f=torch.ones(2, 2, 2)), ValueError, "f must be a non-empty 1-D"),
    ("filter on another device", lambda: _input(f=torch.ones(4, device="meta")), ValueError,
     "f is on meta but x is on cpu"),
    ("empty output", lambda: _input(x=torch.randn(2, 4, 1, 1), padding=0, f=None), ValueError,
     "the output would be empty"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_is_rejected(device, backend, make, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        ops.conv2d_resample(**make(), backend=backend)
