"""gram: every backend against the float64 reference.

Tolerances. A Gram entry G_ij = sum_k F_ik F_jk / norm is a sum of H*W products that grows like
H*W * x^2 and can cancel (off-diagonal entries of independent channels are ~sqrt(H*W) smaller
than the diagonal). A backend's rounding error is relative to the magnitude of the terms it
sums, not to their possibly cancelling sum, so every comparison here is against that magnitude,
computed in float64 on the same (rounded) inputs:

    |G - G_ref| <= rtol * B + atol * max(B),      B_ij = sum_k |F_ik| |F_jk| / norm

with (atol, rtol) = helpers.TOLERANCES[dtype]: rtol bounds each entry at its own terms' scale,
atol is taken at the scale of the largest entry (an absolute atol means nothing for values
that grow with H*W). The gradient dF = (dG + dG^T) F * scale is bounded the same way, with
B = (|dG| + |dG^T|) |F| * scale.
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from helpers import (BACKENDS, BAD_FEATURES, BASE_CASES, CPU_BACKENDS, DTYPES, FAST_BACKENDS, GRAM_TILE_CASES, HALVES,
                     LAYOUTS, NOT_INTERPRETED, TRITON, arbitrary_strides, assert_gradcheck_and_gradgradcheck,
                     assert_within, bad_input_params, constant_planes, features64, gram_bound, interpreted, native_op,
                     offset_features, poison_allocator, scale_of, skip_unless_registered)

NORMALIZATIONS = ("hw", "chw", "none")
# The base and tile-edge cases, C = 40 and 33 in the other layouts, and L = 1.
CASES = BASE_CASES + GRAM_TILE_CASES + [((1, 40, 1, 5), "strided"), ((2, 33, 2, 3), "channels_last"),
                                        ((4, 3, 1), "contiguous")]
# Larger planes and channel counts (BLAS / cuBLAS blocking), not for the interpreter.
LARGE_CASES = [
    ((2, 3, 64, 65), "contiguous", False),
    ((2, 16, 48, 48), "channels_last", True),
    ((1, 70, 33, 17), "strided", True),
    ((2, 64, 1000), "contiguous", False),
]


def check_gram(g, x, normalize, center, what=""):
    n, c = x.shape[:2]
    assert g.shape == (n, c, c), f"{what}: shape {tuple(g.shape)}"
    assert g.dtype == x.dtype and g.device == x.device, f"{what}: {g.dtype} on {g.device}"
    expected = ops.gram_reference(x.detach().double(), normalize, center)
    assert_within(g, expected, gram_bound(x, normalize, center), x.dtype, what)


def poison(device, x, dtype):
    """NaN-filled blocks for the (N, C, C) output and a float32 work buffer to land on."""
    numel = x.shape[0] * x.shape[1] ** 2
    poison_allocator(device, numel, dtype)
    poison_allocator(device, numel, torch.promote_types(dtype, torch.float32))


# ---------------------------------------------------------------------------- forward

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
def test_forward_matches_reference(device, backend, dtype, shape, layout):
    x = offset_features(shape, layout, dtype, device)
    before = x.clone()
    for center in (False, True):
        poison(device, x, dtype)
        g = ops.gram(x, "hw", center, backend=backend)
        check_gram(g, x, "hw", center, f"{backend} gram, center={center}")
    assert torch.equal(x, before), "the input was modified"


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, center", LARGE_CASES, ids=str)
def test_forward_large(device, backend, dtype, shape, layout, center):
    # scale 1: H*W * x^2 stays within float16's range (see test_half_types_do_not_overflow).
    x = offset_features(shape, layout, dtype, device, scale=1.0)
    poison(device, x, dtype)
    check_gram(ops.gram(x, "hw", center, backend=backend), x, "hw", center, f"{backend} gram")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
@pytest.mark.parametrize("shape, layout, dtype", [((2, 5, 3, 4), "channels_last", torch.float32),
                                                  ((2, 35, 6), "strided", torch.float64)], ids=str)
def test_normalizations(device, backend, dtype, normalize, center, shape, layout):
    x = offset_features(shape, layout, dtype, device)
    g = ops.gram(x, normalize, center, backend=backend)
    check_gram(g, x, normalize, center, f"{backend} gram {normalize}")
    # The three conventions differ by their divisor only.
    hw, c = math.prod(shape[2:]), shape[1]
    raw = ops.gram(x, "none", center, backend=backend).double()
    divisor = {"hw": hw, "chw": c * hw, "none": 1}[normalize]
    assert_within(g, raw / divisor, gram_bound(x, normalize, center), dtype, "normalize vs none / divisor")


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("dtype", HALVES, ids=str)
@pytest.mark.parametrize("normalize", ["hw", "chw"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_half_types_do_not_overflow(device, backend, dtype, normalize, center):
    """The unnormalised sums (here ~64 * 64^2 = 262144) exceed float16's 65504 long before the
    normalised entries do (~4096): the sum must be scaled in float32 (the op's docstring:
    float32 accumulation for the half types), not formed in the half type and then scaled."""
    x = offset_features((2, 3, 8, 8), "contiguous", dtype, device, scale=64.0, offset=16.0)
    g = ops.gram(x, normalize, center, backend=backend)
    assert torch.isfinite(g).all(), f"{backend} {dtype} gram overflowed: {g}"
    check_gram(g, x, normalize, center, f"{backend} gram")


def test_conventions_match_the_usual_formulas():
    """normalize="hw": Gatys et al.; "chw": pytorch/examples' fast neural style gram_matrix;
    center=True: the per-sample covariance (torch.cov with correction=0)."""
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    n, c, h, w = x.shape
    features = x.view(n, c, h * w)
    torch.testing.assert_close(ops.gram(x, "chw"), features.bmm(features.transpose(1, 2)) / (c * h * w))
    torch.testing.assert_close(ops.gram(x), features.bmm(features.transpose(1, 2)) / (h * w))
    torch.testing.assert_close(ops.gram(x), ops.gram(x, "hw", False))  # the defaults
    covariance = torch.stack([torch.cov(features[i], correction=0) for i in range(n)])
    torch.testing.assert_close(ops.gram(x, center=True), covariance)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_samples_are_independent(device, backend):
    """One Gram matrix per sample: never the tutorial form that folds the batch into one."""
    x = offset_features((3, 4, 5, 5), "contiguous", torch.float32, device)
    g = ops.gram(x, backend=backend)
    for i in range(3):
        single = ops.gram(x[i:i + 1], backend=backend)
        assert_within(g[i:i + 1], single.double(), gram_bound(x[i:i + 1], "hw", False), torch.float32, f"sample {i}")


# ------------------------------------------------------------------ numerical stability

@pytest.mark.parametrize("device, backend", BACKENDS)
def test_large_mean_covariance_is_numerically_stable(device, backend):
    """1000 + N(0, 1) in float32, center=True: the covariance (~1 on the diagonal) matches the
    float64 reference to 1e-4 of its terms' scale. G - HW * mu mu^T would lose ~all its digits
    to the ~1e6 raw products."""
    shape = (1, 2, 8, 8) if interpreted(device, backend) else (2, 4, 64, 64)
    x = 1000.0 + torch.randn(shape, device=device)
    g = ops.gram(x, "hw", True, backend=backend)
    expected = ops.gram_reference(x.double(), "hw", True)
    bound = gram_bound(x, "hw", True)  # ~1 on the diagonal, ~0.64 off it
    error = ((g.double() - expected).abs() / bound).max().item()
    assert error < 1e-4, f"{backend} covariance relative error {error:.3g}"

    # The test can tell: the naive float32 formula is off by far more than the tolerance.
    features = x.flatten(2)
    mean = features.mean(2)
    naive = torch.bmm(features, features.transpose(1, 2)) / features.shape[2] - mean[:, :, None] * mean[:, None, :]
    assert ((naive.double() - expected).abs() / bound).max() > 1e-3


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("kind", ["filled", "expanded"])
def test_constant_planes_have_zero_covariance(device, backend, kind):
    """Planes of one large value: the covariance is ~0 (what remains is the rounding of the mean)."""
    values, x = constant_planes(kind, (4, 4) if interpreted(device, backend) else (64, 64), device)
    g = ops.gram(x, "hw", True, backend=backend)
    assert torch.isfinite(g).all()
    # |x - mean| <= |x| * 2^-22 or so: products of two such deviations.
    limit = (values.abs().max().item() * 1e-6) ** 2
    assert g.abs().max().item() <= limit, f"{backend} covariance of constant planes {g}"


# ---------------------------------------------------------------------------- Triton tiles

@pytest.mark.parametrize("device, backend", TRITON)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels", [1, 32, 33, 70])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_triton_gram_is_exactly_symmetric(device, backend, dtype, channels, center):
    """Each off-diagonal tile is computed once and mirrored: G == G^T bit for bit, and no tile
    (nor any entry of a partial edge tile) is left unwritten."""
    x = offset_features((2, channels, 3, 5), "channels_last", dtype, device)
    poison(device, x, dtype)
    g = ops.gram(x, "hw", center, backend=backend)
    assert torch.equal(g, g.transpose(1, 2))
    check_gram(g, x, "hw", center, f"{backend} gram C={channels}")


# ---------------------------------------------------------------------------- gradients

def check_gradient(grad_x, x, grad_g, normalize, center, what=""):
    x64 = x.detach().double().requires_grad_()
    (expected,) = torch.autograd.grad(ops.gram_reference(x64, normalize, center), x64, grad_g.double())
    assert grad_x.shape == x.shape and grad_x.dtype == x.dtype, f"{what}: {grad_x.dtype} {tuple(grad_x.shape)}"
    magnitude = grad_g.double().abs()
    f = features64(x, center).abs()
    bound = (torch.bmm(magnitude + magnitude.transpose(1, 2), f) * scale_of(x, normalize)).view(x.shape)
    assert_within(grad_x, expected, bound, x.dtype, what)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_gradients_match_reference(device, backend, dtype, shape, layout, center):
    normalize = "chw" if center else "hw"
    x = offset_features(shape, layout, dtype, device, requires_grad=True)
    # Not symmetric: the backward must use dG + dG^T, not 2 dG.
    grad_g = torch.randn(shape[0], shape[1], shape[1], device=device).to(dtype)
    poison_allocator(device, x.numel(), dtype)
    (grad_x,) = torch.autograd.grad(ops.gram(x, normalize, center, backend=backend), x, grad_g)
    check_gradient(grad_x, x, grad_g, normalize, center, f"{backend} grad x")


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, center", LARGE_CASES[1:3], ids=str)
def test_gradients_large(device, backend, dtype, shape, layout, center):
    x = offset_features(shape, layout, dtype, device, requires_grad=True, scale=1.0)
    grad_g = torch.randn(shape[0], shape[1], shape[1], device=device).to(dtype)
    (grad_x,) = torch.autograd.grad(ops.gram(x, "hw", center, backend=backend), x, grad_g)
    check_gradient(grad_x, x, grad_g, "hw", center, f"{backend} grad x")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("shape, layout, normalize, center", [((2, 3, 3, 4), "contiguous", "hw", False),
                                                              ((2, 3, 3, 4), "channels_last", "chw", True),
                                                              ((2, 3, 3, 4), "strided", "none", True),
                                                              ((2, 3, 5), "contiguous", "hw", True),
                                                              ((2, 3, 5), "channels_last", "hw", False)], ids=str)
def test_gradcheck_and_gradgradcheck_float64(device, backend, shape, layout, normalize, center):
    x = offset_features(shape, layout, torch.float64, device, requires_grad=True, scale=1.0)
    fn = lambda x: ops.gram(x, normalize, center, backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x,), device, backend)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
def test_backward_does_not_need_the_output(device, backend):
    """The backward recomputes from x: it saves x only, never the (N, C, C) output."""
    x = offset_features((2, 3, 4, 5), "contiguous", torch.float32, device, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        ops.gram(x, backend=backend)
    assert len(saved) == 1 and saved[0].data_ptr() == x.data_ptr()


# ------------------------------------------------------------------- determinism, opcheck

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_deterministic(device, backend, layout, center):
    """Twice the same call gives the same bits, forward and backward."""
    shape = (2, 35, 5, 7) if interpreted(device, backend) else (2, 48, 40, 41)
    x = offset_features(shape, layout, torch.float32, device, requires_grad=True)
    grad_g = torch.randn(shape[0], shape[1], shape[1], device=device)

    def run():
        g = ops.gram(x, "hw", center, backend=backend)
        return g, *torch.autograd.grad(g, x, grad_g)

    first, again = run(), run()
    for a, b in zip(first, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("shape, layout, center", [((2, 3, 4, 5), "contiguous", True),
                                                   ((2, 3, 4, 5), "channels_last", False),
                                                   ((2, 3, 4, 5), "strided", True),
                                                   ((2, 3, 7), "contiguous", False)], ids=str)
def test_opcheck(device, backend, shape, layout, center):
    op = native_op("gram", backend)
    x = offset_features(shape, layout, torch.float32, device, requires_grad=True)
    torch.library.opcheck(op, (x, 1.0 / math.prod(shape[2:]), center))


# ----------------------------------------------------------------------- random shapes

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), shape=st.lists(st.integers(1, 6), min_size=3, max_size=4), step=st.integers(1, 3),
       normalize=st.sampled_from(NORMALIZATIONS), center=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_random_shapes_and_strides(device, backend, data, shape, step, normalize, center, dtype):
    order = data.draw(st.permutations(range(len(shape))), label="memory order")
    x = arbitrary_strides(offset_features(tuple(shape), "contiguous", dtype, device), order, step)
    x.requires_grad_()
    what = f"shape {shape} strides {x.stride()} {normalize} center={center}"
    g = ops.gram(x, normalize, center, backend=backend)
    check_gram(g, x, normalize, center, what)
    grad_g = torch.randn_like(g)
    (grad_x,) = torch.autograd.grad(g, x, grad_g)
    check_gradient(grad_x, x, grad_g, normalize, center, f"grad x, {what}")


# ------------------------------------------------------------------------------ bad input

BAD_INPUTS = BAD_FEATURES + [
    # (description, kwargs maker, exception, message fragment)
    ("normalize", lambda: dict(x=torch.ones(2, 3, 4, 4), normalize="bad"), ValueError, "normalize must be one of"),
    ("normalize None", lambda: dict(x=torch.ones(2, 3, 4, 4), normalize=None), ValueError,
     "normalize must be one of"),
]
NATIVE_BAD_INPUTS = [b for b in BAD_INPUTS if "x" in b[1]() and isinstance(b[1]()["x"], torch.Tensor)
                     and "normalize" not in b[1]()]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.gram(**make(), backend=backend)


def test_unavailable_backend_raises():
    with pytest.raises(ops.BackendUnavailableError, match="cuda"):
        ops.gram(torch.ones(2, 3, 4), backend="cuda")


@pytest.mark.parametrize("name", ["gram", "gram_triton"])
@pytest.mark.parametrize("make, error, message", bad_input_params(NATIVE_BAD_INPUTS))
def test_registered_ops_check_their_arguments(name, make, error, message):
    """Users may call torch.ops.culturegan.* directly: the C++ checks (TORCH_CHECK) and the
    Triton op's name the argument as clearly, with the same exception types."""
    skip_unless_registered(name)
    with pytest.raises(error, match=message):
        getattr(torch.ops.culturegan, name)(make()["x"], 1.0, False)


@pytest.mark.parametrize("name", ["gram", "gram_triton"])
@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_registered_ops_reject_a_nonpositive_scale(name, scale):
    """The public API always passes 1 / norm > 0; the registered ops, callable directly, check it."""
    skip_unless_registered(name)
    with pytest.raises(ValueError, match="scale must be > 0"):
        getattr(torch.ops.culturegan, name)(torch.ones(2, 3, 4), scale, False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_on_cpu_backend_raises():
    with pytest.raises(ops.BackendUnavailableError):
        ops.gram(torch.ones(2, 3, 4, device="cuda"), backend="cpu")
