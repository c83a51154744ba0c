"""instance_norm_act, conv2d_instance_norm_act and conv_transpose2d_instance_norm_act: every
backend against the pure-torch reference, and against torch's own layers."""

import math

import pytest
import torch
import torch.nn.functional as F

from culturegan import ops
from culturegan.ops._conv import convolve
from helpers import DTYPES, TOLERANCES, backend_params, interpreted, make_layout

BACKENDS = backend_params()
# (C_in, C_out, H, W, kernel, stride, padding, padding_mode): CycleGAN's stem (k7 reflect 3),
# downsampling (k3 s2 p1), residual (k3 reflect 1), and odd and 1x1 sizes.
GEOMETRIES = [
    (3, 4, 11, 9, 7, 1, 3, "reflect"),
    (3, 5, 9, 8, 3, 2, 1, "zeros"),
    (4, 4, 8, 8, 3, 1, 1, "reflect"),
    (2, 3, 5, 7, 1, 1, 0, "zeros"),
    (2, 1, 4, 3, 3, 1, 0, "zeros"),
]
NORMS = ["plain", "affine", "adain"]
ACTIVATIONS = [("relu", 0.2), ("leaky_relu", 0.2), ("none", 0.2)]


def inputs(geometry, dtype, device, norm, layout="contiguous", transposed=False):
    c_in, c_out, h, w, k = geometry[:5]
    x = make_layout(torch.randn(2, c_in, h, w, device=device).to(dtype), layout)
    shape = (c_in, c_out, k, k) if transposed else (c_out, c_in, k, k)
    weight = (torch.randn(shape, device=device) / math.sqrt(c_in * k * k)).to(dtype)
    bias = torch.randn(c_out, device=device).to(dtype)
    norm_args = {}
    if norm == "affine":
        norm_args = dict(norm_weight=(1 + 0.3 * torch.randn(c_out, device=device)).to(dtype),
                         norm_bias=torch.randn(c_out, device=device).to(dtype))
    elif norm == "adain":
        style = torch.promote_types(dtype, torch.float32)  # style codes come from float32 (or float64) nets
        norm_args = dict(style_scale=(1 + 0.3 * torch.randn(2, c_out, device=device)).to(style),
                         style_shift=torch.randn(2, c_out, device=device).to(style))
    return x, weight, bias, norm_args


def leaves(x, weight, bias, norm_args, dtype=None):
    """The differentiable inputs, as fresh leaves (in `dtype` if given)."""
    tensors = {"x": x, "weight": weight, "bias": bias, **norm_args}
    return {k: (v.detach().to(dtype) if dtype else v.detach()).requires_grad_() for k, v in tensors.items()}


def tolerance(dtype, conv64=None):
    """Normalised outputs are O(1); the conv's output is rounded (in x's dtype) before the
    normalisation, which amplifies that rounding by max|z| / std per plane (large for planes of
    2 elements: a float32 run exceeded a fixed 10x by 18%, a plane of std 0.05 at |z| 2.2)."""
    atol, rtol = TOLERANCES[dtype]
    factor = 4.0 if dtype in (torch.float16, torch.bfloat16) else 10.0
    if conv64 is not None:
        planes = conv64.flatten(2)
        factor = max(factor, (planes.abs().amax(2) / planes.std(2, correction=0)).max().item())
    return atol * factor, rtol * factor


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_block_matches_reference(device, backend, dtype, geometry, norm, activation, layout):
    if interpreted(device, backend) and (dtype != torch.float32 or layout != "contiguous"):
        pytest.skip("the Triton interpreter gets float32 and one layout only (slow)")
    if backend == "reference" and dtype in (torch.float16, torch.bfloat16):
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
    if dtype in (torch.float16, torch.bfloat16):
        return
    grad = torch.randn_like(y64)
    names = list(inputs_)
    got = torch.autograd.grad(y, [inputs_[k] for k in names], grad.to(dtype))
    want = torch.autograd.grad(y64, [ref[k] for k in names], grad)
    for name, g, w in zip(names, got, want):
        if name == "bias" and backend == "reference":
            continue  # torch's autograd finds the zero as a rounding residue of N*H*W terms
        scale = 1 + w.abs().max().item()
        torch.testing.assert_close(g.double(), w, atol=atol * scale, rtol=rtol,
                                   msg=lambda m: f"{backend} grad {name}: {m}")


@pytest.mark.parametrize("device, backend", [p for p in BACKENDS if not interpreted(*p.values)])
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


@pytest.mark.parametrize("device, backend", [p for p in BACKENDS if p.values[1] != "triton"])
def test_conv_bias_gets_a_zero_gradient(device, backend):
    """The bias is cancelled by the normalisation: zero gradient, as autograd finds for torch's layers."""
    x, weight, bias, _ = inputs((3, 4, 6, 6, 3, 1, 1, "zeros"), torch.float64, device, "plain")
    bias.requires_grad_()
    y = ops.conv2d_instance_norm_act(x, weight, bias, 1, 1, backend=backend)
    (grad,) = torch.autograd.grad(y.square().sum(), bias)
    torch.testing.assert_close(grad, torch.zeros_like(bias), atol=1e-10, rtol=0)


@pytest.mark.parametrize("device, backend", [p for p in BACKENDS if p.values[1] != "triton"])
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
@pytest.mark.parametrize("description, changes, error, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_clear_error(backend, description, changes, error, message):
    if ops.unavailable_reason(backend, "cpu"):
        pytest.skip(ops.unavailable_reason(backend, "cpu"))
    args = dict(x=torch.ones(1, 3, 8, 8), weight=torch.ones(4, 3, 3, 3), padding=1) | changes
    with pytest.raises(error, match=message):
        ops.conv2d_instance_norm_act(**args, backend=backend)


# ------------------------------------------ instance_norm_act alone: the fused backward kernel

NORM_CASES = [((2, 3, 5, 7), "contiguous"), ((2, 5, 4, 3), "channels_last"), ((2, 4, 9), "contiguous"),
              ((3, 2, 3, 5), "strided"), ((1, 3, 70, 90), "contiguous"), ((2, 70, 40, 30), "channels_last")]


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", NORM_CASES, ids=str)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_instance_norm_act_backward_matches_reference(device, backend, dtype, shape, layout, norm, activation):
    """Several of the CPU kernel's sum blocks per plane, every layout: dx and the parameters' grads."""
    if interpreted(device, backend) and (dtype != torch.float32 or math.prod(shape) > 1000):
        pytest.skip("the Triton interpreter gets small float32 inputs only (slow)")
    c = shape[1]
    x = make_layout((3 + 2 * torch.randn(shape, device=device)).to(dtype), layout).requires_grad_()
    norm_args = {}
    if norm == "affine":
        norm_args = dict(weight=(1 + 0.3 * torch.randn(c, device=device)).to(dtype),
                         bias=torch.randn(c, device=device).to(dtype))
    elif norm == "adain":
        style = torch.promote_types(dtype, torch.float32)
        norm_args = dict(style_scale=(1 + 0.3 * torch.randn(shape[0], c, device=device)).to(style),
                         style_shift=torch.randn(shape[0], c, device=device).to(style))
    norm_args = {k: v.requires_grad_() for k, v in norm_args.items()}
    y = ops.instance_norm_act(x, **norm_args, activation=activation[0], negative_slope=activation[1], backend=backend)
    grad = torch.randn(shape, device=device)
    got = torch.autograd.grad(y, [x, *norm_args.values()], grad.to(dtype))
    x64 = x.detach().double().requires_grad_()
    ref = {k: v.detach().double().requires_grad_() for k, v in norm_args.items()}
    y64 = ops.instance_norm_act_reference(x64, **ref, activation=activation[0], negative_slope=activation[1])
    want = torch.autograd.grad(y64, [x64, *ref.values()], grad.double())
    if backend == "reference" and dtype in (torch.float16, torch.bfloat16):
        return  # torch's own half arithmetic (see test_conv2d_block_matches_reference)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(y.double(), y64, atol=atol * 4, rtol=rtol * 4)
    # Where the pre-activation is within rounding of 0 (the statistics are rounded to the half
    # type), the activation's derivative may flip: dx is compared elsewhere.
    pre64 = ops.instance_norm_act_reference(x64.detach(), **{k: v.detach() for k, v in ref.items()}, activation="none")
    away_from_kink = pre64.abs() > (0.02 if dtype in (torch.float16, torch.bfloat16) else 1e-6)
    # A flip also moves the plane's sums, so every dx of that plane: compare clean planes only.
    clean_planes = away_from_kink.flatten(2).all(2).view(shape[:2] + (1,) * (len(shape) - 2))
    got = (got[0].double() * clean_planes, *got[1:])
    want = (want[0] * clean_planes, *want[1:])
    # A parameter's gradient sums the plane's g': each flipped derivative moves it by up to |grad|.
    flips = (~away_from_kink).sum().item() * grad.abs().max().item()
    for name, g, w in zip(["x", *norm_args], got, want):
        count = math.prod(shape[2:]) * (shape[0] if w.dim() == 1 else 1)  # terms summed into a parameter's grad
        scale = 1 + w.abs().max().item() + (atol * count + flips / (4 * atol) if name != "x" else 0)
        torch.testing.assert_close(g.double(), w, atol=atol * 4 * scale, rtol=rtol * 4,
                                   msg=lambda m: f"{backend} grad {name}: {m}")


@pytest.mark.parametrize("device, backend", [p for p in BACKENDS if p.values[1] != "reference"])
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_instance_norm_act_gradgradcheck(device, backend, activation):
    """The double backward (gradient penalties) differentiates the composition of the forward ops."""
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)

    def fn(x, weight):
        return ops.instance_norm_act(x, weight, activation=activation[0], backend=backend)

    fast = interpreted(device, backend)  # the interpreter is slow: random projections
    assert torch.autograd.gradcheck(fn, (x, weight), fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, (x, weight), fast_mode=fast)


@pytest.mark.parametrize("device, backend", [p for p in BACKENDS if p.values[1] != "reference"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_norm_act_backward_opcheck(device, backend, layout):
    op = (torch.ops.culturegan.norm_act_backward_triton if backend == "triton"
          else torch.ops.culturegan.norm_act_backward)
    z = make_layout(torch.randn(2, 3, 4, 5, device=device), layout)
    grad = torch.randn_like(z)
    mean, std = z.mean((2, 3)), z.std((2, 3))
    gamma, beta = torch.randn(2, 3, device=device), torch.randn(2, 3, device=device)
    torch.library.opcheck(op, (grad, z, mean, std, gamma, beta, 0.2))
    torch.library.opcheck(op, (grad, z, mean, std, gamma, beta, None))


# ---------------------------- triton: the statistics kept by the implicit-GEMM convolution

TRITON = [p for p in BACKENDS if p.values[1] == "triton"]


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

    fast = interpreted(device, backend)
    assert torch.autograd.gradcheck(fn, leaves, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, leaves, fast_mode=fast)


@pytest.mark.parametrize("device, backend", TRITON)
def test_direct_calls_of_the_triton_ops_check_their_arguments(device, backend):
    z = torch.randn(2, 3, 4, 5)
    good = (torch.randn_like(z), z, *(torch.ones(2, 3) for _ in range(4)), 0.2)
    op = torch.ops.culturegan.norm_act_backward_triton
    with pytest.raises(ValueError, match="grad has shape"):
        op(torch.randn(2, 3, 4, 4), *good[1:])
    with pytest.raises(ValueError, match=r"gamma must be \(2, 3\)"):
        op(*good[:4], torch.ones(3), *good[5:])
    with pytest.raises(ValueError, match="takes 2 input channels, but x has 3"):
        torch.ops.culturegan.conv2d_instance_norm_act_triton(z, torch.ones(4, 2, 3, 3), torch.ones(2, 4),
                                                             torch.zeros(2, 4), [1, 1], [1, 1], False, [1, 1], 0.2,
                                                             1e-5)
