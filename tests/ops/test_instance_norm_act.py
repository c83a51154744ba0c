"""instance_norm_act: every backend against the pure-torch reference, and its fused backward
kernel (culturegan::instance_norm_act_backward, *_triton) as an op of its own."""

import math

import pytest
import torch

from culturegan import ops
from helpers import (ACTIVATIONS, BACKENDS, DTYPES, FAST_BACKENDS, HALVES, NORMS, TOLERANCES, TRITON,
                     assert_gradcheck_and_gradgradcheck, interpreted, make_layout, native_op, norm_arguments)

# shape, layout: several of the CPU kernel's sum blocks per plane, every layout, 3-D and 4-D.
CASES = [((2, 3, 5, 7), "contiguous"), ((2, 5, 4, 3), "channels_last"), ((2, 4, 9), "contiguous"),
         ((3, 2, 3, 5), "strided"), ((1, 3, 70, 90), "contiguous"), ((2, 70, 40, 30), "channels_last")]


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_backward_matches_reference(device, backend, dtype, shape, layout, norm, activation):
    """Several of the CPU kernel's sum blocks per plane, every layout: dx and the parameters' grads."""
    if interpreted(device, backend) and (dtype != torch.float32 or math.prod(shape) > 1000):
        pytest.skip("the Triton interpreter gets small float32 inputs only (slow)")
    x = make_layout((3 + 2 * torch.randn(shape, device=device)).to(dtype), layout).requires_grad_()
    norm_args = {k: v.requires_grad_() for k, v in norm_arguments(norm, shape[0], shape[1], dtype, device).items()}
    y = ops.instance_norm_act(x, **norm_args, activation=activation[0], negative_slope=activation[1], backend=backend)
    grad = torch.randn(shape, device=device)
    got = torch.autograd.grad(y, [x, *norm_args.values()], grad.to(dtype))
    x64 = x.detach().double().requires_grad_()
    ref = {k: v.detach().double().requires_grad_() for k, v in norm_args.items()}
    y64 = ops.instance_norm_act_reference(x64, **ref, activation=activation[0], negative_slope=activation[1])
    want = torch.autograd.grad(y64, [x64, *ref.values()], grad.double())
    if backend == "reference" and dtype in HALVES:
        return  # torch's own half arithmetic (normalisation and AdaIN in float16/bfloat16), not a culturegan kernel
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(y.double(), y64, atol=atol * 4, rtol=rtol * 4)
    # Where the pre-activation is within rounding of 0 (the statistics are rounded to the half
    # type), the activation's derivative may flip: dx is compared elsewhere.
    pre64 = ops.instance_norm_act_reference(x64.detach(), **{k: v.detach() for k, v in ref.items()}, activation="none")
    away_from_kink = pre64.abs() > (0.02 if dtype in HALVES else 1e-6)
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


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=str)
def test_gradgradcheck(device, backend, activation):
    """The double backward (gradient penalties) differentiates the composition of the forward ops."""
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)

    def fn(x, weight):
        return ops.instance_norm_act(x, weight, activation=activation[0], backend=backend)

    assert_gradcheck_and_gradgradcheck(fn, (x, weight), device, backend)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_opcheck(device, backend, layout):
    op = native_op("instance_norm_act_backward", backend)
    z = make_layout(torch.randn(2, 3, 4, 5, device=device), layout)
    grad = torch.randn_like(z)
    mean, std = z.mean((2, 3)), z.std((2, 3))
    gamma, beta = torch.randn(2, 3, device=device), torch.randn(2, 3, device=device)
    torch.library.opcheck(op, (grad, z, mean, std, gamma, beta, 0.2))
    torch.library.opcheck(op, (grad, z, mean, std, gamma, beta, None))


@pytest.mark.parametrize("device, backend", TRITON)
def test_direct_calls_of_the_triton_backward_check_their_arguments(device, backend):
    z = torch.randn(2, 3, 4, 5)
    good = (torch.randn_like(z), z, *(torch.ones(2, 3) for _ in range(4)), 0.2)
    op = native_op("instance_norm_act_backward", backend)
    with pytest.raises(ValueError, match="grad has shape"):
        op(torch.randn(2, 3, 4, 4), *good[1:])
    with pytest.raises(ValueError, match=r"gamma must be \(2, 3\)"):
        op(*good[:4], torch.ones(3), *good[5:])
