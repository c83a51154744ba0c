"""bias_leaky_relu: every backend against the pure-torch reference."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from helpers import (BACKENDS, BASE_CASES, CPU_BACKENDS, DTYPES, FAST_BACKENDS, HALVES, LAYOUTS, assert_close,
                     assert_compiles_like_eager, assert_gradcheck_and_gradgradcheck, bad_input_params, make_layout,
                     native_op, poison_allocator, skip_unless_registered, three_runs)

CASES = BASE_CASES + [((4, 6), "contiguous")]  # and a 2-D input
# (negative_slope, gain, clamp): nn.LeakyReLU, StyleGAN2 lrelu with conv_clamp, ReLU.
PARAMS = [(0.2, 1.0, None), (0.2, math.sqrt(2), 1.5), (0.0, 2.0, None)]


def inputs(shape, layout, dtype, device, with_bias=True, requires_grad=False):
    # Scaled so that values cross zero and the clamp; made in float32, then cast.
    x = make_layout((3 * torch.randn(shape, device=device)).to(dtype), layout).requires_grad_(requires_grad)
    bias = torch.randn(shape[1], device=device).to(dtype).requires_grad_(requires_grad) if with_bias else None
    return x, bias


def reference64(x, bias, *params):
    """The reference evaluated in float64 on the same (rounded) inputs."""
    return ops.bias_leaky_relu_reference(x.double(), None if bias is None else bias.double(), *params)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("params", PARAMS, ids=str)
def test_forward_matches_reference(device, backend, dtype, shape, layout, params):
    x, bias = inputs(shape, layout, dtype, device)
    poison_allocator(device, x.numel(), dtype)
    y = ops.bias_leaky_relu(x, bias, *params, backend=backend)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert_close(y, reference64(x, bias, *params), dtype, f"{backend} forward")
    if layout != "strided":  # dense inputs keep their layout
        assert y.stride() == x.stride()


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
def test_gradients_match_reference(device, backend, dtype, shape, layout):
    # A clamp the outputs never reach: near a reachable one, rounding y to a half type can move
    # an element across it (its gradient is then legitimately 0 here and not in float64).
    params = (0.2, math.sqrt(2), 100.0)
    x, bias = inputs(shape, layout, dtype, device, requires_grad=True)
    grad = torch.randn(shape, device=device).to(dtype)
    poison_allocator(device, x.numel(), dtype)
    grad_x, grad_bias = torch.autograd.grad(ops.bias_leaky_relu(x, bias, *params, backend=backend), (x, bias), grad)

    x64, bias64 = x.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    ref_x, ref_bias = torch.autograd.grad(ops.bias_leaky_relu_reference(x64, bias64, *params), (x64, bias64),
                                          grad.double())
    assert_close(grad_x, ref_x, dtype, f"{backend} grad x")
    # The bias gradient sums N*H*W terms: allow the rounding of the sum's magnitude.
    scale = max(1.0, math.sqrt(x.numel() / shape[1]))
    torch.testing.assert_close(grad_bias.double(), ref_bias, atol=scale * (5e-2 if dtype in HALVES else 1e-5),
                               rtol=2e-2 if dtype in HALVES else 1e-5)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("params", PARAMS, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck_and_gradgradcheck_float64(device, backend, params, layout):
    x, bias = inputs((2, 3, 2, 3), layout, torch.float64, device, requires_grad=True)
    fn = lambda x, bias: ops.bias_leaky_relu(x, bias, *params, backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x, bias), device, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_without_bias_and_without_input_grad(device, backend):
    x, _ = inputs((2, 3, 4, 4), "contiguous", torch.float32, device, with_bias=False, requires_grad=True)
    y = ops.bias_leaky_relu(x, backend=backend)
    assert_close(y, reference64(x.detach(), None), torch.float32)
    (grad_x,) = torch.autograd.grad(y.sum(), x)  # expanded (stride-0) incoming gradient
    assert_close(grad_x, torch.where(y > 0, 1.0, 0.2), torch.float32)

    x, bias = inputs((2, 3, 4, 4), "contiguous", torch.float32, device)
    bias.requires_grad_()
    (grad_bias,) = torch.autograd.grad(ops.bias_leaky_relu(x, bias, backend=backend).sum(), bias)
    ref = torch.where(reference64(x, bias.detach()) > 0, 1.0, 0.2).sum((0, 2, 3))
    assert_close(grad_bias, ref, torch.float32)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
def test_backward_saves_only_the_output(device, backend):
    x, bias = inputs((2, 3, 4, 4), "contiguous", torch.float32, device, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ops.bias_leaky_relu(x, bias, backend=backend)
    assert len(saved) == 1 and saved[0].data_ptr() == y.data_ptr()


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_clamped_elements_get_zero_gradient(device, backend):
    x, bias = inputs((2, 4, 5, 5), "contiguous", torch.float32, device, requires_grad=True)
    y = ops.bias_leaky_relu(x, bias, 0.2, 1.0, 0.5, backend=backend)
    grad_x, grad_bias = torch.autograd.grad(y.sum(), (x, bias))
    clamped = y.detach().abs() >= 0.5
    assert clamped.any() and (~clamped).any()
    assert (grad_x[clamped] == 0).all() and (grad_x[~clamped] != 0).all()


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bias_gradient_is_deterministic(device, backend, layout):
    x, bias = inputs((3, 5, 17, 19), layout, torch.float32, device, requires_grad=True)
    grad = torch.randn_like(x)

    def bias_grad():
        return torch.autograd.grad(ops.bias_leaky_relu(x, bias, backend=backend), bias, grad)[0]

    first, again, single = three_runs(bias_grad)
    assert torch.equal(first, again) and torch.equal(first, single)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, backend, layout):
    forward, backward = native_op("bias_leaky_relu", backend), native_op("bias_leaky_relu_backward", backend)
    x, bias = inputs((2, 3, 4, 5), layout, torch.float32, device, requires_grad=True)
    torch.library.opcheck(forward, (x, bias, 0.2, math.sqrt(2), 1.5))
    torch.library.opcheck(forward, (x, None, 0.2, 1.0, None))
    y = forward(x.detach(), bias.detach(), 0.2, 1.0, None).requires_grad_()
    torch.library.opcheck(backward, (torch.randn_like(x).requires_grad_(), y, 0.2, 1.0, None, True))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    def generator_block(x, bias):
        return ops.bias_leaky_relu(x * 2.0, bias, 0.2, math.sqrt(2), None, backend=backend).mean()

    x, bias = inputs((2, 3, 4, 4), "contiguous", torch.float32, device, requires_grad=True)
    assert_compiles_like_eager(generator_block, (x, bias))


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=4), layout=st.sampled_from(LAYOUTS),
       with_bias=st.booleans(),
       clamp=st.one_of(st.none(), st.floats(0.0, 4.0)), slope=st.floats(0.0, 1.0), gain=st.floats(0.1, 3.0))
def test_random_shapes_and_strides(device, backend, shape, layout, with_bias, clamp, slope, gain):
    x, bias = inputs(tuple(shape), layout, torch.float32, device, with_bias, requires_grad=True)
    y = ops.bias_leaky_relu(x, bias, slope, gain, clamp, backend=backend)
    assert_close(y, reference64(x.detach(), None if bias is None else bias.detach(), slope, gain, clamp),
                 torch.float32, f"shape {shape} layout {layout}")
    grad = torch.randn_like(y)
    grad_x = torch.autograd.grad(y, x, grad)[0]
    x64 = x.detach().double().requires_grad_()
    y_ref = ops.bias_leaky_relu_reference(x64, None if bias is None else bias.detach().double(), slope, gain, clamp)
    unclamped = y_ref.detach().abs() < (math.inf if clamp is None else clamp * (1 - 1e-6))
    ref_grad = torch.autograd.grad(y_ref, x64, grad.double())[0]
    assert_close(grad_x[unclamped], ref_grad[unclamped], torch.float32, "grad x")


# ------------------------------------------------------------------------------ bad input

BAD_INPUTS = [
    # (description, kwargs maker, exception, message fragment)
    ("integer x", lambda: dict(x=torch.ones(2, 3, 4, 4, dtype=torch.int32)), TypeError, "x must be a floating"),
    ("rank 1", lambda: dict(x=torch.ones(3)), ValueError, "x must have 2 to 4 dimensions"),
    ("rank 5", lambda: dict(x=torch.ones(1, 2, 2, 2, 2)), ValueError, "x must have 2 to 4 dimensions"),
    ("empty", lambda: dict(x=torch.ones(0, 3, 4, 4)), ValueError, "x is empty"),
    ("bias length", lambda: dict(x=torch.ones(2, 3, 4, 4), bias=torch.ones(4)), ValueError,
     r"bias must have shape \(3,\)"),
    ("bias rank", lambda: dict(x=torch.ones(2, 3, 4, 4), bias=torch.ones(1, 3)), ValueError, "bias must have shape"),
    ("bias dtype", lambda: dict(x=torch.ones(2, 3, 4, 4), bias=torch.ones(3, dtype=torch.float64)), TypeError,
     "bias has dtype torch.float64 but x has dtype torch.float32"),
    ("bias device", lambda: dict(x=torch.ones(2, 3, 4, 4), bias=torch.ones(3, device="meta")), ValueError,
     "bias is on meta but x is on cpu"),
    ("x not a tensor", lambda: dict(x=[[1.0, 2.0]]), TypeError, "x must be a torch.Tensor"),
    ("negative gain", lambda: dict(x=torch.ones(2, 3), gain=-1.0), ValueError, "gain must be > 0"),
    ("negative slope", lambda: dict(x=torch.ones(2, 3), negative_slope=-0.1), ValueError,
     "negative_slope must be >= 0"),
    ("negative clamp", lambda: dict(x=torch.ones(2, 3), clamp=-1.0), ValueError, "clamp must be >= 0"),
    ("nan gain", lambda: dict(x=torch.ones(2, 3), gain=float("nan")), TypeError, "gain must be a finite number"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.bias_leaky_relu(**make(), backend=backend)


@pytest.mark.parametrize("make, error, message",
                         bad_input_params(b for b in BAD_INPUTS if b[0] not in ("x not a tensor", "nan gain")))
def test_native_op_checks_its_arguments(make, error, message):
    """Users may call torch.ops.culturegan.* directly: the C++ checks (TORCH_CHECK) name the
    argument as clearly, with the same exception types."""
    skip_unless_registered("bias_leaky_relu")
    kwargs = dict(bias=None, negative_slope=0.2, gain=1.0, clamp=None) | make()
    if kwargs["bias"] is not None and kwargs["bias"].device.type == "meta":
        pytest.skip("the dispatcher routes mixed cpu/meta inputs to the meta kernel")
    with pytest.raises(error, match=message):
        torch.ops.culturegan.bias_leaky_relu(kwargs["x"], kwargs["bias"], kwargs["negative_slope"], kwargs["gain"],
                                             kwargs["clamp"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensors_on_different_devices_raise():
    with pytest.raises(ValueError, match="bias is on cpu but x is on cuda"):
        ops.bias_leaky_relu(torch.ones(2, 3, device="cuda"), torch.ones(3))
