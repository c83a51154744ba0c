"""conv2d_instance_norm_act and conv_transpose2d_instance_norm_act: every backend against the
pure-torch reference, and against torch's own layers (instance_norm_act alone:
test_instance_norm_act.py)."""

import pytest
import torch
import torch.nn.functional as F

from culturegan import ops
from culturegan.ops._conv import convolve
from helpers import (ACTIVATIONS, BACKENDS, DTYPES, HALVES, NORMS, NOT_INTERPRETED, NOT_TRITON, TOLERANCES, TRITON,
                     assert_gradcheck_and_gradgradcheck, bad_input_params, conv_inputs, interpreted, norm_arguments)

# (C_in, C_out, H, W, kernel, stride, padding, padding_mode): CycleGAN's stem (k7 reflect 3),
# downsampling (k3 s2 p1), residual (k3 reflect 1), and odd and 1x1 sizes.
GEOMETRIES = [
    (3, 4, 11, 9, 7, 1, 3, "reflect"),
    (3, 5, 9, 8, 3, 2, 1, "zeros"),
    (4, 4, 8, 8, 3, 1, 1, "reflect"),
    (2, 3, 5, 7, 1, 1, 0, "zeros"),
    (2, 1, 4, 3, 3, 1, 0, "zeros"),
]


def inputs(geometry, dtype, device, norm, layout="contiguous", transposed=False):
    """conv_inputs, and the normalisation's parameters."""
    x, weight, bias = conv_inputs(geometry, dtype, device, layout, transposed)
    return x, weight, bias, norm_arguments(norm, 2, geometry[1], dtype, device, ("norm_weight", "norm_bias"))


def leaves(x, weight, bias, norm_args, dtype=None):
    """The differentiable inputs, as fresh leaves (in `dtype` if given)."""
    tensors = {"x": x, "weight": weight, "bias": bias, **norm_args}
    return {k: (v.detach().to(dtype) if dtype else v.detach()).requires_grad_() for k, v in tensors.items()}


def tolerance(dtype, conv64=None):
    """Normalised outputs are O(1); the conv's output is rounded (in x's dtype) before the
    normalisation, which amplifies that rounding by max|z| / std per plane (large for planes of
    2 elements: a float32 run exceeded a fixed 10x by 18%, a plane of std 0.05 at |z| 2.2)."""
    atol, rtol = TOLERANCES[dtype]
    factor = 4.0 if dtype in HALVES else 10.0
    if conv64 is not None:
        planes = conv64.flatten(2)
        factor = max(factor, (planes.abs().amax(2) / planes.std(2, correction=0)).max().item())
    return atol * factor, rtol * factor


def backward_scale(conv64, grad, norm_args):
    """How large a gradient's rounding error behind the normalisation can be, in units of atol:
    the backward is (gamma / std)(g - mean(g) - z mean(g z)), each of whose terms is about
    gamma |g| / std however much they cancel. In a plane of 2 elements they cancel but for eps
    (z is +-1 whatever the two values), so the true gradient is small there and its rounding is
    not (the reference's float32 weight gradient of the 2 x 1 output erred by 5e-3 relative
    behind a plane of std 0.07: 4 failures in 54,000 random cases under the old bound). There
    the bound can exceed the gradient itself; the float64 run of the same geometry checks it."""
    std = (conv64.flatten(2).var(2, correction=0) + 1e-5).sqrt().min().item()
    gain = max([1.0] + [v.abs().max().item() for k, v in norm_args.items() if k in ("norm_weight", "style_scale")])
    return grad.abs().max().item() * gain / std


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_block_matches_reference(device, backend, dtype, geometry, norm, activation, layout):
    if interpreted(device, backend) and (dtype != torch.float32 or layout != "contiguous"):
        pytest.skip("the Triton interpreter gets float32 and one layout only (slow)")
    if backend == "reference" and dtype in HALVES:
        pytest.skip("the reference in a half type is torch's own half arithmetic (normalisation and AdaIN in "
                    "float16/bfloat16), not a culturegan kernel")
    stride, padding, padding_mode = geometry[5:]
    x, weight, bias, norm_args = inputs(geometry, dtype, device, norm, layout)
    inputs_ = leaves(x, weight, bias, norm_args)
    y = ops.conv2d_instance_norm_act(inputs_["x"], inputs_["weight"], inputs_["bias"], stride, padding, padding_mode,
                                     **{k: inputs_[k] for k in norm_args}, activation=activation[0],
                                     negative_slope=activation[1], backend=backend)
    ref = leaves(x, weight, bias, norm_args, torch.float64)
    y64 = ops.conv2d_instance_norm_act(ref["x"], ref["weight"], ref["bias"], stride, padding, padding_mode,
                                       **{k: ref[k] for k in norm_args}, activation=activation[0],
                                       negative_slope=activation[1], backend="reference")
    conv64 = convolve(ref["x"].detach(), ref["weight"].detach(), None, stride, padding, padding_mode, 1)
    atol, rtol = tolerance(dtype, conv64)
    assert y.shape == y64.shape and y.dtype == dtype
    torch.testing.assert_close(y.double(), y64, atol=atol, rtol=rtol, msg=lambda m: f"{backend} forward: {m}")
    if dtype in HALVES:
        return
    grad = torch.randn_like(y64)
    names = list(inputs_)
    got = torch.autograd.grad(y, [inputs_[k] for k in names], grad.to(dtype))
    want = torch.autograd.grad(y64, [ref[k] for k in names], grad)
    for name, g, w in zip(names, got, want):
        if name == "bias" and backend == "reference":
            continue  # torch's autograd finds the zero as a rounding residue of N*H*W terms
        scale = max(1 + w.abs().max().item(), backward_scale(conv64, grad, norm_args))
        torch.testing.assert_close(g.double(), w, atol=atol * scale, rtol=rtol,
                                   msg=lambda m: f"{backend} grad {name}: {m}")


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_transposed_block_matches_reference(device, backend, dtype, norm):
    x, weight, bias, norm_args = inputs((4, 3, 5, 6, 3), dtype, device, norm, transposed=True)
    y = ops.conv_transpose2d_instance_norm_act(x, weight, bias, **norm_args, backend=backend)
    ref = {k: v.double() for k, v in norm_args.items()}
    y64 = ops.conv_transpose2d_instance_norm_act(x.double(), weight.double(), bias.double(), **ref,
                                                 backend="reference")
    assert y.shape == (2, 3, 10, 12)  # CycleGAN's upsampling: 2H, 2W
    atol, rtol = tolerance(dtype)
    torch.testing.assert_close(y.double(), y64, atol=atol, rtol=rtol)


def test_reference_is_torch_layers():
    """InstanceNorm2d(affine) + LeakyReLU after a reflect-padded conv; ConvTranspose2d + IN + ReLU."""
    conv = torch.nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect", dtype=torch.float64)
    norm = torch.nn.InstanceNorm2d(6, affine=True, dtype=torch.float64)
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    expected = F.leaky_relu(norm(conv(x)), 0.2)
    got = ops.conv2d_instance_norm_act(x, conv.weight, conv.bias, 1, 1, "reflect", norm_weight=norm.weight,
                                       norm_bias=norm.bias, activation="leaky_relu")
    torch.testing.assert_close(got, expected)

    up = torch.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, dtype=torch.float64)
    expected = F.relu(F.instance_norm(up(x)))
    torch.testing.assert_close(ops.conv_transpose2d_instance_norm_act(x, up.weight, up.bias), expected)


@pytest.mark.parametrize("device, backend", NOT_TRITON)
def test_conv_bias_gets_a_zero_gradient(device, backend):
    """The bias is cancelled by the normalisation: zero gradient, as autograd finds for torch's layers."""
    x, weight, bias, _ = inputs((3, 4, 6, 6, 3, 1, 1, "zeros"), torch.float64, device, "plain")
    bias.requires_grad_()
    y = ops.conv2d_instance_norm_act(x, weight, bias, 1, 1, backend=backend)
    (grad,) = torch.autograd.grad(y.square().sum(), bias)
    torch.testing.assert_close(grad, torch.zeros_like(bias), atol=1e-10, rtol=0)


@pytest.mark.parametrize("device, backend", NOT_TRITON)
@pytest.mark.parametrize("norm", NORMS)
def test_gradcheck_float64(device, backend, norm):
    x, weight, bias, norm_args = inputs((2, 3, 5, 4, 3), torch.float64, device, norm)
    names = ["x", "weight", *norm_args]
    tensors = [t.requires_grad_() for t in (x, weight, *norm_args.values())]

    def fn(x, weight, *norm_values):
        return ops.conv2d_instance_norm_act(x, weight, None, 2, 1, "reflect", **dict(zip(names[2:], norm_values)),
                                            activation="leaky_relu", backend=backend)

    assert torch.autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    x, weight, bias, norm_args = inputs((3, 4, 6, 6, 3), torch.float32, device, "adain")
    x.requires_grad_()

    def block(x):
        return ops.conv2d_instance_norm_act(x, weight, bias, 1, 1, "reflect", **norm_args, backend=backend).sum()

    compiled = torch.compile(block, fullgraph=True)
    (got,) = torch.autograd.grad(compiled(x), x)
    (want,) = torch.autograd.grad(block(x), x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


BAD_INPUTS = [
    ("one of the style pair", dict(style_scale=torch.ones(1, 4)), ValueError, "both style_scale and style_shift"),
    ("style and affine", dict(style_scale=torch.ones(1, 4), style_shift=torch.ones(1, 4), norm_weight=torch.ones(4)),
     ValueError, "either the affine weight/bias"),
    ("style shape", dict(style_scale=torch.ones(4), style_shift=torch.ones(4)), ValueError,
     r"style_scale must have shape \(1, 4\)"),
    ("norm weight shape", dict(norm_weight=torch.ones(3)), ValueError, r"weight must have shape \(4,\)"),
    ("activation", dict(activation="gelu"), ValueError, "activation must be one of"),
    ("eps", dict(eps=-1.0), ValueError, "eps must be >= 0"),
    ("1x1 output", dict(x=torch.ones(1, 3, 3, 3), padding=0), ValueError, "more than 1 spatial element"),
]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("changes, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(backend, changes, error, message):
    if ops.unavailable_reason(backend, "cpu"):
        pytest.skip(ops.unavailable_reason(backend, "cpu"))
    args = dict(x=torch.ones(1, 3, 8, 8), weight=torch.ones(4, 3, 3, 3), padding=1) | changes
    with pytest.raises(error, match=message):
        ops.conv2d_instance_norm_act(**args, backend=backend)


# ---------------------------- triton: the statistics kept by the implicit-GEMM convolution

@pytest.mark.parametrize("device, backend", TRITON)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", [(3, 5, 9, 8, 3, 1, 1, "reflect"), (17, 33, 7, 10, 4, 2, 1, "zeros")], ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_triton_statistics_in_the_epilogue(device, backend, dtype, geometry, norm):
    """Pixels per sample not a multiple of the tile, channels beyond one tile, every dtype."""
    stride, padding, padding_mode = geometry[5:]
    x, weight, bias, norm_args = inputs(geometry, dtype, device, norm, "channels_last")
    y = ops.conv2d_instance_norm_act(x, weight, bias, stride, padding, padding_mode, **norm_args,
                                     activation="leaky_relu", backend=backend)
    y64 = ops.conv2d_instance_norm_act(x.double(), weight.double(), bias.double(), stride, padding, padding_mode,
                                       **{k: v.double() for k, v in norm_args.items()}, activation="leaky_relu",
                                       backend="reference")
    conv64 = convolve(x.double(), weight.double(), None, stride, padding, padding_mode, 1)
    atol, rtol = tolerance(dtype, conv64)
    torch.testing.assert_close(y.double(), y64, atol=atol, rtol=rtol)


@pytest.mark.parametrize("device, backend", TRITON)
def test_triton_block_opcheck_and_double_backward(device, backend):
    x, weight, _, norm_args = inputs((3, 4, 6, 5, 3), torch.float64, device, "adain")
    gamma, beta = norm_args["style_scale"], norm_args["style_shift"]
    op = torch.ops.culturegan.conv2d_instance_norm_act_triton
    torch.library.opcheck(op, (x.float(), weight.float(), gamma.float(), beta.float(), [1, 1], [1, 1], True, [1, 1],
                               0.2, 1e-5))
    leaves = [t.requires_grad_() for t in (x, weight, gamma, beta)]

    def fn(x, weight, gamma, beta):
        return ops.conv2d_instance_norm_act(x, weight, None, 1, 1, "reflect", style_scale=gamma, style_shift=beta,
                                            activation="leaky_relu", backend=backend)

    assert_gradcheck_and_gradgradcheck(fn, leaves, device, backend)


@pytest.mark.parametrize("device, backend", TRITON)
def test_direct_calls_of_the_triton_op_check_their_arguments(device, backend):
    z = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="takes 2 input channels, but x has 3"):
        torch.ops.culturegan.conv2d_instance_norm_act_triton(z, torch.ones(4, 2, 3, 3), torch.ones(2, 4),
                                                             torch.zeros(2, 4), [1, 1], [1, 1], False, [1, 1], 0.2,
                                                             1e-5)
