"""channel_affine: every backend against the pure-torch reference."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from culturegan.ops._layout import math_dtype
from helpers import (BACKENDS, BASE_CASES, CPU_BACKENDS, DTYPES, FAST_BACKENDS, HALVES, TOLERANCES, arbitrary_strides,
                     assert_close, assert_compiles_like_eager, assert_gradcheck_and_gradgradcheck, bad_input_params,
                     make_layout, native_op, poison_allocator, skip_unless_registered)

CASES = BASE_CASES + [((4, 6), "contiguous")]  # and a 2-D input
SLOPES = [None, 0.2, 0.0]


def inputs(shape, layout, dtype, device, requires_grad=False):
    """x with a large per-channel offset, and (N, C) parameters in x's math type."""
    offset = 50 * torch.randn(shape[:2] + (1,) * (len(shape) - 2), device=device)
    x = make_layout((offset + 3 * torch.randn(shape, device=device)).to(dtype), layout)
    math = math_dtype(dtype)
    center = (offset.view(shape[:2]) + torch.randn(shape[:2], device=device)).to(math)
    scale = torch.randn(shape[:2], device=device).to(math)
    shift = torch.randn(shape[:2], device=device).to(math)
    return tuple(t.requires_grad_(requires_grad) for t in (x, center, scale, shift))


def reference64(x, center, scale, shift, negative_slope):
    """The reference evaluated in float64 on the same (rounded) inputs."""
    return ops.channel_affine_reference(*(t.detach().double() for t in (x, center, scale, shift)), negative_slope)


def error_scale(x, center, scale, shift):
    """|x - center| * |scale| + |shift|: the size of the terms of y, to which its rounding scales."""
    view = x.shape[:2] + (1,) * (x.dim() - 2)
    return ((x.double() - center.double().view(view)).abs() * scale.double().abs().view(view)
            + shift.double().abs().view(view))


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("negative_slope", SLOPES, ids=str)
def test_forward_matches_reference(device, backend, dtype, shape, layout, negative_slope):
    x, center, scale, shift = inputs(shape, layout, dtype, device)
    before = x.clone()
    poison_allocator(device, x.numel(), dtype)
    y = ops.channel_affine(x, center, scale, shift, negative_slope, backend=backend)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    expected = reference64(x, center, scale, shift, negative_slope)
    atol, rtol = TOLERANCES[dtype]
    # x - center is exact in the math type; (x - center) * scale + shift rounds once per step.
    allowed = atol + rtol * error_scale(x, center, scale, shift)
    error = (y.double() - expected).abs()
    assert (error <= allowed).all(), f"{backend}: max error {error.max()}"
    if layout != "strided":  # dense inputs keep their layout
        assert y.stride() == x.stride()
    assert torch.equal(x, before), "the input was modified"


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("negative_slope", SLOPES, ids=str)
def test_gradients_match_reference(device, backend, dtype, shape, layout, negative_slope):
    x, center, scale, shift = inputs(shape, layout, dtype, device, requires_grad=True)
    y = ops.channel_affine(x, center, scale, shift, negative_slope, backend=backend)
    grad = torch.randn(x.shape, device=device).to(dtype)
    poison_allocator(device, x.numel(), dtype)
    grads = torch.autograd.grad(y, (x, center, scale, shift), grad)
    leaves64 = [t.detach().double().requires_grad_() for t in (x, center, scale, shift)]
    y64 = ops.channel_affine_reference(*leaves64, negative_slope)
    expected = torch.autograd.grad(y64, leaves64, grad.double())
    for name, got, want, leaf in zip(("x", "center", "scale", "shift"), grads, expected, (x, center, scale, shift)):
        assert got.dtype == leaf.dtype and got.shape == leaf.shape, name
        if name == "x" or backend != "reference" or dtype not in HALVES:
            assert_close(got, want, dtype if name == "x" else math_dtype(dtype), f"{backend} grad {name}")


def test_reference_is_instance_norm_with_leaky_relu():
    """center = mean, scale = 1 / std: nn.InstanceNorm2d then LeakyReLU, in one call."""
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    mean, std = ops.feature_stats(x)
    y = ops.channel_affine(x, mean, 1 / std, torch.zeros_like(mean), 0.2)
    torch.testing.assert_close(y, F.leaky_relu(F.instance_norm(x, eps=1e-5), 0.2))


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("negative_slope", [None, 0.2], ids=str)
def test_per_channel_parameters_broadcast_over_samples(device, backend, negative_slope):
    x, _, _, _ = inputs((3, 4, 2, 5), "channels_last", torch.float32, device)
    center, scale, shift = (torch.randn(4, device=device) for _ in range(3))
    y = ops.channel_affine(x, center, scale, shift, negative_slope, backend=backend)
    expected = ops.channel_affine_reference(x, *(v.expand(3, 4) for v in (center, scale, shift)), negative_slope)
    assert_close(y, expected, torch.float32, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("negative_slope", [None, 0.2], ids=str)
@pytest.mark.parametrize("shape, layout", [((2, 3, 3, 4), "contiguous"), ((2, 3, 3, 4), "channels_last"),
                                           ((2, 3, 3, 4), "strided"), ((2, 3, 5), "contiguous"),
                                           ((3, 4), "contiguous")], ids=str)
def test_gradcheck_and_gradgradcheck_float64(device, backend, negative_slope, shape, layout):
    x, center, scale, shift = inputs(shape, layout, torch.float64, device, requires_grad=True)
    fn = lambda *a: ops.channel_affine(*a, negative_slope, backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x, center, scale, shift), device, backend)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("shape, layout", [((2, 3, 4, 5), "contiguous"), ((2, 3, 4, 5), "channels_last"),
                                           ((2, 3, 4, 5), "strided"), ((2, 3, 7), "channels_last"),
                                           ((3, 4), "contiguous")], ids=str)
def test_opcheck(device, backend, shape, layout):
    op = native_op("channel_affine", backend)
    x, center, scale, shift = inputs(shape, layout, torch.float32, device, requires_grad=True)
    torch.library.opcheck(op, (x, center, scale, shift, None))
    torch.library.opcheck(op, (x, center, scale, shift, 0.2))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    def adain(content, style):
        c_mean, c_std = ops.feature_stats(content, backend=backend)
        s_mean, s_std = ops.feature_stats(style, backend=backend)
        return ops.channel_affine(content, c_mean, s_std / c_std, s_mean, 0.2, backend=backend).square().mean()

    # Unit-scale features: Inductor reorders float32 sums, which the tolerance is sized for;
    # inputs() adds offsets of ~50 that would scale the rounding beyond it.
    content = make_layout(torch.randn(2, 3, 4, 4, device=device), "channels_last").requires_grad_()
    style = torch.randn(2, 3, 5, 3, device=device, requires_grad=True)
    assert_compiles_like_eager(adain, (content, style))


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), shape=st.lists(st.integers(1, 6), min_size=2, max_size=4), step=st.integers(1, 3),
       negative_slope=st.sampled_from(SLOPES))
def test_random_shapes_and_strides(device, backend, data, shape, step, negative_slope):
    order = data.draw(st.permutations(range(len(shape))), label="memory order")
    x, center, scale, shift = inputs(tuple(shape), "contiguous", torch.float32, device)
    x = arbitrary_strides(x, order, step)
    y = ops.channel_affine(x, center, scale, shift, negative_slope, backend=backend)
    allowed = 1e-5 + 1e-5 * error_scale(x, center, scale, shift)
    error = (y.double() - reference64(x, center, scale, shift, negative_slope)).abs()
    assert (error <= allowed).all(), f"shape {shape} strides {x.stride()}: max error {error.max()}"


# ------------------------------------------------------------------------------ bad input

def _good(**changes):
    base = dict(x=torch.ones(2, 3, 4, 4), center=torch.zeros(2, 3), scale=torch.ones(2, 3), shift=torch.zeros(2, 3),
                negative_slope=None)
    return base | changes


BAD_INPUTS = [
    # (description, kwargs, exception, message fragment)
    ("integer x", _good(x=torch.ones(2, 3, 4, 4, dtype=torch.int32)), TypeError, "x must be a floating-point tensor"),
    ("rank 1", _good(x=torch.ones(3)), ValueError, "x must have 2 to 4 dimensions"),
    ("rank 5", _good(x=torch.ones(2, 3, 1, 2, 2)), ValueError, "x must have 2 to 4 dimensions"),
    ("empty", _good(x=torch.ones(2, 3, 0, 4)), ValueError, "x is empty"),
    ("scale of the wrong shape", _good(scale=torch.ones(3, 2)), ValueError, r"scale must have shape \(2, 3\)"),
    ("center of the wrong shape", _good(center=torch.ones(2, 3, 1)), ValueError, r"center must have shape \(2, 3\)"),
    ("integer shift", _good(shift=torch.zeros(2, 3, dtype=torch.int64)), TypeError, "shift must be a floating-point"),
    ("negative slope", _good(negative_slope=-0.1), ValueError, "negative_slope must be >= 0"),
    ("nan slope", _good(negative_slope=float("nan")), TypeError, "negative_slope must be a finite number"),
    ("scale not a tensor", _good(scale=1.0), TypeError, "scale must be a torch.Tensor"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("kwargs, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, kwargs, error, message):
    with pytest.raises(error, match=message):
        ops.channel_affine(**kwargs, backend=backend)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is available")
def test_parameters_on_another_device_raise():
    x = torch.ones(2, 3, 4, device="cuda")
    with pytest.raises(ValueError, match="scale is on cpu but x is on cuda"):
        ops.channel_affine(x, torch.zeros(2, 3, device="cuda"), torch.ones(2, 3), torch.zeros(2, 3, device="cuda"))


NATIVE_BAD_INPUTS = [
    ("half parameters", _good(scale=torch.ones(2, 3, dtype=torch.float16)), TypeError,
     "scale must have dtype torch.float32"),
    ("float64 parameters for float32 x", _good(center=torch.zeros(2, 3, dtype=torch.float64)), TypeError,
     "center must have dtype torch.float32"),
    ("parameters of the wrong shape", _good(shift=torch.zeros(3)), ValueError, r"shift must have shape \(2, 3\)"),
    ("integer x", _good(x=torch.ones(2, 3, 4, dtype=torch.int32)), TypeError, "x must be a floating-point tensor"),
    ("negative slope", _good(negative_slope=-1.0), ValueError, "negative_slope must be >= 0"),
]


@pytest.mark.parametrize("name", ["channel_affine", "channel_affine_triton"])
@pytest.mark.parametrize("kwargs, error, message", bad_input_params(NATIVE_BAD_INPUTS))
def test_registered_ops_check_their_arguments(name, kwargs, error, message):
    """The registered ops take (N, C) parameters in x's math type only, and say so."""
    skip_unless_registered(name)
    with pytest.raises(error, match=message):
        getattr(torch.ops.culturegan, name)(*kwargs.values())
