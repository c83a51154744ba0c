"""culture_stats: (mean, std, gram) on every backend against the float64 reference.

mean and std are compared with helpers' dtype tolerances as feature_stats' are. The Gram matrix
grows like H*W * x^2 and its entries can cancel, so it is compared against the magnitude of
its terms, as in test_gram.py:

    |G - G_ref| <= rtol * B + atol * max(B),      B_ij = sum_k |F_ik| |F_jk| / norm

The gradient of x sums the three outputs' contributions; it is bounded the same way by the sum
of their terms' magnitudes (float32 and float64; the half types' gradients are feature_stats'
and gram's own tests' business).
"""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from helpers import (BACKENDS, BAD_FEATURES, BASE_CASES, CPU_BACKENDS, DTYPES, FAST_BACKENDS, GRAM_TILE_CASES, LAYOUTS,
                     NOT_INTERPRETED, assert_close, assert_gradcheck_and_gradgradcheck, assert_within, bad_input_params,
                     constant_planes, features64, gram_bound, inner_size, interpreted, native_op, offset_features,
                     poison_allocator, scale_of)

EPS = 1e-5
# shape, layout, center: the base and tile-edge cases, every other one centered.
CASES = [case + (i % 2 == 1,) for i, case in enumerate(BASE_CASES + GRAM_TILE_CASES)]


def check_stats(stats, x, unbiased, eps, normalize, center, what=""):
    mean, std, g = stats
    n, c = x.shape[:2]
    for name, t, shape in (("mean", mean, (n, c)), ("std", std, (n, c)), ("gram", g, (n, c, c))):
        assert t.shape == shape, f"{what} {name} shape {tuple(t.shape)}"
        assert t.dtype == x.dtype and t.device == x.device, f"{what} {name}: {t.dtype} on {t.device}"
    ref_mean, ref_std, ref_g = ops.culture_stats_reference(x.detach().double(), unbiased, eps, normalize, center)
    assert_close(mean, ref_mean, x.dtype, f"{what} mean")
    assert_close(std, ref_std, x.dtype, f"{what} std")
    assert_within(g, ref_g, gram_bound(x, normalize, center), x.dtype, f"{what} gram")


# ---------------------------------------------------------------------------- forward

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, center", CASES, ids=str)
def test_forward_matches_reference(device, backend, dtype, shape, layout, center):
    x = offset_features(shape, layout, dtype, device)
    before = x.clone()
    n, c = shape[:2]
    for unbiased in (False, True):
        if unbiased and inner_size(shape) == 1:
            with pytest.raises(ValueError, match="unbiased"):
                ops.culture_stats(x, unbiased, backend=backend)
            continue
        normalize = "chw" if unbiased else "hw"
        poison_allocator(device, n * c * c, dtype)
        poison_allocator(device, n * c * c, torch.float32)
        stats = ops.culture_stats(x, unbiased, EPS, normalize, center, backend=backend)
        check_stats(stats, x, unbiased, EPS, normalize, center, f"{backend} unbiased={unbiased}")
    assert torch.equal(x, before), "the input was modified"


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, center", [((2, 3, 64, 65), "channels_last", True),
                                                   ((1, 70, 33, 17), "strided", False)], ids=str)
def test_forward_large(device, backend, dtype, shape, layout, center):
    x = offset_features(shape, layout, dtype, device, scale=1.0)
    check_stats(ops.culture_stats(x, False, EPS, "hw", center, backend=backend), x, False, EPS, "hw", center, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("unbiased, eps, normalize, center", [(False, EPS, "hw", False), (True, 0.0, "chw", True),
                                                              (True, 0.5, "none", False)], ids=str)
def test_agrees_with_feature_stats_and_gram(device, backend, layout, unbiased, eps, normalize, center):
    """The same statistics as feature_stats and gram on the same backend (which may compute
    them in one fused pass, so to float32's rounding rather than bit for bit)."""
    x = offset_features((2, 5, 4, 3), layout, torch.float32, device)
    mean, std, g = ops.culture_stats(x, unbiased, eps, normalize, center, backend=backend)
    ref_mean, ref_std = ops.feature_stats(x, unbiased, eps, backend=backend)
    assert_close(mean, ref_mean, torch.float32, "mean")
    assert_close(std, ref_std, torch.float32, "std")
    assert_within(g, ops.gram(x, normalize, center, backend=backend).double(), gram_bound(x, normalize, center),
                  torch.float32, "gram")


def test_defaults():
    """Defaults: instance norm's statistics (biased, eps 1e-5) and Gatys' Gram (/ HW, raw)."""
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    mean, std, g = ops.culture_stats(x)
    features = x.flatten(2)
    torch.testing.assert_close(mean, features.mean(2))
    torch.testing.assert_close(std, torch.sqrt(features.var(2, unbiased=False) + 1e-5))
    torch.testing.assert_close(g, features.bmm(features.transpose(1, 2)) / 30)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_large_mean_is_numerically_stable(device, backend, unbiased, center):
    """1000 + N(0, 1) in float32: std and the covariance (center=True) keep ~1e-4 of relative
    precision, where E[x^2] - E[x]^2 and G - HW * mu mu^T would lose ~all of it."""
    shape = (1, 2, 8, 8) if interpreted(device, backend) else (2, 4, 64, 64)
    x = 1000.0 + torch.randn(shape, device=device)
    mean, std, g = ops.culture_stats(x, unbiased, EPS, "hw", center, backend=backend)
    ref_mean, ref_std, ref_g = ops.culture_stats_reference(x.double(), unbiased, EPS, "hw", center)
    assert_close(mean, ref_mean, torch.float32, f"{backend} mean")
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-4, atol=0.0, msg=lambda m: f"{backend} std: {m}")
    assert_within(g, ref_g, gram_bound(x, "hw", center), torch.float32, f"{backend} gram")
    if center:
        error = ((g.double() - ref_g).abs() / gram_bound(x, "hw", True)).max().item()
        assert error < 1e-4, f"{backend} covariance relative error {error:.3g}"
        # The covariance's diagonal is the biased variance.
        count = math.prod(shape[2:])
        variance = (std.double() ** 2 - EPS) * ((count - 1) / count if unbiased else 1.0)
        torch.testing.assert_close(torch.diagonal(g, dim1=1, dim2=2).double(), variance, rtol=2e-4, atol=0.0)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("kind", ["filled", "expanded"])
def test_constant_planes(device, backend, kind):
    """Planes of one large value: mean is the value, var ~0 (never negative: no NaN with
    eps = 0), and the raw Gram matrix is the products of the values."""
    hw = (4, 4) if interpreted(device, backend) else (64, 64)
    values, x = constant_planes(kind, hw, device)
    for unbiased in (False, True):
        mean, std, g = ops.culture_stats(x, unbiased, 0.0, "hw", False, backend=backend)
        assert torch.isfinite(std).all() and (std >= 0).all(), f"{backend} std {std}"
        assert_close(mean, values.view(2, 3).double(), torch.float32, f"{backend} mean")
        # What remains of the std is the rounding of the mean (|x - mean| ~ 1e-7 * |x|).
        assert (std.double() <= 1e-6 * values.view(2, 3).double().abs() + 1e-30).all(), f"{backend} std {std}"
        # H*W equal products summed in float32 (a GEMM over a stride-0 operand may add them in
        # sequence, whose errors do not cancel): within the worst-case bound H*W * 2^-24.
        v = values.view(2, 3).double()
        torch.testing.assert_close(g.double(), v[:, :, None] * v[:, None, :], rtol=math.prod(hw) * 2.0 ** -24, atol=0.0,
                                   msg=lambda m: f"{backend} gram: {m}")


# ---------------------------------------------------------------------------- gradients

def check_gradient(grad_x, x, grads, unbiased, eps, normalize, center, what=""):
    """dx of culture_stats(x) against the float64 reference, within the magnitude of its terms."""
    x64 = x.detach().double().requires_grad_()
    ref = ops.culture_stats_reference(x64, unbiased, eps, normalize, center)
    present = [(r, g.double()) for r, g in zip(ref, grads) if g is not None]
    (expected,) = torch.autograd.grad([r for r, _ in present], x64, [g for _, g in present])
    grad_mean, grad_std, grad_g = (None if g is None else g.double().abs() for g in grads)
    count = inner_size(x.shape)
    per_channel = x.shape[:2] + (1,) * (x.dim() - 2)
    mean, std = ref[0].detach(), ref[1].detach()
    bound = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    if grad_mean is not None:
        bound = bound + (grad_mean / count).view(per_channel)
    if grad_std is not None:
        divisor = (count - 1 if unbiased else count) * std
        bound = bound + (grad_std / divisor).view(per_channel) * ((x64.detach() - mean.view(per_channel)).abs()
                                                                  + mean.abs().view(per_channel))
    if grad_g is not None:
        f = features64(x, center).abs()
        bound = bound + (torch.bmm(grad_g + grad_g.transpose(1, 2), f) * scale_of(x, normalize)).view(x.shape)
    assert grad_x.shape == x.shape and grad_x.dtype == x.dtype
    assert_within(grad_x, expected, bound, x.dtype, what)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape, layout, center", CASES, ids=str)
def test_gradients_match_reference(device, backend, dtype, shape, layout, center):
    unbiased = inner_size(shape) > 1
    x = offset_features(shape, layout, dtype, device, requires_grad=True)
    n, c = shape[:2]
    grads = (torch.randn(n, c, device=device).to(dtype), torch.randn(n, c, device=device).to(dtype),
             torch.randn(n, c, c, device=device).to(dtype))
    poison_allocator(device, x.numel(), dtype)
    stats = ops.culture_stats(x, unbiased, EPS, "hw", center, backend=backend)
    (grad_x,) = torch.autograd.grad(stats, x, grads)
    check_gradient(grad_x, x, grads, unbiased, EPS, "hw", center, f"{backend} grad x")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("output", [0, 1, 2], ids=["mean", "std", "gram"])
@pytest.mark.parametrize("center", [False, True], ids=["raw", "centered"])
def test_gradient_through_one_output(device, backend, output, center):
    """The other outputs' gradients are None in the backward: they must count as zero."""
    x = offset_features((2, 3, 4, 5), "channels_last", torch.float32, device, requires_grad=True)
    stats = ops.culture_stats(x, True, EPS, "hw", center, backend=backend)
    grad = torch.randn_like(stats[output])
    (grad_x,) = torch.autograd.grad(stats[output], x, grad)
    grads = [None, None, None]
    grads[output] = grad
    check_gradient(grad_x, x, grads, True, EPS, "hw", center, f"{backend} grad x through output {output}")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("shape, layout, unbiased, normalize, center",
                         [((2, 3, 3, 4), "channels_last", False, "hw", True),
                          ((2, 3, 3, 4), "strided", True, "chw", False),
                          ((2, 3, 5), "contiguous", True, "none", True)], ids=str)
def test_gradcheck_and_gradgradcheck_float64(device, backend, shape, layout, unbiased, normalize, center):
    x = offset_features(shape, layout, torch.float64, device, requires_grad=True, scale=1.0)
    fn = lambda x: ops.culture_stats(x, unbiased, EPS, normalize, center, backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x,), device, backend)


# ------------------------------------------------------------------- determinism, compile

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic(device, backend, layout):
    shape = (2, 35, 5, 7) if interpreted(device, backend) else (2, 48, 40, 41)
    x = offset_features(shape, layout, torch.float32, device, requires_grad=True)
    grads = (torch.randn(shape[:2], device=device), torch.randn(shape[:2], device=device),
             torch.randn(shape[0], shape[1], shape[1], device=device))

    def run(center):
        stats = ops.culture_stats(x, False, EPS, "hw", center, backend=backend)
        return (*stats, *torch.autograd.grad(stats, x, grads))

    for center in (False, True):
        for a, b in zip(run(center), run(center)):
            assert torch.equal(a, b), f"center={center}"


# Dynamo and AOTAutograd (fullgraph: no graph break; fake kernels, autograd registrations)
# without Inductor's code generation, whose cold C++ compiles cost ~15 s here: the Gram and
# feature_stats ops under Inductor are test_gram_loss.py's and test_feature_stats.py's.
@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    def texture_loss(x, target_mean, target_std, target_gram):
        loss = 0.0
        for center in (False, True):
            mean, std, g = ops.culture_stats(x * 2.0, True, 1e-5, "chw", center, backend=backend)
            loss = loss + ((mean - target_mean).square().mean() + (std - target_std).square().mean()
                           + (g - target_gram).square().mean())
        return loss

    compiled = torch.compile(texture_loss, fullgraph=True, backend="aot_eager")
    x = offset_features((2, 3, 5, 3), "channels_last", torch.float32, device, requires_grad=True)
    targets = (torch.randn(2, 3, device=device), torch.rand(2, 3, device=device), torch.randn(3, 3, device=device))
    loss = compiled(x, *targets)
    (grad_x,) = torch.autograd.grad(loss, x)
    expected_loss = texture_loss(x, *targets)
    (expected,) = torch.autograd.grad(expected_loss, x)
    assert_close(loss, expected_loss, torch.float32)
    assert_close(grad_x, expected, torch.float32)


# The one-read ops behind the triton and cuda backends (the cpu backend composes two ops).
FUSED_OPS = [p for p in FAST_BACKENDS if p.values[1] in ("triton", "cuda")]


@pytest.mark.parametrize("device, backend", FUSED_OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", [((2, 3, 5, 7), "contiguous"), ((3, 1, 4, 4), "channels_last"),
                                           ((2, 4, 3, 5), "strided"), ((1, 1, 1, 1), "contiguous")], ids=str)
def test_fused_op_matches_reference_in_every_dtype(device, backend, dtype, shape, layout):
    """The one-read kernel itself, also in the dtypes for which the backend prefers two reads."""
    x = offset_features(shape, layout, dtype, device)
    poison_allocator(device, 2 * shape[0] * shape[1] ** 2, dtype)
    stats = native_op("culture_stats", backend)(x, False, EPS, 1.0 / inner_size(shape))
    check_stats(stats, x, False, EPS, "hw", False, f"{backend} fused op")


@pytest.mark.parametrize("device, backend", [p for p in FUSED_OPS if p.values[0] == "cuda"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fused_cuda_op_on_large_tiles(device, backend, layout, dtype):
    """Several 64 x 64 tiles, partial edge tiles, and H*W not a multiple of the 16-position step."""
    x = offset_features((3, 150, 17, 23), layout, dtype, device, scale=1.0)
    stats = native_op("culture_stats", backend)(x, True, EPS, 1.0)
    check_stats(stats, x, True, EPS, "none", False, f"{backend} fused op")
    assert torch.equal(stats[2], stats[2].transpose(1, 2)), "the Gram matrix is not exactly symmetric"


@pytest.mark.parametrize("device, backend", FUSED_OPS)
@pytest.mark.parametrize("shape, layout", [((2, 3, 4, 5), "contiguous"), ((2, 3, 4, 5), "strided"),
                                           ((2, 3, 7), "channels_last")], ids=str)
def test_opcheck_fused_op(device, backend, shape, layout):
    op = native_op("culture_stats", backend)
    x = offset_features(shape, layout, torch.float32, device, requires_grad=True)
    torch.library.opcheck(op, (x, False, EPS, 1.0 / inner_size(shape)))
    torch.library.opcheck(op, (x, True, 0.0, 1.0))


# ----------------------------------------------------------------------- random shapes

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 6), min_size=3, max_size=4), layout=st.sampled_from(LAYOUTS),
       unbiased=st.booleans(), eps=st.sampled_from([0.0, 1e-5, 0.5]), normalize=st.sampled_from(["hw", "chw", "none"]),
       center=st.booleans())
def test_random_shapes(device, backend, shape, layout, unbiased, eps, normalize, center):
    if len(shape) == 3 and layout == "channels_last":
        layout = "contiguous"
    x = offset_features(tuple(shape), layout, torch.float32, device, requires_grad=True)
    if unbiased and inner_size(shape) == 1:
        with pytest.raises(ValueError, match="unbiased"):
            ops.culture_stats(x, unbiased, eps, normalize, center, backend=backend)
        return
    stats = ops.culture_stats(x, unbiased, eps, normalize, center, backend=backend)
    what = f"shape {shape} {layout} unbiased={unbiased} eps={eps} {normalize} center={center}"
    check_stats(stats, x, unbiased, eps, normalize, center, what)
    if eps > 0:  # with eps = 0 a constant plane's dstd is 0/0
        grads = tuple(torch.randn_like(t) for t in stats)
        (grad_x,) = torch.autograd.grad(stats, x, grads)
        check_gradient(grad_x, x, grads, unbiased, eps, normalize, center, f"grad x, {what}")


# ------------------------------------------------------------------------------ bad input

BAD_INPUTS = BAD_FEATURES + [
    # (description, kwargs maker, exception, message fragment)
    ("normalize", lambda: dict(x=torch.ones(2, 3, 4, 4), normalize="bad"), ValueError, "normalize must be one of"),
    ("negative eps", lambda: dict(x=torch.ones(2, 3, 4, 4), eps=-1e-5), ValueError, "eps must be >= 0"),
    ("nan eps", lambda: dict(x=torch.ones(2, 3, 4, 4), eps=float("nan")), TypeError, "eps must be a finite number"),
    ("unbiased 1x1", lambda: dict(x=torch.ones(2, 3, 1, 1), unbiased=True), ValueError, "unbiased"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.culture_stats(**make(), backend=backend)
