"""Shared test helpers: tolerances by dtype, the (device, backend) matrix, the base cases of the
ops' tests, and the checks many op tests make."""

import math

import pytest
import torch

from culturegan import ops

# (atol, rtol) of a backend's output against the float64 reference, by input dtype. The half
# types are rounded once on output (float32 math inside), so one ulp of the output dominates.
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}
# The input dtypes every op takes, on every backend.
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
HALVES = (torch.float16, torch.bfloat16)
LAYOUTS = ("contiguous", "channels_last", "strided")  # the layouts make_layout makes
# shape, layout: the cases of every op over (N, C, ...) inputs: odd sizes, 1x1, C = 1, 3-D and
# 4-D inputs, channels_last and strided views. Small enough for the Triton interpreter.
BASE_CASES = [
    ((2, 3, 5, 7), "contiguous"),
    ((1, 1, 1, 1), "contiguous"),
    ((3, 1, 4, 4), "channels_last"),
    ((2, 5, 3, 3), "channels_last"),
    ((1, 7, 1, 1), "channels_last"),
    ((2, 4, 3, 5), "strided"),
    ((2, 5, 9), "contiguous"),
    ((2, 5, 9), "channels_last"),
    ((3, 2, 7), "strided"),
]
# The Gram matrix ops' tile edges: C over one of Triton's 32-channel tiles, H*W over several of
# its 32-position K blocks.
GRAM_TILE_CASES = [((2, 40, 3, 3), "contiguous"), ((1, 3, 8, 8), "strided")]
# Features x that every op over (N, C, H, W) or (N, C, L) features rejects: (description, kwargs
# maker, exception, message fragment).
BAD_FEATURES = [
    ("integer x", lambda: dict(x=torch.ones(2, 3, 4, 4, dtype=torch.int32)), TypeError,
     "x must be a floating-point tensor"),
    ("bool x", lambda: dict(x=torch.ones(2, 3, 4, dtype=torch.bool)), TypeError, "x must be a floating-point tensor"),
    ("complex x", lambda: dict(x=torch.ones(2, 3, 4, dtype=torch.complex64)), TypeError,
     "x must be a floating-point tensor"),
    ("rank 2", lambda: dict(x=torch.ones(2, 3)), ValueError, "x must have 3 or 4 dimensions"),
    ("rank 5", lambda: dict(x=torch.ones(1, 2, 2, 2, 2)), ValueError, "x must have 3 or 4 dimensions"),
    ("empty", lambda: dict(x=torch.ones(0, 3, 4, 4)), ValueError, "x is empty"),
    ("empty plane", lambda: dict(x=torch.ones(2, 3, 0)), ValueError, "x is empty"),
    ("no channels", lambda: dict(x=torch.ones(2, 0, 3, 3)), ValueError, "x is empty"),
    ("x not a tensor", lambda: dict(x=[[[1.0, 2.0]]]), TypeError, "x must be a torch.Tensor"),
]
# instance_norm_act's normalisations (plain, affine, AdaIN) and activations (name, negative slope).
NORMS = ["plain", "affine", "adain"]
ACTIVATIONS = [("relu", 0.2), ("leaky_relu", 0.2), ("none", 0.2)]


def interpreted(device, backend):
    """Triton on CPU tensors runs in the interpreter: such tests get small shapes only."""
    return device == "cpu" and backend == "triton"


def _backend_params() -> list:
    """(device, backend) pairs for every backend, skipped where it cannot run, with the reason."""
    params = []
    for device in ("cpu", "cuda"):
        for backend in ops.BACKENDS:
            if backend in ("cpu", "cuda") and backend != device:
                continue
            reason = ops.unavailable_reason(backend, device)
            if device == "cuda" and not torch.cuda.is_available():
                reason = "no CUDA device is available"
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            params.append(pytest.param(device, backend, id=f"{device}-{backend}", marks=marks))
    return params


BACKENDS = _backend_params()
FAST_BACKENDS = [p for p in BACKENDS if p.values[1] != "reference"]
TRITON = [p for p in BACKENDS if p.values[1] == "triton"]
NOT_TRITON = [p for p in BACKENDS if p.values[1] != "triton"]
NOT_INTERPRETED = [p for p in BACKENDS if not interpreted(*p.values)]
CPU_BACKENDS = [p for p in BACKENDS if p.values[0] == "cpu"]  # enough for argument checks


def native_op(name, backend):
    """The registered op that runs `name` on `backend`: culturegan::<name>_triton for triton, the
    C++ op culturegan::<name> for cpu and cuda."""
    return getattr(torch.ops.culturegan, f"{name}_triton" if backend == "triton" else name)


def skip_unless_registered(name):
    """Skips the test where the op culturegan::<name> (C++, or Triton for *_triton) cannot run CPU tensors."""
    reason = ops.unavailable_reason("triton" if name.endswith("_triton") else "cpu", "cpu")
    if reason:
        pytest.skip(reason)


def bad_input_params(bad_inputs):
    """(make, error, message) params, each named by its description, from (description, make,
    error, message) rows."""
    return [pytest.param(*row[1:], id=row[0]) for row in bad_inputs]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


def assert_close_to_conv(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype, what: str = "",
                         half_scale: float = 4.0) -> None:
    """A convolution's output sums C_in * k * k products: the tolerances scale with the output's
    magnitude, and by half_scale for the half types (each intermediate rounded to them counts)."""
    atol, rtol = TOLERANCES[dtype]
    scale = half_scale if dtype in HALVES else 1.0
    torch.testing.assert_close(actual.double(), expected64, atol=atol * scale * (1 + expected64.abs().max().item()),
                               rtol=rtol * scale, msg=lambda m: f"{what}: {m}")


def poison_allocator(device: str, numel: int, dtype: torch.dtype) -> None:
    """Fills and frees a block so that a kernel output allocated next from the caching
    allocator (CUDA) starts as NaN: an element the kernel forgets to write then fails the
    comparison. On the CPU it exercises the same path at no cost."""
    block = torch.full((numel + 256,), float("nan"), dtype=dtype, device=device)
    del block


def make_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as `t` in another memory layout."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.movedim(1, -1).contiguous().movedim(-1, 1)
    if layout == "strided":  # a non-dense view: every other element of a wider tensor
        wide = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype, device=t.device)
        view = wide[..., ::2]
        view.copy_(t)
        return view
    raise ValueError(layout)


def offset_features(shape, layout, dtype, device, requires_grad=False, scale=3.0, offset=0.5):
    """scale * N(0, 1) plus a random offset per channel (so that centering matters), made in
    float32 and then cast: the half types see rounded values, and so does the float64 reference
    computed from the same tensor."""
    x = scale * torch.randn(shape, device=device)
    x = x + offset * torch.randn(shape[:2] + (1,) * (len(shape) - 2), device=device)
    return make_layout(x.to(dtype), layout).requires_grad_(requires_grad)


def conv_inputs(geometry, dtype, device, layout="contiguous", transposed=False):
    """x (2 samples), a weight (for a transposed convolution if asked) scaled to keep the outputs'
    variance near x's, and a bias for a convolution of geometry (C_in, C_out, H, W, kernel, ...):
    made in float32, then cast."""
    c_in, c_out, h, w, k = geometry[:5]
    x = make_layout(torch.randn(2, c_in, h, w, device=device).to(dtype), layout)
    shape = (c_in, c_out, k, k) if transposed else (c_out, c_in, k, k)
    weight = (torch.randn(shape, device=device) / math.sqrt(c_in * k * k)).to(dtype)
    bias = torch.randn(c_out, device=device).to(dtype)
    return x, weight, bias


def norm_arguments(norm, batch, channels, dtype, device, affine_names=("weight", "bias")):
    """instance_norm_act's parameters for `norm`: none ("plain"), a per-channel weight and bias
    named `affine_names` ("affine"), or per-sample style codes ("adain"), in float32 (float64 for
    float64 x) as the networks that compute style codes give them."""
    if norm == "affine":
        weight, bias = affine_names
        return {weight: (1 + 0.3 * torch.randn(channels, device=device)).to(dtype),
                bias: torch.randn(channels, device=device).to(dtype)}
    if norm == "adain":
        style = torch.promote_types(dtype, torch.float32)
        return dict(style_scale=(1 + 0.3 * torch.randn(batch, channels, device=device)).to(style),
                    style_shift=torch.randn(batch, channels, device=device).to(style))
    return {}


def constant_planes(kind, hw, device):
    """(values, x): a large random value per (n, c) of 2 x 3 planes, as (2, 3, 1, 1), and x, those
    planes of size hw, "filled" (dense) or "expanded" (stride 0 over H, W)."""
    values = 1000 * torch.randn(2, 3, 1, 1, device=device)
    x = values.expand(2, 3, *hw)
    return values, (x.contiguous() if kind == "filled" else x)


def three_runs(run):
    """run() twice, then once on a single CPU thread: a deterministic op gives the same bits all
    three times."""
    first, again = run(), run()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return first, again, run()
    finally:
        torch.set_num_threads(threads)


def assert_gradcheck_and_gradgradcheck(fn, inputs, device, backend):
    """First and second derivatives against finite differences (of random projections only in
    the slow Triton interpreter)."""
    fast = interpreted(device, backend)
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast)


def inner_size(shape):
    """The number of elements per (n, c): H*W, or L."""
    return math.prod(shape[2:])


def features64(x, center):
    """x as float64 (N, C, H*W) features, centered if asked: the Gram reference's operand."""
    f = x.detach().double().flatten(2)
    return f - f.mean(2, keepdim=True) if center else f


def arbitrary_strides(t, order, step):
    """t's values in a view whose dims lie in memory in `order` (outermost first), every
    `step`-th element of its innermost one: any dense permutation, with gaps when step > 1."""
    storage = [t.shape[d] for d in order]
    storage[-1] *= step
    wide = torch.empty(storage, dtype=t.dtype, device=t.device)
    view = wide[..., ::step].permute([order.index(d) for d in range(t.dim())])
    view.copy_(t)
    assert view.shape == t.shape
    return view


def scale_of(x, normalize):
    """1 / norm of gram's `normalize` convention, for x."""
    hw = inner_size(x.shape)
    return {"hw": 1.0 / hw, "chw": 1.0 / (x.shape[1] * hw), "none": 1.0}[normalize]


def gram_bound(x, normalize, center):
    """B_ij = sum_k |F_ik| |F_jk| * scale in float64: the magnitude of the terms of G_ij."""
    f = features64(x, center).abs()
    return torch.bmm(f, f.transpose(1, 2)) * scale_of(x, normalize)


def assert_within(actual, expected, bound, dtype, what=""):
    """|actual - expected| <= rtol * bound + atol * max(bound), elementwise."""
    atol, rtol = TOLERANCES[dtype]
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = (actual.double() - expected).abs()
    allowed = rtol * bound + atol * bound.max()
    bad = ~(error <= allowed)  # NaN fails too
    if bad.any():
        worst = torch.where(bad, (error - allowed).nan_to_num(math.inf), -math.inf).argmax()
        got, want, diff, limit = (t.flatten()[worst].item() for t in (actual, expected, error, allowed))
        index = tuple(int(i) for i in torch.unravel_index(worst, error.shape))
        raise AssertionError(f"{what}: {int(bad.sum())} of {error.numel()} elements differ; at {index}: "
                             f"got {got:.6g}, expected {want:.6g}, |diff| {diff:.3g} > {limit:.3g} allowed")


def assert_compiles_like_eager(fn, inputs, dtype=torch.float32):
    """torch.compile(fn, fullgraph=True) gives fn's scalar value and its gradients in `inputs`."""
    compiled = torch.compile(fn, fullgraph=True)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    expected_loss = fn(*inputs)
    expected = torch.autograd.grad(expected_loss, inputs)
    assert_close(loss, expected_loss, dtype)
    for got, want in zip(grads, expected):
        # a compiled graph may sum in another order: an element's error scales with the largest
        # terms summed (a small element left by cancellation among gradients of 40 is off by
        # their rounding, not its own)
        scale = want.abs().max().clamp_min(1)
        assert_close(got / scale, want / scale, dtype)


def culture_images(culture: str, count: int, offset: int = 0, size: int = 48) -> torch.Tensor:
    """(count, 3, size, size) in [-1, 1]: procedural images offset..offset+count-1 of a culture."""
    import numpy as np

    from culturegan.datasets import culture_image

    pictures = [np.asarray(culture_image(culture, offset + i, size), dtype=np.float32) for i in range(count)]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2) / 127.5 - 1
