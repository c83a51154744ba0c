"""upfirdn2d: every backend against the float64 reference, its autograd to the second order, the
resampling helpers and setup_filter, and bad input."""

import functools
import math

import pytest
import torch

from culturegan import ops
from helpers import (BACKENDS, CPU_BACKENDS, DTYPES, FAST_BACKENDS, NOT_INTERPRETED, assert_close,
                     assert_compiles_like_eager, assert_gradcheck_and_gradgradcheck, assert_within, bad_input_params,
                     interpreted, make_layout, native_op, poison_allocator, skip_unless_registered, three_runs)

# (up, down, padding, filter shape, flip_filter, gain): NVlabs' upsample2d, downsample2d and filter2d
# with the 4x4 binomial filter, the identity, anisotropic factors with odd filters, 1-D separable
# filters, negative padding (cropping), and up and down together.
GEOMETRIES = [
    pytest.param(2, 1, [2, 1, 2, 1], (4, 4), False, 4.0, id="upsample2d"),
    pytest.param(1, 2, [1, 1, 1, 1], (4, 4), False, 1.0, id="downsample2d"),
    pytest.param(1, 1, [2, 1, 2, 1], (4, 4), True, 1.0, id="filter2d-flip"),
    pytest.param(1, 1, 0, (1, 1), False, 1.0, id="identity"),
    pytest.param((3, 2), (1, 2), [1, 2, 0, 3], (3, 5), True, 0.7, id="anisotropic-odd"),
    pytest.param(2, 3, [-1, 2, 3, -2], (4,), False, 2.5, id="separable-crop-up-down"),
    pytest.param(1, 1, [-2, -1, 0, -1], (2, 3), False, 1.0, id="crop"),
    pytest.param((1, 3), (2, 1), [0, 4, 1, 1], (5,), True, 1.0, id="separable-odd"),
    pytest.param((1, 3), (3, 1), [2, 1, 0, 3], (3, 4), False, 1.5, id="anisotropic-up-down"),
    # From SEPARABLE_PASSES_FROM taps a 1-D filter runs as two passes, one per axis.
    pytest.param((2, 1), (1, 2), [9, 7, 8, 8], (16,), True, 3.0, id="separable-two-passes"),
]
# (shape, layout): odd sizes, a 1x1 image, channels_last and strided views.
CASES = [
    ((2, 3, 5, 7), "contiguous"),
    ((1, 2, 1, 1), "contiguous"),
    ((2, 5, 4, 6), "channels_last"),
    ((2, 3, 6, 5), "strided"),
]
# Larger planes: several parallel tasks, the vectorised loops' bodies and remainders.
LARGE_CASES = [((1, 5, 37, 67), "contiguous"), ((2, 37, 9, 13), "channels_last")]


def output_hw(shape, up, down, padding, filter_shape):
    """NVlabs' output (height, width) for a geometry of GEOMETRIES."""
    (upx, upy), (downx, downy) = ((v, v) if isinstance(v, int) else v for v in (up, down))
    padx0, padx1, pady0, pady1 = [padding] * 4 if isinstance(padding, int) else padding
    filter_h, filter_w = filter_shape[0], filter_shape[-1]
    return ((shape[2] * upy + pady0 + pady1 - filter_h) // downy + 1,
            (shape[3] * upx + padx0 + padx1 - filter_w) // downx + 1)


def inputs(shape, layout, dtype, device, filter_shape, requires_grad=False, make_filter=torch.randn):
    # Made in float32, then cast: the float64 reference sees the same rounded values.
    x = make_layout(torch.randn(shape, device=device).to(dtype), layout).requires_grad_(requires_grad)
    return x, make_filter(filter_shape, device=device)


def rank_one_filter(filter_shape, device, perturbation=0.0):
    """An outer product of random taps, as setup_filter makes NVlabs' 4x4 binomial (the CPU kernel
    runs it as a column pass and a row pass), in float64 so that it is of rank 1 to float64's
    rounding too; `perturbation` added to one tap makes it rank 2, too far from rank 1 for the
    two passes to give the direct sum."""
    filter_h, filter_w = filter_shape
    f = torch.outer(torch.randn(filter_h, dtype=torch.float64), torch.randn(filter_w, dtype=torch.float64))
    f[filter_h // 2, filter_w // 2] += perturbation * f.abs().max()
    return f.to(device)


def reference64(x, f, *arguments):
    return ops.upfirdn2d_reference(x.detach().double(), f.double(), *arguments)


def vjp64(x, f, grad, *arguments):
    """The reference's gradient of x for `grad`, in float64."""
    x64 = x.detach().double().requires_grad_()
    return torch.autograd.grad(ops.upfirdn2d_reference(x64, f.double(), *arguments), x64, grad.double())[0]


def expected_layout(x):
    """The kernels' output layout: x's when dense, contiguous for a strided x."""
    if not x.is_contiguous() and x.movedim(1, -1).is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def check_forward(device, backend, dtype, cases, geometry, make_filter=torch.randn):
    """Every case of `cases` whose output is not empty, against the float64 reference, allowing the
    dtype's tolerance relative to the sum of the terms' magnitudes (assert_within): the reference
    backend itself convolves in the half types."""
    up, down, padding, filter_shape, flip, gain = geometry
    checked = 0
    for shape, layout in cases:
        if min(output_hw(shape, up, down, padding, filter_shape)) < 1:
            continue  # rejected: see test_bad_input_raises_clear_error
        x, f = inputs(shape, layout, dtype, device, filter_shape, make_filter=make_filter)
        poison_allocator(device, x.numel() * 16, dtype)
        y = ops.upfirdn2d(x, f, up, down, padding, flip, gain, backend=backend)
        what = f"{backend}, x {shape} {layout}"
        assert y.dtype == dtype and y.device == x.device, what
        if backend != "reference":
            assert y.is_contiguous(memory_format=expected_layout(x)), what
        expected = reference64(x, f, up, down, padding, flip, gain)
        assert_within(y, expected, reference64(x.abs(), f.abs(), up, down, padding, flip, gain), dtype, what)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("up, down, padding, filter_shape, flip, gain", GEOMETRIES)
def test_forward_matches_reference(device, backend, dtype, up, down, padding, filter_shape, flip, gain):
    check_forward(device, backend, dtype, CASES, (up, down, padding, filter_shape, flip, gain))


@pytest.mark.parametrize("device, backend", [p for p in NOT_INTERPRETED if p.values[1] != "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("up, down, padding, filter_shape, flip, gain",
                         GEOMETRIES[:3] + GEOMETRIES[5:6] + GEOMETRIES[-1:])
def test_forward_matches_reference_on_larger_planes(device, backend, dtype, up, down, padding, filter_shape, flip,
                                                    gain):
    check_forward(device, backend, dtype, LARGE_CASES, (up, down, padding, filter_shape, flip, gain))


# The 2-D geometries, whose filters may be of rank 1 (see rank_one_filter).
TWO_D_GEOMETRIES = [g for g in GEOMETRIES if len(g.values[3]) == 2 and min(g.values[3]) > 1]
PERTURBATIONS = [pytest.param(0.0, id="rank-one"), pytest.param(1e-3, id="nearly-rank-one")]


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("perturbation", PERTURBATIONS)
@pytest.mark.parametrize("up, down, padding, filter_shape, flip, gain", TWO_D_GEOMETRIES)
def test_rank_one_filters_match_reference(device, backend, dtype, perturbation, up, down, padding, filter_shape,
                                          flip, gain):
    make_filter = functools.partial(rank_one_filter, perturbation=perturbation)
    check_forward(device, backend, dtype, CASES + LARGE_CASES, (up, down, padding, filter_shape, flip, gain),
                  make_filter)


def check_gradient(device, backend, dtype, layout, geometry, make_filter=torch.randn):
    up, down, padding, filter_shape, flip, gain = geometry
    x, f = inputs((2, 3, 7, 9), layout, dtype, device, filter_shape, requires_grad=True, make_filter=make_filter)
    y = ops.upfirdn2d(x, f, up, down, padding, flip, gain, backend=backend)
    grad = torch.randn_like(y)
    (grad_x,) = torch.autograd.grad(y, x, grad)
    arguments = (up, down, padding, flip, gain)
    assert grad_x.dtype == dtype
    assert_within(grad_x, vjp64(x, f, grad, *arguments), vjp64(x, f.abs(), grad.abs(), *arguments), dtype,
                  f"{backend} grad x")


@pytest.mark.parametrize("device, backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("up, down, padding, filter_shape, flip, gain",
                         GEOMETRIES[:2] + GEOMETRIES[5:6] + GEOMETRIES[-1:])
def test_gradient_matches_reference(device, backend, dtype, layout, up, down, padding, filter_shape, flip, gain):
    check_gradient(device, backend, dtype, layout, (up, down, padding, filter_shape, flip, gain))


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("up, down, padding, filter_shape, flip, gain", TWO_D_GEOMETRIES)
def test_rank_one_gradient_matches_reference(device, backend, dtype, layout, up, down, padding, filter_shape, flip,
                                             gain):
    check_gradient(device, backend, dtype, layout, (up, down, padding, filter_shape, flip, gain), rank_one_filter)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)  # the reference's autograd is torch's
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("up, down, padding, filter_shape, flip, gain", [GEOMETRIES[0], GEOMETRIES[1], GEOMETRIES[5]])
def test_gradcheck_and_gradgradcheck_float64(device, backend, layout, up, down, padding, filter_shape, flip, gain):
    x, f = inputs((1, 2, 4, 3), layout, torch.float64, device, filter_shape, requires_grad=True)
    f = f.double()

    def fn(x):
        return ops.upfirdn2d(x, f, up, down, padding, flip, gain, backend=backend)

    assert_gradcheck_and_gradgradcheck(fn, (x,), device, backend)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("make_filter", [torch.randn, rank_one_filter], ids=["any", "rank-one"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_output_does_not_depend_on_the_thread_count(device, backend, make_filter, layout):
    x, f = inputs((2, 5, 13, 17), layout, torch.float32, device, (4, 4), make_filter=make_filter)
    first, again, single = three_runs(lambda: ops.upsample2d(x, f, backend=backend))
    assert torch.equal(first, again) and torch.equal(first, single)


# Filters that look rank 1 to a test relative to the largest tap only: a diagonal with one tiny
# tap (with up = 2 every output reads one tap, so an output reading only the tiny one shows it
# replaced by 0), and non-finite taps (a NaN or an infinity must reach the outputs that read it).
# The kernels never multiply the zeros that up inserts (the reference does: inf * 0 is NaN), so
# for non-finite taps the test finds the outputs that read them with a huge finite tap in their
# place: exactly those must be non-finite (the reference backend's NaN spreads further). Both
# layouts must agree.
NOT_RANK_ONE = [pytest.param([[1e-7, 0.0], [0.0, 1.0]], id="tiny-diagonal"),
                pytest.param([[float("nan"), 1.0], [2.0, 3.0]], id="nan"),
                pytest.param([[float("inf"), 1.0], [2.0, 3.0]], id="inf")]


@pytest.mark.parametrize("device, backend", NOT_INTERPRETED)
@pytest.mark.parametrize("taps", NOT_RANK_ONE)
def test_filters_not_of_rank_one_keep_every_tap(device, backend, taps):
    x = torch.randn(1, 2, 3, 3, device=device)
    f = torch.tensor(taps, device=device)
    y = ops.upfirdn2d(x, f, up=2, backend=backend)
    channels_last = ops.upfirdn2d(x.contiguous(memory_format=torch.channels_last), f, up=2, backend=backend)
    torch.testing.assert_close(y, channels_last, rtol=1e-6, atol=0, equal_nan=True)
    if f.isfinite().all():
        expected = ops.upfirdn2d_reference(x.double(), f.double(), up=2)
        torch.testing.assert_close(y.double(), expected, rtol=1e-6, atol=0)
    elif backend != "reference":
        marked = torch.where(f.isfinite(), f, 1e30).double()
        reads = ops.upfirdn2d_reference(x.double(), marked, up=2).abs() > 1e20
        assert reads.any() and torch.equal(~y.isfinite(), reads)


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_no_filter_is_the_identity_filter(device, backend):
    x, _ = inputs((2, 3, 4, 5), "contiguous", torch.float32, device, (1,))
    y = ops.upfirdn2d(x, None, 2, 1, 0, gain=2.0, backend=backend)
    expected = torch.zeros(2, 3, 8, 10, device=device)
    expected[:, :, ::2, ::2] = 2 * x
    assert torch.equal(y, expected)


@pytest.mark.parametrize("device, backend", FAST_BACKENDS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(device, backend, layout):
    op = native_op("upfirdn2d", backend)
    x, f = inputs((2, 3, 5, 4), layout, torch.float32, device, (4, 4), requires_grad=True)
    torch.library.opcheck(op, (x, f, [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0))
    if not interpreted(device, backend):  # each opcheck runs the op a dozen times
        torch.library.opcheck(op, (x, f[0], [1, 2], [3, 1], [-1, 2, 0, 1], True, 0.5))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_torch_compile_fullgraph(device, backend):
    f = ops.setup_filter([1, 3, 3, 1], device=device)

    def resample(x):
        return ops.downsample2d(ops.upsample2d(x, f, backend=backend) * 2.0, f, backend=backend).square().mean()

    x, _ = inputs((2, 3, 6, 5), "contiguous", torch.float32, device, (1,), requires_grad=True)
    assert_compiles_like_eager(resample, (x,))


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
def test_the_filter_gets_no_gradient(device, backend):
    x, f = inputs((1, 2, 4, 4), "contiguous", torch.float32, device, (3, 3))
    with pytest.raises(ValueError, match="f is a fixed filter and gets no gradient"):
        ops.upfirdn2d(x, f.requires_grad_(), backend=backend)
    if backend != "reference":  # the registered op, called directly, refuses it as well
        skip_unless_registered(f"upfirdn2d{'_triton' if backend == 'triton' else ''}")
        with pytest.raises(ValueError, match="f is a fixed filter and gets no gradient"):
            native_op("upfirdn2d", backend)(x, f, [1, 1], [1, 1], [0, 0, 0, 0], False, 1.0)


# ------------------------------------------------------------------- helpers, setup_filter

@pytest.mark.parametrize("device, backend", [p for p in CPU_BACKENDS if not interpreted(*p.values)])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (8, 8)], ids=str)
@pytest.mark.parametrize("taps", [[1, 3, 3, 1], [1, 2, 1], [1] * 8], ids=["4-tap", "3-tap", "8-tap-separable"])
def test_resampling_helpers_keep_their_sizes(device, backend, size, taps):
    f = ops.setup_filter(taps)
    x = torch.randn(2, 3, *size)
    height, width = size
    assert ops.upsample2d(x, f, backend=backend).shape[2:] == (2 * height, 2 * width)
    assert ops.upsample2d(x, f, up=(3, 1), backend=backend).shape[2:] == (height, 3 * width)
    assert ops.filter2d(x, f, backend=backend).shape[2:] == size
    assert ops.filter2d(x, f, padding=(1, 2), backend=backend).shape[2:] == (height + 4, width + 2)
    if min(size) >= 2:
        assert ops.downsample2d(x, f, backend=backend).shape[2:] == (height // 2, width // 2)
        assert ops.downsample2d(x, f, down=(1, 2), padding=[1, 0, 0, 0], backend=backend).shape[2:] == (
            height // 2, width + 1)


def test_resampling_helpers_are_upfirdn2d_with_nvlabs_padding():
    f = ops.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    f64 = f.double()
    reference = ops.upfirdn2d_reference
    assert_close(ops.upsample2d(x, f), reference(x, f64, 2, 1, [2, 1, 2, 1], gain=4), torch.float64)
    assert_close(ops.downsample2d(x, f), reference(x, f64, 1, 2, [1, 1, 1, 1]), torch.float64)
    assert_close(ops.filter2d(x, f, gain=3), reference(x, f64, 1, 1, [2, 1, 2, 1], gain=3), torch.float64)
    # Upsampling keeps the mean brightness of a constant image away from the borders.
    flat = ops.upsample2d(torch.ones(1, 1, 8, 8), f)
    assert torch.allclose(flat[:, :, 2:-2, 2:-2], torch.ones(1, 1, 12, 12))


def test_setup_filter_values():
    binomial = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and torch.equal(f, torch.outer(binomial, binomial) / 64)
    assert torch.equal(ops.setup_filter([1, 3, 3, 1], separable=True), binomial / 8)
    long = ops.setup_filter(list(range(1, 9)))  # >= 8 taps: separable
    assert long.shape == (8,) and torch.allclose(long, torch.arange(1.0, 9.0) / 36)
    assert ops.setup_filter(list(range(1, 9)), separable=False).shape == (8, 8)
    assert torch.allclose(ops.setup_filter([1, 3, 3, 1], gain=4), torch.outer(binomial, binomial) / 16)
    assert torch.allclose(ops.setup_filter([1, 3, 3, 1], separable=True, gain=4), binomial / 4)
    assert torch.equal(ops.setup_filter([1, 2], normalize=False), torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    assert torch.equal(ops.setup_filter([1, 2], normalize=False, flip_filter=True), torch.tensor([[4.0, 2.0],
                                                                                                  [2.0, 1.0]]))
    assert torch.equal(ops.setup_filter(None), torch.ones(1, 1))
    assert torch.equal(ops.setup_filter(2.0), torch.ones(1, 1))


@pytest.mark.parametrize("device, backend", BACKENDS)
def test_separable_filter_equals_its_outer_product(device, backend):
    x, _ = inputs((2, 3, 9, 8), "contiguous", torch.float64, device, (1,))
    taps = [1, 2, 3, 4, 4, 3, 2, 1]  # integers, not normalised: their outer product is exact in float32
    separable = ops.setup_filter(taps, device=device, normalize=False)
    full = ops.setup_filter(taps, device=device, normalize=False, separable=False)
    assert_close(ops.upsample2d(x, separable, backend=backend), ops.upsample2d(x, full, backend=backend),
                 torch.float64)


# ------------------------------------------------------------------------------ bad input

def x4():
    return torch.ones(2, 3, 8, 8)


def f4():
    return torch.ones(4, 4)


BAD_INPUTS = [
    # (description, kwargs maker, exception, message fragment)
    ("x not a tensor", lambda: dict(x=[[1.0]], f=f4()), TypeError, "x must be a torch.Tensor"),
    ("integer x", lambda: dict(x=torch.ones(2, 3, 8, 8, dtype=torch.int32), f=f4()), TypeError,
     "x must be a floating-point tensor"),
    ("rank 3", lambda: dict(x=torch.ones(3, 8, 8), f=f4()), ValueError, "x must have 4 dimensions"),
    ("empty", lambda: dict(x=torch.ones(0, 3, 8, 8), f=f4()), ValueError, "x is empty"),
    ("f not a tensor", lambda: dict(x=x4(), f=[[1.0]]), TypeError, "f must be a torch.Tensor"),
    ("integer f", lambda: dict(x=x4(), f=torch.ones(4, 4, dtype=torch.int64)), TypeError,
     "f must be a floating-point tensor"),
    ("f device", lambda: dict(x=x4(), f=torch.ones(4, 4, device="meta")), ValueError, "f is on meta but x is on cpu"),
    ("f rank 3", lambda: dict(x=x4(), f=torch.ones(1, 4, 4)), ValueError,
     r"f must be a non-empty 1-D \(separable\) or 2-D filter"),
    ("f empty", lambda: dict(x=x4(), f=torch.ones(0)), ValueError, "f must be a non-empty"),
    ("up 0", lambda: dict(x=x4(), f=f4(), up=0), ValueError, "up must be >= 1"),
    ("up triple", lambda: dict(x=x4(), f=f4(), up=(1, 2, 3)), TypeError, r"up must be an int or an \(x, y\) pair"),
    ("up float", lambda: dict(x=x4(), f=f4(), up=1.5), TypeError, r"up must be an int or an \(x, y\) pair"),
    ("up bool", lambda: dict(x=x4(), f=f4(), up=True), TypeError, r"up must be an int or an \(x, y\) pair"),
    ("down 0", lambda: dict(x=x4(), f=f4(), down=(2, 0)), ValueError, "down must be >= 1"),
    ("padding triple", lambda: dict(x=x4(), f=f4(), padding=(1, 2, 3)), TypeError,
     r"padding must be an int, an \(x, y\) pair or \(x0, x1, y0, y1\)"),
    ("padding float", lambda: dict(x=x4(), f=f4(), padding=1.0), TypeError, "padding must be an int"),
    ("gain 0", lambda: dict(x=x4(), f=f4(), gain=0), ValueError, "gain must be > 0"),
    ("gain nan", lambda: dict(x=x4(), f=f4(), gain=math.nan), TypeError, "gain must be a finite number"),
    ("empty output", lambda: dict(x=torch.ones(1, 1, 2, 2), f=f4()), ValueError,
     "upfirdn2d's output would be empty"),
    ("cropped away", lambda: dict(x=x4(), f=None, padding=(0, 0, -4, -4)), ValueError,
     "upfirdn2d's output would be empty"),
]


@pytest.mark.parametrize("device, backend", CPU_BACKENDS)
@pytest.mark.parametrize("make, error, message", bad_input_params(BAD_INPUTS))
def test_bad_input_raises_clear_error(device, backend, make, error, message):
    with pytest.raises(error, match=message):
        ops.upfirdn2d(**make(), backend=backend)


@pytest.mark.parametrize("helper", [ops.upsample2d, ops.downsample2d])
def test_helpers_reject_bad_factors(helper):
    with pytest.raises(ValueError, match="must be >= 1"):
        helper(x4(), f4(), 0)
    with pytest.raises(TypeError, match=r"must be an int or an \(x, y\) pair"):
        helper(x4(), f4(), 2.0)


SETUP_FILTER_BAD = [
    ("3-D taps", lambda: dict(f=torch.ones(2, 2, 2)), "a filter must be finite taps in 0 to 2 dimensions"),
    ("no taps", lambda: dict(f=[]), "a filter must be finite taps"),
    ("infinite tap", lambda: dict(f=[1.0, math.inf]), "a filter must be finite taps"),
    ("sum 0", lambda: dict(f=[1.0, -1.0]), "taps sum to 0 cannot be normalised"),
    ("2-D separable", lambda: dict(f=torch.ones(2, 2), separable=True), "a separable filter must be 1-D"),
]


@pytest.mark.parametrize("make, message", [pytest.param(*row[1:], id=row[0]) for row in SETUP_FILTER_BAD])
def test_setup_filter_rejects_bad_taps(make, message):
    with pytest.raises(ValueError, match=message):
        ops.setup_filter(**make())


# What the registered op gets: lists, f in x's math dtype; the same checks as the public function.
NATIVE_BAD_INPUTS = [
    ("integer x", dict(x=torch.ones(2, 3, 8, 8, dtype=torch.int32)), TypeError, "x must be a floating-point tensor"),
    ("rank 3", dict(x=torch.ones(3, 8, 8)), ValueError, "x must have 4 dimensions"),
    ("empty", dict(x=torch.ones(0, 3, 8, 8)), ValueError, "x is empty"),
    ("f dtype", dict(f=torch.ones(4, 4, dtype=torch.float64)), TypeError,
     r"f must have dtype torch.float32 \(x's math type\), got torch.float64"),
    ("half x, half f", dict(x=torch.ones(2, 3, 8, 8, dtype=torch.half), f=torch.ones(4, 4, dtype=torch.half)),
     TypeError, r"f must have dtype torch.float32 \(x's math type\), got torch.float16"),
    ("f rank 3", dict(f=torch.ones(1, 4, 4)), ValueError, r"f must be a non-empty 1-D \(separable\) or 2-D filter"),
    ("up 0", dict(up=[0, 1]), ValueError, "up must be >= 1"),
    ("down 0", dict(down=[1, 0]), ValueError, "down must be >= 1"),
    ("gain 0", dict(gain=0.0), ValueError, "gain must be > 0"),
    ("empty output", dict(x=torch.ones(1, 1, 2, 2), padding=[0, 0, 0, 0]), ValueError,
     "upfirdn2d's output would be empty"),
]


@pytest.mark.parametrize("device, backend", [p for p in CPU_BACKENDS if p.values[1] != "reference"])
@pytest.mark.parametrize("changes, error, message", bad_input_params(NATIVE_BAD_INPUTS))
def test_registered_op_checks_its_arguments(device, backend, changes, error, message):
    """torch.ops.culturegan.upfirdn2d(_triton) may be called directly: they fail as clearly, with
    the same exception types."""
    skip_unless_registered(f"upfirdn2d{'_triton' if backend == 'triton' else ''}")
    arguments = dict(x=x4(), f=f4(), up=[1, 1], down=[1, 1], padding=[1, 1, 1, 1], flip_filter=False,
                     gain=1.0) | changes
    with pytest.raises(error, match=message):
        native_op("upfirdn2d", backend)(*arguments.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_filter_on_another_device_raises():
    with pytest.raises(ValueError, match="f is on cpu but x is on cuda"):
        ops.upfirdn2d(torch.ones(1, 1, 4, 4, device="cuda"), torch.ones(2, 2))
