"""culture_stats: the texture statistics of a feature map, mean, std and Gram, in one call.

    mean, std = feature_stats(x, unbiased, eps);   G = gram(x, normalize, center)

Every culture loss and profile in culturegan reads these three together. The triton and cuda
backends compute all three from ONE read of x: their Gram kernels (symmetric tiles) keep the
row statistics of the tiles they load. The cuda kernel runs on the CUDA cores, which is how
cuBLAS multiplies float32 too (no TF32); for float16/bfloat16 the cuda backend takes cuBLAS's
tensor-core GEMM and the one-pass statistics kernel instead (two reads: the tensor cores are
worth far more than the read). The cpu backend takes the statistics kernel and the BLAS GEMM.
center=True needs the mean before the product, so it always takes two reads. See
feature_stats and gram for the conventions.
"""

from __future__ import annotations

import torch

from culturegan.ops import _backends, _checks
from culturegan.ops._layout import math_dtype
from culturegan.ops.feature_stats import check_feature_stats_input, feature_stats, feature_stats_reference, stats_grad
from culturegan.ops.gram import check_gram_input, gram, gram_grad, gram_reference, gram_scale

Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def culture_stats_reference(x: torch.Tensor, unbiased: bool = False, eps: float = 1e-5, normalize: str = "hw",
                            center: bool = False) -> Stats:
    """The pure-torch definition every backend is tested against."""
    return (*feature_stats_reference(x, unbiased, eps), gram_reference(x, normalize, center))


def _triton_fused(x: torch.Tensor, unbiased: bool, eps: float,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from culturegan.kernels import culture_stats as kernels

    check_feature_stats_input(x, unbiased, eps)
    _checks.check_number(scale, "scale", minimum=0.0, inclusive=False)
    samples, channels = x.shape[:2]
    products = x.new_empty((samples, channels, channels), dtype=math_dtype(x.dtype))
    mean, std = x.new_empty((samples, channels)), x.new_empty((samples, channels))
    kernels.forward(x.flatten(2), products, mean, std, unbiased, eps)
    return mean, std, (products * scale).to(x.dtype)


def _fake(x, unbiased, eps, scale):
    samples, channels = x.shape[:2]
    return x.new_empty((samples, channels)), x.new_empty((samples, channels)), x.new_empty((samples, channels, channels))


def _setup_context(ctx, inputs, output):
    x, unbiased, _, scale = inputs
    ctx.save_for_backward(x, *output[:2])
    ctx.unbiased, ctx.scale = unbiased, scale


def _vjp(ctx, grad_mean, grad_std, grad_gram):
    x, mean, std = ctx.saved_tensors
    grad_x = stats_grad(x, mean, std, grad_mean, grad_std, ctx.unbiased, ctx.backend)
    if grad_gram is not None:
        grad_x = grad_x + gram_grad(x, grad_gram, ctx.scale, False)
    return grad_x, None, None, None


# One read of x for all three: the CUDA C++ op (no CPU kernel: the cpu backend composes) and Triton.
FUSED = _backends.register(_backends.Kernel("culture_stats", _fake, triton=_triton_fused, vjp=_vjp,
                                            setup_context=_setup_context))

# The dtypes each backend's one-read kernel takes in culture_stats (see the module docstring).
FUSED_DTYPES = {"triton": (torch.float16, torch.bfloat16, torch.float32, torch.float64),
                "cuda": (torch.float32, torch.float64)}


def _on_backend(backend: str, x, unbiased, eps, normalize, center) -> Stats:
    if not center and x.dtype in FUSED_DTYPES.get(backend, ()):
        return FUSED.on(backend)(x, unbiased, eps, gram_scale(x, normalize))
    mean, std = feature_stats(x, unbiased, eps, backend=backend)
    return mean, std, gram(x, normalize, center, backend=backend)


def _check(x, unbiased, eps, normalize, center) -> tuple:
    x, unbiased, eps = check_feature_stats_input(x, unbiased, eps)
    check_gram_input(x, normalize, center)
    return x, unbiased, eps, normalize, bool(center)


OP = _backends.declare(_backends.Op("culture_stats", _check, culture_stats_reference, _on_backend))


def culture_stats(x: torch.Tensor, unbiased: bool = False, eps: float = 1e-5, normalize: str = "hw",
                  center: bool = False, *, backend: str | None = None) -> Stats:
    """``(mean, std, gram)`` of x: (N, C), (N, C) and (N, C, C), in x's dtype.

    Arguments as for ``feature_stats`` (unbiased, eps) and ``gram`` (normalize, center), all on
    the same backend. Differentiable in x.
    """
    return OP(x, unbiased, eps, normalize, center, backend=backend)
