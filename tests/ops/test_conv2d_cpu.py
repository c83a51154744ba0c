"""culturegan::conv2d_cpu, the cpu backend's convolution, and its weight gradient by GEMM
(ops/_conv.py): against ATen's convolution backward and F.conv2d, on every geometry, layout
and block split, and inside the fused blocks that use it."""

import math

import pytest
import torch
import torch.nn.functional as F

from culturegan import ops
from culturegan.ops import _conv
from helpers import TOLERANCES, make_layout

# (N, C_in, H, W, C_out, kernel, stride, padding, dilation): CycleGAN's residual (k3 on a padded
# copy), downsampling (k3 s2 p1) and stem (k7), PatchGAN's k4 s2 p1, dilation, odd sizes, 1x1
# images and kernels, and a kernel as large as its padded input.
GEOMETRIES = [
    (2, 6, 8, 8, 64, 3, 1, 0, 1),
    (3, 5, 9, 7, 64, 3, 2, 1, 1),
    (1, 3, 13, 11, 64, 7, 1, 3, 1),
    (2, 4, 9, 10, 65, 4, 2, 1, 1),
    (2, 3, 11, 9, 64, 3, 1, 2, 2),
    (1, 2, 1, 1, 64, 1, 1, 0, 1),
    (2, 3, 1, 1, 64, 3, 1, 1, 1),
    (1, 2, 5, 3, 64, (2, 3), (1, 2), (0, 1), (2, 1)),
]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def geometry_args(geometry):
    n, c_in, h, w, c_out, kernel, stride, padding, dilation = geometry
    kernel, stride, padding, dilation = (_conv.pair(v, "", 0) for v in (kernel, stride, padding, dilation))
    return (n, c_in, h, w, c_out, kernel), (list(stride), list(padding), list(dilation))


def make_inputs(geometry, dtype, layout="contiguous"):
    (n, c_in, h, w, c_out, kernel), conv_args = geometry_args(geometry)
    x = make_layout(torch.randn(n, c_in, h, w, dtype=dtype), layout)
    weight = torch.randn(c_out, c_in, *kernel, dtype=dtype) / math.sqrt(c_in * math.prod(kernel))
    return x, weight, conv_args


def aten_weight_grad(grad_output, x, weight, stride, padding, dilation):
    return torch.ops.aten.convolution_backward(grad_output, x, weight, None, stride, padding, dilation, False, [0, 0],
                                               1, [False, True, False])[1]


def assert_grads_close(actual, expected, dtype, terms):
    """A weight gradient sums `terms` products: its rounding grows with their count."""
    atol, rtol = TOLERANCES[dtype]
    scale = math.sqrt(terms) * max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol * scale, rtol=rtol * math.sqrt(terms))


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("block_bytes", [None, 1, 8000], ids=["one-block", "row-blocks", "image-blocks"])
def test_gemm_weight_grad_matches_aten(geometry, layout, dtype, block_bytes, monkeypatch):
    if block_bytes is not None:  # 1: one output row per block; 8000: whole images, one or a few per block
        monkeypatch.setattr(_conv, "WINDOW_BLOCK_BYTES", block_bytes)
    x, weight, (stride, padding, dilation) = make_inputs(geometry, dtype, layout)
    grad_output = make_layout(torch.randn_like(F.conv2d(x, weight, None, stride, padding, dilation)), layout)
    got = _conv.gemm_weight_grad(grad_output, x, tuple(weight.shape[2:]), stride, padding, dilation)
    expected = aten_weight_grad(grad_output.double(), x.double(), weight.double(), stride, padding, dilation)
    assert got.shape == weight.shape and got.dtype == dtype
    assert_grads_close(got, expected, dtype, grad_output[:, 0].numel())


def test_row_blocks_cover_every_output_row_once():
    for images, rows, block in [(3, 5, 1), (3, 5, 2), (3, 5, 5), (3, 5, 11), (1, 1, 1), (4, 3, 100)]:
        covered = torch.zeros(images, rows, dtype=torch.int64)
        for index in _conv._row_blocks(images, rows, block):
            assert covered[index].numel() <= block
            covered[index] += 1
        assert covered.eq(1).all(), (images, rows, block)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)], ids=str)
def test_conv2d_cpu_matches_conv2d(geometry, layout, needs):
    x, weight, conv_args = make_inputs(geometry, torch.float64, layout)
    x.requires_grad_(needs[0])
    weight.requires_grad_(needs[1])
    got = _conv.conv2d_cpu(x, weight, *conv_args)
    expected = F.conv2d(x, weight, None, *conv_args)
    assert got.stride() == expected.stride()
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)
    wanted = [t for t in (x, weight) if t.requires_grad]
    grad_output = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(got, wanted, grad_output), torch.autograd.grad(expected, wanted, grad_output)):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-11)


@pytest.mark.parametrize("out_channels", [3, 64], ids=["onednn-weight-grad", "gemm-weight-grad"])
def test_conv2d_cpu_gradcheck_and_gradgradcheck(out_channels):
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(out_channels, 3, 3, 3, dtype=torch.float64, requires_grad=True)

    def conv(x, weight):
        return _conv.conv2d_cpu(x, weight, [2, 1], [1, 1], [1, 1])

    assert torch.autograd.gradcheck(conv, (x, weight))
    assert torch.autograd.gradgradcheck(conv, (x, weight))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_conv2d_cpu_opcheck(layout):
    x, weight, conv_args = make_inputs(GEOMETRIES[1], torch.float32, layout)
    torch.library.opcheck(_conv.conv2d_cpu, (x.requires_grad_(), weight.requires_grad_(), *conv_args))


def test_weight_grad_keeps_the_weights_layout():
    x, weight, conv_args = make_inputs(GEOMETRIES[0], torch.float32, "channels_last")
    for w in (weight, weight.contiguous(memory_format=torch.channels_last)):
        w = w.detach().requires_grad_()
        _conv.conv2d_cpu(x, w, *conv_args).sum().backward()
        assert w.grad.stride() == w.stride()


def test_gemm_only_where_it_pays():
    grad = torch.ones(1, 64, 2, 2)
    assert _conv.gemm_weight_grad_pays(grad, torch.ones(64, 3, 3, 3))
    assert not _conv.gemm_weight_grad_pays(grad[:, :3], torch.ones(3, 64, 3, 3))  # too few outputs
    assert not _conv.gemm_weight_grad_pays(grad.bfloat16(), torch.ones(64, 3, 3, 3))  # oneDNN's bf16 kernels
    assert not _conv.gemm_weight_grad_pays(grad[:0], torch.ones(64, 3, 3, 3))  # an empty batch


# ---------------------------------------------- inside the fused blocks (cpu backend vs reference)

BLOCKS = [
    ("conv2d_instance_norm_act", dict(padding=1, padding_mode="reflect", activation="relu")),
    ("conv2d_instance_norm_act", dict(stride=2, padding=1)),
    ("conv2d_bias_leaky_relu", dict(stride=2, padding=1)),
    ("conv2d_bias_leaky_relu", dict(padding=1, padding_mode="reflect")),
]


@pytest.mark.parametrize("name, kwargs", BLOCKS, ids=lambda v: str(v) if isinstance(v, dict) else v)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cpu_blocks_take_the_gemm_weight_grad(name, kwargs, layout, monkeypatch):
    if ops.unavailable_reason("cpu", "cpu"):
        pytest.skip(ops.unavailable_reason("cpu", "cpu"))
    calls = []
    gemm = _conv.gemm_weight_grad
    monkeypatch.setattr(_conv, "gemm_weight_grad", lambda *args: calls.append(1) or gemm(*args))
    x, weight, _ = make_inputs((2, 5, 9, 8, 64, 3, 1, 0, 1), torch.float64, layout)
    bias = torch.randn(64, dtype=torch.float64)
    tensors = [t.requires_grad_() for t in (x, weight, bias)]
    op = getattr(ops, name)
    grad_output = None
    grads = {}
    for backend in ("cpu", "reference"):
        y = op(*tensors, **kwargs, backend=backend)
        grad_output = torch.randn_like(y) if grad_output is None else grad_output
        grads[backend] = torch.autograd.grad(y, tensors, grad_output)
    assert calls, "the cpu backend's weight gradient did not go through the GEMM"
    for got, expected in zip(grads["cpu"], grads["reference"]):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_torch_compile_fullgraph_with_backward():
    x, weight, conv_args = make_inputs(GEOMETRIES[3], torch.float32, "channels_last")
    tensors = [x.requires_grad_(), weight.requires_grad_()]

    def loss(x, weight):
        return _conv.conv2d_cpu(x, weight, *conv_args).square().sum()

    got = torch.autograd.grad(torch.compile(loss, fullgraph=True)(*tensors), tensors)
    expected = torch.autograd.grad(loss(*tensors), tensors)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
