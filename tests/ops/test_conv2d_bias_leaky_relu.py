"""conv2d_bias_leaky_relu: every backend against the pure-torch reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from culturegan import ops
from helpers import (BACKENDS, DTYPES, HALVES, NOT_TRITON, TOLERANCES, TRITON, assert_gradcheck_and_gradgradcheck,
                     bad_input_params, conv_inputs, interpreted)

# (C_in, C_out, H, W, kernel, stride, padding, padding_mode): kernel sizes 1, 3, 4, 7; strides
# 1 and 2; odd sizes; reflection padding (CycleGAN) and zeros (PatchGAN: k4 s2 p1).
GEOMETRIES = [
    (3, 4, 9, 7, 1, 1, 0, "zeros"),
    (3, 5, 8, 8, 3, 1, 1, "reflect"),
    (4, 3, 9, 10, 4, 2, 1, "zeros"),
    (2, 3, 11, 9, 7, 1, 3, "reflect"),
    (3, 2, 7, 7, 3, 2, 1, "reflect"),
    (1, 1, 1, 1, 1, 1, 0, "zeros"),
]
PARAMS = [(0.2, 1.0, None), (0.2, math.sqrt(2), 0.5), (0.0, 1.0, None)]


def inputs(geometry, dtype, device, layout="contiguous", requires_grad=False):
    return [t.requires_grad_(requires_grad) for t in conv_inputs(geometry, dtype, device, layout)]


def assert_close_to_conv(actual, expected64, dtype, what):
    """Conv outputs sum C_in * k * k products: tolerances scale with the output's magnitude."""
    atol, rtol = TOLERANCES[dtype]
    scale = 4.0 if dtype in HALVES else 1.0  # a half conv rounds its inputs' products
    torch.testing.assert_close(actual.double(), expected64, atol=atol * scale * (1 + expected64.abs().max().item()),
                               rtol=rtol * scale, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_forward_and_gradients_match_reference(device, backend, dtype, geometry, layout, params):
    if interpreted(device, backend) and (dtype != torch.float32 or params != PARAMS[0]):
        pytest.skip("the Triton interpreter gets float32 and one activation only (slow)")
    stride, padding, padding_mode = geometry[5:]
    x, weight, bias = inputs(geometry, dtype, device, layout, requires_grad=True)
    y = ops.conv2d_bias_leaky_relu(x, weight, bias, stride, padding, padding_mode, 1, *params, backend=backend)
    leaves64 = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    y64 = ops.conv2d_bias_leaky_relu_reference(*leaves64, stride, padding, padding_mode, 1, *params)
    assert y.shape == y64.shape and y.dtype == dtype
    assert_close_to_conv(y, y64, dtype, f"{backend} forward")
    if dtype in HALVES:
        return  # half gradients: each piece is tested in test_bias_leaky_relu and by torch's conv
    grad = torch.randn_like(y64)
    got = torch.autograd.grad(y, (x, weight, bias), grad.to(dtype))
    want = torch.autograd.grad(y64, leaves64, grad)
    for name, g, w in zip(("x", "weight", "bias"), got, want):
        assert_close_to_conv(g, w, dtype, f"{backend} grad {name}")


def test_matches_torch_layers():
    """The defaults are nn.Conv2d followed by nn.LeakyReLU(0.2)."""
    conv = torch.nn.Conv2d(3, 8, 4, stride=2, padding=1, padding_mode="reflect", dtype=torch.float64)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected = F.leaky_relu(conv(x), 0.2)
    got = ops.conv2d_bias_leaky_relu(x, conv.weight, conv.bias, 2, 1, "reflect")
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("device, backend", NOT_TRITON)
def test_gradcheck_float64(device, backend):
    x, weight, bias = inputs((2, 3, 5, 6, 3), torch.float64, device, requires_grad=True)
    fn = lambda *a: ops.conv2d_bias_leaky_relu(*a, 2, 1, "reflect", backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, bias))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    shape = (2, 3, 5, 5, 3) if interpreted(device, backend) else (3, 4, 12, 12, 3)
    x, weight, bias = inputs(shape, torch.float32, device, requires_grad=True)
    fn = lambda *a: ops.conv2d_bias_leaky_relu(*a, 1, 1, "reflect", backend=backend).square().sum()  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True)
    got = torch.autograd.grad(compiled(x, weight, bias), (x, weight, bias))
    want = torch.autograd.grad(fn(x, weight, bias), (x, weight, bias))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


BAD_INPUTS = [
    ("3-D x", dict(x=torch.ones(3, 8, 8)), ValueError, "x must have 4 dimensions, got shape"),
    ("integer x", dict(x=torch.ones(1, 3, 8, 8, dtype=torch.int64)), TypeError, "x must be a floating-point"),
    ("channel mismatch", dict(weight=torch.ones(4, 2, 3, 3)), ValueError, "takes 2 input channels, but x has 3"),
    ("weight dtype", dict(weight=torch.ones(4, 3, 3, 3, dtype=torch.float64)), TypeError, "weight has dtype"),
    ("bias shape", dict(bias=torch.ones(3)), ValueError, r"bias must have shape \(4,\)"),
    ("padding mode", dict(padding_mode="circular"), ValueError, "padding_mode must be one of"),
    ("negative stride", dict(stride=0), ValueError, "stride must be an int >= 1"),
    ("reflect too wide", dict(padding=8, padding_mode="reflect"), ValueError, "reflect padding"),
    ("negative slope", dict(negative_slope=-0.1), ValueError, "negative_slope must be >= 0"),
]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("changes, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(backend, changes, error, message):
    args = dict(x=torch.ones(1, 3, 8, 8), weight=torch.ones(4, 3, 3, 3), bias=torch.ones(4), padding=1) | changes
    if ops.unavailable_reason(backend, "cpu"):
        pytest.skip(ops.unavailable_reason(backend, "cpu"))
    with pytest.raises(error, match=message):
        ops.conv2d_bias_leaky_relu(**args, backend=backend)


# ------------------------------------------- the Triton implicit-GEMM convolution itself

@pytest.mark.parametrize("device, backend", TRITON)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", PARAMS, ids=str)
@pytest.mark.parametrize("geometry, dilation", [((3, 5, 9, 8, 3, 1, 1, "reflect"), 1),
                                                ((17, 33, 7, 6, 3, 2, 2, "zeros"), 2),
                                                ((5, 3, 6, 7, 4, 2, 1, "reflect"), 1)], ids=str)
def test_triton_convolution_every_dtype(device, backend, dtype, params, geometry, dilation):
    """Partial tiles (C_in 17 > BLOCK_K, C_out 33 > BLOCK_N), dilation, reflection by index."""
    stride, padding, padding_mode = geometry[5:]
    x, weight, bias = inputs(geometry, dtype, device, "channels_last")
    y = ops.conv2d_bias_leaky_relu(x, weight, bias, stride, padding, padding_mode, dilation, *params, backend=backend)
    y64 = ops.conv2d_bias_leaky_relu_reference(x.double(), weight.double(), bias.double(), stride, padding,
                                               padding_mode, dilation, *params)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close_to_conv(y, y64, dtype, "triton convolution")
    if dtype in HALVES and params[2] is not None:
        return  # a half y rounded across the clamp flips its gradient mask: the float32 run checks it
    # The backward's implicit GEMMs (activation derivative applied on load, bias reduced in the
    # weight kernel) against autograd through the float64 reference.
    leaves = [t.requires_grad_() for t in (x, weight, bias)]
    y = ops.conv2d_bias_leaky_relu(*leaves, stride, padding, padding_mode, dilation, *params, backend=backend)
    leaves64 = [t.detach().double().requires_grad_() for t in leaves]
    y64 = ops.conv2d_bias_leaky_relu_reference(*leaves64, stride, padding, padding_mode, dilation, *params)
    grad = torch.randn_like(y64)
    got = torch.autograd.grad(y, leaves, grad.to(dtype))
    want = torch.autograd.grad(y64, leaves64, grad)
    for name, g, w in zip(("x", "weight", "bias"), got, want):
        assert g.dtype == dtype and g.shape == w.shape, name
        assert_close_to_conv(g, w, dtype, f"triton grad {name}")


@pytest.mark.parametrize("device, backend", TRITON)
def test_triton_convolution_opcheck_and_double_backward(device, backend):
    x, weight, bias = inputs((2, 3, 5, 6, 3), torch.float64, device, requires_grad=True)
    op = torch.ops.culturegan.conv2d_bias_leaky_relu_triton
    torch.library.opcheck(op, (x.float(), weight.float(), bias.float(), [1, 1], [1, 1], True, [1, 1], 0.2, 1.0, None))
    fn = lambda *a: ops.conv2d_bias_leaky_relu(*a, 2, 1, "reflect", backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x, weight, bias), device, backend)


@pytest.mark.parametrize("device, backend", TRITON)
@pytest.mark.parametrize("reflect", [False, True])
def test_triton_backward_opcheck(device, backend, reflect):
    """The backward's implicit GEMMs (dx; dweight with the bias gradient), as the op autograd calls."""
    x, weight, bias = inputs((3, 5, 6, 7, 3), torch.float32, device, "channels_last")
    y = ops.conv2d_bias_leaky_relu(x, weight, bias, 2, 1, "reflect" if reflect else "zeros", backend=backend)
    grad = torch.randn_like(y)
    op = torch.ops.culturegan.conv2d_bias_leaky_relu_backward_triton
    for needs in ([True, True, True], [False, True, False], [True, False, False]):
        torch.library.opcheck(op, (grad, y, x, weight, [2, 2], [1, 1], reflect, [1, 1], 0.2, 1.0, None, needs))
