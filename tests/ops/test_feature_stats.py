"""feature_stats: every backend against the pure-torch reference."""


import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from culturegan import ops
from helpers import (BACKENDS, BAD_FEATURES, BASE_CASES, CPU_BACKENDS, DTYPES, FAST_BACKENDS, HALVES, LAYOUTS,
                     NOT_INTERPRETED, TOLERANCES, arbitrary_strides, assert_close, assert_compiles_like_eager,
                     assert_gradcheck_and_gradgradcheck, bad_input_params, constant_planes, inner_size, interpreted,
                     native_op, offset_features, poison_allocator, skip_unless_registered, three_runs)

EPS = 1e-5
# The base cases (the 1x1 ones: biased only), a one-column strided plane, an 8x8 plane and L = 1.
CASES = BASE_CASES + [((2, 3, 6, 1), "strided"), ((2, 4, 8, 8), "contiguous"), ((4, 3, 1), "contiguous")]
# Large planes (several of the CPU kernel's blocks per (n, c)), not for the interpreter.
LARGE_CASES = [
    ((2, 3, 128, 128), "contiguous"),
    ((2, 3, 128, 128), "channels_last"),
    ((2, 3, 128, 128), "strided"),
    ((2, 3, 5000), "contiguous"),
    ((1, 70, 33, 65), "channels_last"),
]


def reference64(x, unbiased=False, eps=EPS):
    """The reference evaluated in float64 on the same (rounded) inputs."""
    return ops.feature_stats_reference(x.detach().double(), unbiased, eps)


def assert_grad_close(grad_x, ref_x, count, dtype, what=""):
    """dx is ~1/HW: compared times HW (the plane's element count), so that the tolerances
    apply at the gradient's own scale instead of passing anything small."""
    assert_close(grad_x.double() * count, ref_x * count, dtype, what)


def check_gradient(backend, grad_x, x, unbiased, grad_mean, grad_std, what=""):
    """dx of feature_stats(x, unbiased) against the float64 reference on the same inputs."""
    x64 = x.detach().double().requires_grad_()
    mean, std = ops.feature_stats_reference(x64, unbiased)
    (ref_x,) = torch.autograd.grad((mean, std), x64, (grad_mean.double(), grad_std.double()))
    count = inner_size(x.shape)
    if backend != "reference" or x.dtype not in HALVES:
        assert_grad_close(grad_x, ref_x, count, x.dtype, what)
        return
    # The reference backend is torch's autograd in the half type itself: each term of
    # dx * HW = grad_mean + grad_std * (x - mean) * HW / (d * std) is rounded on its own, so its
    # error scales with the terms, not with their sum, which can cancel; and at large HW the
    # factor grad_std / (d * std) is a float16 subnormal, with an absolute spacing `tiny`. The
    # fast backends compute dx in float32 and round it once (the strict branch above).
    per_channel = x.shape[:2] + (1,) * (x.dim() - 2)
    divisor = (count - 1 if unbiased else count) * std.detach()
    centered = (x64.detach() - mean.detach().view(per_channel)).abs()
    terms = (grad_mean.double().abs().view(per_channel)
             + (grad_std.double() * count / divisor).abs().view(per_channel) * centered)
    atol, rtol = TOLERANCES[x.dtype]
    tiny = torch.finfo(x.dtype).smallest_normal * torch.finfo(x.dtype).eps
    allowed = atol + rtol * terms + 2 * count * tiny * (1 + centered)
    error = (grad_x.double() - ref_x).abs() * count
    worst = (error - allowed).argmax()
    assert (error <= allowed).all(), (
        f"{what}: |dx - ref| * HW = {error.flatten()[worst]:.3g} > {allowed.flatten()[worst]:.3g} allowed")


def check_outputs(mean, std, x, what=""):
    for name, t in (("mean", mean), ("std", std)):
        assert t.shape == x.shape[:2], f"{what} {name} shape {tuple(t.shape)}"
        assert t.dtype == x.dtype, f"{what} {name} dtype {t.dtype}"
        assert t.device == x.device, f"{what} {name} device {t.device}"


def check_stats(x, unbiased, backend, eps=EPS, what=""):
    """feature_stats(x) on a NaN-poisoned allocator against the float64 reference: (mean, std)."""
    what = what or backend
    poison_allocator(x.device.type, 2 * x.shape[0] * x.shape[1], x.dtype)
    mean, std = ops.feature_stats(x, unbiased, eps, backend=backend)
    check_outputs(mean, std, x, what)
    ref_mean, ref_std = reference64(x, unbiased, eps)
    assert_close(mean, ref_mean, x.dtype, f"{what} mean")
    assert_close(std, ref_std, x.dtype, f"{what} std")
    return mean, std


# ---------------------------------------------------------------------------- forward

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_forward_matches_reference(device, backend, dtype, shape, layout, unbiased):
    x = offset_features(shape, layout, dtype, device)
    if unbiased and inner_size(shape) == 1:
        with pytest.raises(ValueError, match="unbiased"):
            ops.feature_stats(x, unbiased, backend=backend)
        return
    before = x.clone()
    check_stats(x, unbiased, backend)
    assert torch.equal(x, before), "the input was modified"


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", LARGE_CASES, ids=str)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_forward_large_planes(device, backend, dtype, shape, layout, unbiased):
    check_stats(offset_features(shape, layout, dtype, device), unbiased, backend)


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.5, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_eps_is_inside_the_square_root(device, backend, eps, dtype):
    x = offset_features((2, 3, 4, 5), "contiguous", dtype, device)
    mean, std = ops.feature_stats(x, False, eps, backend=backend)
    var = x.double().var((2, 3), unbiased=False)
    assert_close(std, torch.sqrt(var + eps), dtype, "std")
    assert_close(mean, x.double().mean((2, 3)), dtype, "mean")


def test_defaults_are_instance_norm_and_unbiased_is_adain():
    """Defaults: nn.InstanceNorm2d's statistics; unbiased=True: AdaIN's calc_mean_std."""
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    mean, std = ops.feature_stats(x)  # "auto" backend
    normalized = (x - mean[..., None, None]) / std[..., None, None]
    torch.testing.assert_close(normalized, F.instance_norm(x, eps=1e-5))

    n, c = x.shape[:2]
    feat_var = x.view(n, c, -1).var(dim=2) + 1e-5  # AdaIN reference code
    mean, std = ops.feature_stats(x, unbiased=True)
    torch.testing.assert_close(std, feat_var.sqrt())
    torch.testing.assert_close(mean, x.view(n, c, -1).mean(dim=2))


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_large_mean_is_numerically_stable(device, backend, unbiased):
    """1000 + N(0, 1) in float32: E[x^2] - E[x]^2 would lose ~all the digits of var ~ 1."""
    shape = (1, 2, 64, 64) if interpreted(device, backend) else (2, 4, 64, 64)
    x = (1000.0 + torch.randn(shape, device=device)).requires_grad_()
    mean, std = ops.feature_stats(x, unbiased, backend=backend)
    ref_mean, ref_std = reference64(x, unbiased)
    assert_close(mean, ref_mean, torch.float32, f"{backend} mean")
    torch.testing.assert_close(std.double(), ref_std, rtol=1e-4, atol=0.0, msg=lambda m: f"{backend} std: {m}")

    # dx * HW = grad_mean + grad_std * (x - mean) / std: x - mean carries the float32 rounding
    # of the mean (ulp(1000) / 2 = 3e-5, against std ~ 1), hence 1e-4-level tolerances.
    grads = (torch.randn_like(mean), torch.randn_like(std))
    (grad_x,) = torch.autograd.grad((mean, std), x, grads)
    x64 = x.detach().double().requires_grad_()
    (ref_x,) = torch.autograd.grad(ops.feature_stats_reference(x64, unbiased), x64, tuple(g.double() for g in grads))
    count = inner_size(shape)
    torch.testing.assert_close(grad_x.double() * count, ref_x * count, rtol=1e-4, atol=4e-4,
                               msg=lambda m: f"{backend} grad x * HW: {m}")

    # The test can tell: the naive float32 formula is off by far more than the tolerance.
    x = x.detach()
    naive_var = ((x * x).mean((2, 3)) - x.mean((2, 3)) ** 2) * (count / (count - 1) if unbiased else 1.0)
    naive_std = torch.sqrt(naive_var.clamp_min(0) + EPS).double()
    assert ((naive_std - ref_std).abs() / ref_std).max() > 1e-3


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("eps", [0.0, 1e-5])
@pytest.mark.parametrize("kind", ["filled", "expanded"])
def test_constant_planes_have_zero_variance(device, backend, eps, kind):
    """Planes of one (large) value: var is ~0 (never negative: no NaN) and mean is the value."""
    values, x = constant_planes(kind, (8, 8) if interpreted(device, backend) else (64, 64), device)
    for unbiased in (False, True):
        mean, std = ops.feature_stats(x, unbiased, eps, backend=backend)
        assert torch.isfinite(std).all(), f"{backend} std {std}"
        assert_close(mean, values.view(2, 3).double(), torch.float32, f"{backend} mean")
        # What remains of the variance comes from the rounding of the mean: sqrt of it within
        # the mean's tolerance (a naive E[x^2] - E[x]^2 misses by ~0.1-1, or goes negative).
        atol, rtol = TOLERANCES[torch.float32]
        var = std.double() ** 2 - eps
        bound = (atol + rtol * values.view(2, 3).double().abs()) ** 2 + 1e-6 * eps
        assert (var.abs() <= bound).all(), f"{backend} var of a constant plane {var} (bound {bound})"


# ---------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout", CASES, ids=str)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_gradients_match_reference(device, backend, dtype, shape, layout, unbiased):
    if unbiased and inner_size(shape) == 1:
        pytest.skip("unbiased=True needs 2 elements per (n, c)")
    x = offset_features(shape, layout, dtype, device, requires_grad=True)
    grad_mean = torch.randn(shape[:2], device=device).to(dtype)
    grad_std = torch.randn(shape[:2], device=device).to(dtype)
    poison_allocator(device, x.numel(), dtype)
    (grad_x,) = torch.autograd.grad(ops.feature_stats(x, unbiased, backend=backend), x, (grad_mean, grad_std))
    assert grad_x.shape == x.shape and grad_x.dtype == dtype
    check_gradient(backend, grad_x, x, unbiased, grad_mean, grad_std, f"{backend} grad x")


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, layout, scale", [((1, 2, 256, 256), "contiguous", 1.0),
                                                  ((2, 3, 128, 128), "channels_last", 10.0)], ids=str)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_gradients_large_planes(device, backend, dtype, shape, layout, scale, unbiased):
    """HW * std beyond float16's range (65504): a backward that forms HW * std in x's dtype
    overflows it to inf and silently drops the std term of dx."""
    x = offset_features(shape, layout, dtype, device, requires_grad=True, scale=scale)
    grad_mean = torch.randn(shape[:2], device=device).to(dtype)
    grad_std = torch.randn(shape[:2], device=device).to(dtype)
    (grad_x,) = torch.autograd.grad(ops.feature_stats(x, unbiased, backend=backend), x, (grad_mean, grad_std))
    check_gradient(backend, grad_x, x, unbiased, grad_mean, grad_std, f"{backend} grad x")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("output", ["mean", "std"])
def test_gradient_through_one_output(device, backend, output):
    """The other output's gradient is None in the backward: it must count as zero."""
    x = offset_features((2, 3, 4, 5), "channels_last", torch.float32, device, requires_grad=True)
    mean, std = ops.feature_stats(x, True, backend=backend)
    (grad_x,) = torch.autograd.grad((mean if output == "mean" else std).sum(), x)
    x64 = x.detach().double().requires_grad_()
    ref_mean, ref_std = ops.feature_stats_reference(x64, True)
    (ref_x,) = torch.autograd.grad((ref_mean if output == "mean" else ref_std).sum(), x64)
    assert_grad_close(grad_x, ref_x, 20, torch.float32, f"{backend} grad x through {output}")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
@pytest.mark.parametrize("shape, layout", [((2, 3, 3, 4), "contiguous"), ((2, 3, 3, 4), "channels_last"),
                                           ((2, 3, 3, 4), "strided"), ((2, 3, 5), "contiguous")], ids=str)
def test_gradcheck_and_gradgradcheck_float64(device, backend, unbiased, shape, layout):
    x = offset_features(shape, layout, torch.float64, device, requires_grad=True, scale=1.0)
    fn = lambda x: ops.feature_stats(x, unbiased, EPS, backend=backend)  # noqa: E731
    assert_gradcheck_and_gradgradcheck(fn, (x,), device, backend)


# ------------------------------------------------------------------- determinism, opcheck

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_deterministic(device, backend, layout):
    """Twice the same call gives the same bits; so does a single thread (CPU)."""
    shape = (2, 3, 5, 7) if interpreted(device, backend) else (2, 3, 96, 97)
    x = offset_features(shape, layout, torch.float32, device, requires_grad=True)
    grads = (torch.randn(shape[:2], device=device), torch.randn(shape[:2], device=device))

    def run():
        mean, std = ops.feature_stats(x, backend=backend)
        return (mean, std, *torch.autograd.grad((mean, std), x, grads))

    for a, b, c in zip(*three_runs(run)):
        assert torch.equal(a, b)
        assert torch.equal(a, c)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("shape, layout", [((2, 3, 4, 5), "contiguous"), ((2, 3, 4, 5), "channels_last"),
                                           ((2, 3, 4, 5), "strided"), ((2, 3, 7), "contiguous"),
                                           ((2, 3, 7), "channels_last")], ids=str)
def test_opcheck(device, backend, shape, layout):
    op = native_op("feature_stats", backend)
    x = offset_features(shape, layout, torch.float32, device, requires_grad=True)
    torch.library.opcheck(op, (x, False, EPS))
    torch.library.opcheck(op, (x, True, 0.0))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    def adain_loss(content, style):
        c_mean, c_std = ops.feature_stats(content, backend=backend)
        s_mean, s_std = ops.feature_stats(style * 2.0, True, 1e-5, backend=backend)
        normalized = (content - c_mean[..., None, None]) / c_std[..., None, None]
        return (normalized * s_std[..., None, None] + s_mean[..., None, None]).square().mean()

    content = offset_features((2, 3, 4, 4), "contiguous", torch.float32, device, requires_grad=True)
    style = offset_features((2, 3, 5, 3), "channels_last", torch.float32, device, requires_grad=True)
    assert_compiles_like_eager(adain_loss, (content, style))


# ----------------------------------------------------------------------- random shapes

@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), shape=st.lists(st.integers(1, 6), min_size=3, max_size=4), step=st.integers(1, 3),
       unbiased=st.booleans(), eps=st.sampled_from([0.0, 1e-5, 1e-3, 0.5]))
def test_random_shapes_and_strides(device, backend, data, shape, step, unbiased, eps):
    order = data.draw(st.permutations(range(len(shape))), label="memory order")
    x = arbitrary_strides(offset_features(tuple(shape), "contiguous", torch.float32, device), order, step)
    x.requires_grad_()
    if unbiased and inner_size(shape) == 1:
        with pytest.raises(ValueError, match="unbiased"):
            ops.feature_stats(x, unbiased, eps, backend=backend)
        return
    what = f"shape {shape} strides {x.stride()}"
    mean, std = check_stats(x, unbiased, backend, eps, what)
    ref_std = reference64(x, unbiased, eps)[1]

    grads = (torch.randn_like(mean), torch.randn_like(std))
    (grad_x,) = torch.autograd.grad((mean, std), x, grads)
    x64 = x.detach().double().requires_grad_()
    (ref_x,) = torch.autograd.grad(ops.feature_stats_reference(x64, unbiased, eps), x64,
                                   tuple(g.double() for g in grads))
    # Where std is tiny (eps = 0 and HW = 1, or near-equal values), dx ~ (x - mean) / std
    # amplifies float32's rounding of the mean: compare well-conditioned planes only.
    well_conditioned = (ref_std > 0.05).view(ref_std.shape + (1,) * (x.dim() - 2)).expand(x.shape)
    assert_grad_close(grad_x[well_conditioned], ref_x[well_conditioned], inner_size(shape), torch.float32,
                      f"grad x, {what}")


# ------------------------------------------------------------------------------ bad input

BAD_INPUTS = BAD_FEATURES + [
    # (description, kwargs maker, exception, message fragment)
    ("negative eps", lambda: dict(x=torch.ones(2, 3, 4, 4), eps=-1e-5), ValueError, "eps must be >= 0"),
    ("unbiased 1x1", lambda: dict(x=torch.ones(2, 3, 1, 1), unbiased=True), ValueError, "unbiased"),
    ("unbiased L=1", lambda: dict(x=torch.ones(2, 3, 1), unbiased=True), ValueError, "unbiased"),
]
NATIVE_BAD_INPUTS = [b for b in BAD_INPUTS if b[0] != "x not a tensor"]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.feature_stats(**make(), backend=backend)


@pytest.mark.parametrize("name", ["feature_stats", "feature_stats_triton"])
@pytest.mark.parametrize("make, error, message", bad_input_params(NATIVE_BAD_INPUTS))
def test_registered_ops_check_their_arguments(name, make, error, message):
    """Users may call torch.ops.culturegan.* directly: the C++ checks (TORCH_CHECK) and the
    Triton op's name the argument as clearly, with the same exception types."""
    skip_unless_registered(name)
    kwargs = dict(unbiased=False, eps=EPS) | make()
    with pytest.raises(error, match=message):
        getattr(torch.ops.culturegan, name)(kwargs["x"], kwargs["unbiased"], kwargs["eps"])
