"""Shared test helpers: tolerances by dtype and the (device, backend) matrix."""

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
# Backends that support float64 (all of them here; kept explicit for ops that do not).
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def backend_params() -> list:
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


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True,
                               msg=lambda m: f"{what}: {m}")


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


def interpreted(device, backend):
    """Triton on CPU tensors runs in the interpreter: such tests get small shapes only."""
    return device == "cpu" and backend == "triton"


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
        assert_close(got, want, dtype)


def culture_images(culture: str, count: int, offset: int = 0, size: int = 48) -> torch.Tensor:
    """(count, 3, size, size) in [-1, 1]: procedural images offset..offset+count-1 of a culture."""
    import numpy as np

    from culturegan.datasets import culture_image

    pictures = [np.asarray(culture_image(culture, offset + i, size), dtype=np.float32) for i in range(count)]
    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2) / 127.5 - 1
