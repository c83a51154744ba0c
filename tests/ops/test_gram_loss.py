"""gram_loss: every backend against the float64 reference.

Tolerances, as in test_gram.py: a Gram entry's rounding error is relative to the magnitude of
the H*W terms it sums, B_ij = sum_k |F_ik| |F_jk| / norm, not to the possibly cancelling sum.
With d = G - T (float64, on the same rounded inputs), a backend's error in d is ~u * B, so the
loss reduce(d^2) is off by ~reduce(|d| (B + |d|)) * u and dL/dG = 2 w d by ~2 |w| (|d| + B) * u
(w: the reduction's weight, times the incoming gradient); every comparison is

    |value - reference| <= rtol * M + atol * max(M)

with M that magnitude (propagated through dF = (dG + dG^T) F * scale for the gradient of x) and
(atol, rtol) = helpers.TOLERANCES[dtype].
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from helpers import (BACKENDS, BASE_CASES, CPU_BACKENDS, DTYPES, FAST_BACKENDS, GRAM_TILE_CASES, LAYOUTS,
                     NOT_INTERPRETED, arbitrary_strides, assert_close, assert_compiles_like_eager,
                     assert_gradcheck_and_gradgradcheck, assert_within, bad_input_params, features64, gram_bound,
                     interpreted, offset_features, poison_allocator, scale_of)

REDUCTIONS = ("mean", "sum", "none")
# (per-sample target, normalize, center) for each of the base and tile-edge cases, in their order.
OPTIONS = [
    (False, "hw", False),
    (True, "hw", False),
    (False, "chw", True),
    (True, "hw", True),
    (True, "none", True),
    (False, "none", False),
    (True, "chw", True),
    (False, "hw", True),
    (True, "hw", False),
    (True, "chw", False),
    (False, "hw", True),
]
# shape, layout, per-sample target, normalize, center
CASES = [case + options for case, options in zip(BASE_CASES + GRAM_TILE_CASES, OPTIONS, strict=True)]
CASE_IDS = [f"{'x'.join(map(str, c[0]))}-{c[1]}-{'target NCC' if c[2] else 'target CC'}-{c[3]}"
            f"{'-centered' if c[4] else ''}" for c in CASES]


def inputs(shape, layout, dtype, device, per_sample, normalize="hw", requires_grad=False, scale=1.0, offset=0.5):
    """x (made in float32 with a random offset per channel, then cast) and a target Gram matrix
    of the same dtype, (N, C, C) if per_sample else (C, C), of the magnitude of x's Gram
    matrices: the squares and their sums stay well within float16's range."""
    x = offset_features(shape, layout, dtype, device, requires_grad, scale, offset)
    n, c = shape[:2]
    magnitude = scale ** 2 * {"hw": 1.0, "chw": 1.0 / c, "none": math.prod(shape[2:])}[normalize]
    target = magnitude * torch.randn((n, c, c) if per_sample else (c, c), device=device)
    return x, target.to(dtype).requires_grad_(requires_grad)


def reduce(t, reduction):
    return {"mean": t.mean(), "sum": t.sum(), "none": t.flatten(1).mean(1)}[reduction]


def incoming_grad(loss, reduction, shape):
    """A random gradient for the loss, times the count its reduction divides by, so that
    dL/dG = 2 (G - T) grad / count is O(1): the reference backend, autograd in the half type
    itself, would otherwise form dL/dG (and dL/dx) in float16's subnormal range, where its
    relative precision is gone (the other backends compute the backward in float32)."""
    n, c = shape[:2]
    count = {"mean": n * c * c, "sum": 1, "none": c * c}[reduction]
    return (torch.randn(loss.shape, device=loss.device) * count).to(loss.dtype)


def check_loss(loss, x, target, reduction, normalize, center, what=""):
    shape = (x.shape[0],) if reduction == "none" else ()
    assert loss.shape == shape, f"{what}: shape {tuple(loss.shape)}"
    assert loss.dtype == x.dtype and loss.device == x.device, f"{what}: {loss.dtype} on {loss.device}"
    x64, target64 = x.detach().double(), target.detach().double()
    expected = ops.gram_loss_reference(x64, target64, reduction, normalize, center)
    d = (ops.gram_reference(x64, normalize, center) - target64).abs()
    magnitude = reduce(d * (gram_bound(x, normalize, center) + d), reduction)
    assert_within(loss, expected, magnitude, x.dtype, what)


def check_gradients(grad_x, grad_target, x, target, grad_loss, reduction, normalize, center, what=""):
    """dL/dx and dL/dT against the float64 reference, within the magnitude of their terms."""
    x64 = x.detach().double().requires_grad_()
    target64 = target.detach().double().requires_grad_()
    loss = ops.gram_loss_reference(x64, target64, reduction, normalize, center)
    expected_x, expected_target = torch.autograd.grad(loss, (x64, target64), grad_loss.double())

    n, c = x.shape[:2]
    weight = {"mean": grad_loss.double().abs().expand(n) / (n * c * c), "sum": grad_loss.double().abs().expand(n),
              "none": grad_loss.double().abs() / (c * c)}[reduction].view(n, 1, 1)
    d = (ops.gram_reference(x64.detach(), normalize, center) - target64.detach()).abs()
    grad_gram = 2 * weight * (d + gram_bound(x, normalize, center))  # bounds |dL/dG| and its error
    bound_x = (torch.bmm(grad_gram + grad_gram.transpose(1, 2), features64(x, center).abs())
               * scale_of(x, normalize)).view(x.shape)
    bound_target = grad_gram if target.dim() == 3 else grad_gram.sum(0)
    assert grad_x.shape == x.shape and grad_x.dtype == x.dtype
    assert grad_target.shape == target.shape and grad_target.dtype == target.dtype
    assert_within(grad_x, expected_x, bound_x, x.dtype, f"{what} grad x")
    assert_within(grad_target, expected_target, bound_target, x.dtype, f"{what} grad target")


# ---------------------------------------------------------------------------- forward

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, per_sample, normalize, center", CASES, ids=CASE_IDS)
def test_forward_matches_reference(device, backend, dtype, shape, layout, per_sample, normalize, center):
    x, target = inputs(shape, layout, dtype, device, per_sample, normalize)
    before = x.clone(), target.clone()
    for reduction in REDUCTIONS:
        poison_allocator(device, shape[0] * shape[1] ** 2, dtype)
        loss = ops.gram_loss(x, target, reduction, normalize, center, backend=backend)
        check_loss(loss, x, target, reduction, normalize, center, f"{backend} loss, reduction {reduction}")
    assert torch.equal(x, before[0]) and torch.equal(target, before[1]), "an input was modified"


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, per_sample, center", [((2, 64, 32, 33), "channels_last", False, True),
                                                               ((2, 3, 64, 65), "strided", True, False)], ids=str)
def test_large(device, backend, dtype, shape, layout, per_sample, center):
    x, target = inputs(shape, layout, dtype, device, per_sample, requires_grad=True)
    loss = ops.gram_loss(x, target, "mean", "hw", center, backend=backend)
    check_loss(loss, x, target, "mean", "hw", center, f"{backend} loss")
    grad_loss = incoming_grad(loss, "mean", shape)
    grad_x, grad_target = torch.autograd.grad(loss, (x, target), grad_loss)
    check_gradients(grad_x, grad_target, x, target, grad_loss, "mean", "hw", center, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_reductions_and_target_broadcast(device, backend, dtype):
    """"mean" averages all N*C*C squares, "sum" adds them, "none" averages each sample's; a
    (C, C) target is the same as that target repeated for every sample."""
    x, target = inputs((3, 4, 5, 5), "contiguous", dtype, device, per_sample=False)
    n, c = x.shape[:2]
    mean = ops.gram_loss(x, target, "mean", backend=backend)
    total = ops.gram_loss(x, target, "sum", backend=backend)
    per_sample = ops.gram_loss(x, target, "none", backend=backend)
    assert_close(total, mean.double() * n * c * c, dtype, "sum vs mean")
    assert_close(per_sample.mean(), mean, dtype, "none.mean() vs mean")
    repeated = target.expand(n, c, c).contiguous()
    for reduction in REDUCTIONS:
        assert_close(ops.gram_loss(x, repeated, reduction, backend=backend),
                     ops.gram_loss(x, target, reduction, backend=backend).double(), dtype, f"broadcast {reduction}")


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("per_sample", [False, True], ids=["target CC", "target NCC"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_own_gram_as_target_gives_exact_zero(device, backend, per_sample, center):
    """Against its own Gram matrix (same backend, same bits), the loss and its gradients are 0."""
    x, _ = inputs((1 if not per_sample else 2, 5, 4, 3), "channels_last", torch.float32, device, per_sample,
                  requires_grad=True)
    target = ops.gram(x.detach(), "hw", center, backend=backend)
    target = (target if per_sample else target[0]).requires_grad_()
    loss = ops.gram_loss(x, target, "mean", "hw", center, backend=backend)
    assert loss.item() == 0.0
    grad_x, grad_target = torch.autograd.grad(loss, (x, target))
    assert not grad_x.any() and not grad_target.any()


# ---------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, per_sample, normalize, center", CASES, ids=CASE_IDS)
def test_gradients_match_reference(device, backend, dtype, shape, layout, per_sample, normalize, center):
    x, target = inputs(shape, layout, dtype, device, per_sample, normalize, requires_grad=True)
    for reduction in REDUCTIONS:
        poison_allocator(device, x.numel(), dtype)
        loss = ops.gram_loss(x, target, reduction, normalize, center, backend=backend)
        grad_loss = incoming_grad(loss, reduction, shape)
        grad_x, grad_target = torch.autograd.grad(loss, (x, target), grad_loss)
        check_gradients(grad_x, grad_target, x, target, grad_loss, reduction, normalize, center,
                        f"{backend}, reduction {reduction}")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("shape, layout, per_sample, reduction, normalize, center",
                         [((2, 3, 3, 4), "contiguous", False, "mean", "hw", False),
                          ((2, 3, 3, 4), "channels_last", True, "none", "chw", True),
                          ((2, 3, 3, 4), "strided", False, "sum", "none", True),
                          ((2, 3, 5), "contiguous", True, "mean", "hw", False)], ids=str)
def test_gradcheck_and_gradgradcheck_float64(device, backend, shape, layout, per_sample, reduction, normalize,
                                             center):
    x, target = inputs(shape, layout, torch.float64, device, per_sample, normalize, requires_grad=True)
    fn = lambda x, target: ops.gram_loss(x, target, reduction, normalize, center, backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x, target), device, backend)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
def test_target_without_grad(device, backend):
    """The usual style loss: a fixed target, gradients for x only."""
    x, target = inputs((2, 3, 4, 5), "contiguous", torch.float32, device, per_sample=False)
    x.requires_grad_()
    loss = ops.gram_loss(x, target, backend=backend)
    (grad_x,) = torch.autograd.grad(loss, x)
    x64 = x.detach().double().requires_grad_()
    (expected,) = torch.autograd.grad(ops.gram_loss_reference(x64, target.double()), x64)
    torch.testing.assert_close(grad_x.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


# -------------------------------------------------------------------- determinism, compile

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic(device, backend, layout):
    shape = (2, 35, 5, 7) if interpreted(device, backend) else (2, 48, 40, 41)
    x, target = inputs(shape, layout, torch.float32, device, per_sample=False, requires_grad=True)

    def run():
        loss = ops.gram_loss(x, target, "mean", "hw", True, backend=backend)
        return loss, *torch.autograd.grad(loss, (x, target))

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    """A style loss block (features of a layer, style and content terms) compiled whole, forward
    and backward, gives eager's values and gradients."""
    def style_loss(x, target):
        features = x * 2.0
        return ops.gram_loss(features, target, "mean", "hw", False, backend=backend) + 0.5 * features.square().mean()

    x, target = inputs((2, 3, 4, 5), "channels_last", torch.float32, device, per_sample=False, requires_grad=True)
    assert_compiles_like_eager(style_loss, (x, target))


# ----------------------------------------------------------------------- random shapes

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), shape=st.lists(st.integers(1, 6), min_size=3, max_size=4), step=st.integers(1, 3),
       per_sample=st.booleans(), reduction=st.sampled_from(REDUCTIONS),
       normalize=st.sampled_from(["hw", "chw", "none"]), center=st.booleans())
def test_random_shapes_and_strides(device, backend, data, shape, step, per_sample, reduction, normalize, center):
    order = data.draw(st.permutations(range(len(shape))), label="memory order")
    x, target = inputs(tuple(shape), "contiguous", torch.float32, device, per_sample, normalize)
    x = arbitrary_strides(x, order, step).requires_grad_()
    target.requires_grad_()
    what = f"shape {shape} strides {x.stride()} target {tuple(target.shape)} {reduction} {normalize} center={center}"
    loss = ops.gram_loss(x, target, reduction, normalize, center, backend=backend)
    check_loss(loss, x, target, reduction, normalize, center, what)
    grad_loss = torch.randn_like(loss)
    grad_x, grad_target = torch.autograd.grad(loss, (x, target), grad_loss)
    check_gradients(grad_x, grad_target, x, target, grad_loss, reduction, normalize, center, what)


# ------------------------------------------------------------------------------ bad input

X = lambda: torch.ones(2, 3, 4, 4)  # noqa: E731
BAD_INPUTS = [
    # (description, kwargs maker, exception, message fragment)
    ("integer x", lambda: dict(x=torch.ones(2, 3, 4, 4, dtype=torch.int32), target_gram=torch.ones(3, 3)), TypeError,
     "x must be a floating-point tensor"),
    ("rank 2", lambda: dict(x=torch.ones(2, 3), target_gram=torch.ones(3, 3)), ValueError,
     "x must have 3 or 4 dimensions"),
    ("rank 5", lambda: dict(x=torch.ones(1, 2, 2, 2, 2), target_gram=torch.ones(2, 2)), ValueError,
     "x must have 3 or 4 dimensions"),
    ("empty", lambda: dict(x=torch.ones(0, 3, 4, 4), target_gram=torch.ones(3, 3)), ValueError, "x is empty"),
    ("normalize", lambda: dict(x=X(), target_gram=torch.ones(3, 3), normalize="bad"), ValueError,
     "normalize must be one of"),
    ("target C", lambda: dict(x=X(), target_gram=torch.ones(4, 4)), ValueError,
     r"target_gram must have shape \(3, 3\) or \(2, 3, 3\)"),
    ("target not square", lambda: dict(x=X(), target_gram=torch.ones(3, 4)), ValueError, "target_gram must have shape"),
    ("target N", lambda: dict(x=X(), target_gram=torch.ones(3, 3, 3)), ValueError, "target_gram must have shape"),
    ("target rank 1", lambda: dict(x=X(), target_gram=torch.ones(9)), ValueError, "target_gram must have shape"),
    ("target rank 4", lambda: dict(x=X(), target_gram=torch.ones(1, 2, 3, 3)), ValueError,
     "target_gram must have shape"),
    ("target dtype", lambda: dict(x=X(), target_gram=torch.ones(3, 3, dtype=torch.float64)), TypeError,
     "target_gram has dtype torch.float64 but x has dtype torch.float32"),
    ("target half", lambda: dict(x=X(), target_gram=torch.ones(3, 3, dtype=torch.float16)), TypeError,
     "target_gram has dtype"),
    ("target device", lambda: dict(x=X(), target_gram=torch.ones(3, 3, device="meta")), ValueError,
     "target_gram is on meta but x is on cpu"),
    ("target not a tensor", lambda: dict(x=X(), target_gram=[[1.0] * 3] * 3), TypeError,
     "target_gram must be a torch.Tensor"),
    ("reduction", lambda: dict(x=X(), target_gram=torch.ones(3, 3), reduction="bad"), ValueError,
     "reduction must be one of"),
    ("reduction None", lambda: dict(x=X(), target_gram=torch.ones(3, 3), reduction=None), ValueError,
     "reduction must be one of"),
    ("x not a tensor", lambda: dict(x=[[[1.0, 2.0]]], target_gram=torch.ones(1, 1)), TypeError,
     "x must be a torch.Tensor"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.gram_loss(**make(), backend=backend)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_target_on_another_device_raises():
    with pytest.raises(ValueError, match="target_gram is on cpu but x is on cuda"):
        ops.gram_loss(torch.ones(2, 3, 4, device="cuda"), torch.ones(3, 3))
