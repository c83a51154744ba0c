"""gram: per-sample Gram matrices of feature maps (Gatys' style statistics), with its reference.

    F = x viewed as (N, C, H*W)   [minus its per-(n, c) mean when center=True]
    G = F F^T / norm               norm = H*W ("hw", the default), C*H*W ("chw") or 1 ("none")

Conventions differ: Gatys et al.'s code divides by H*W, pytorch/examples' fast neural style by
C*H*W, some code not at all; pass ``normalize`` accordingly. Each sample has its own G: never
the tutorial form that folds the batch into one matrix and mixes samples. ``center=True``
gives the covariance matrix (the mean is subtracted before the product, not after, so large
means cost no precision).

The backward is dF = (dG + dG^T) F / norm: one batched GEMM that never materialises more
than the C x C gradient, written with torch ops so it is differentiable again; gram_loss's
backward is this formula.
"""

from __future__ import annotations

import torch

from culturegan.ops import _backends, _checks
from culturegan.ops._layout import math_dtype

NORMALIZATIONS = ("hw", "chw", "none")


def gram_scale(x: torch.Tensor, normalize: str) -> float:
    """1 / norm for the `normalize` convention (see the module docstring)."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(map(repr, NORMALIZATIONS))}, got {normalize!r}")
    spatial = x[0, 0].numel()
    return {"hw": 1.0 / spatial, "chw": 1.0 / (x.shape[1] * spatial), "none": 1.0}[normalize]


def _features(x: torch.Tensor, center: bool, dtype: torch.dtype | None = None) -> torch.Tensor:
    """F = x as (N, C, H*W) (a view for contiguous and channels_last x), centered if asked."""
    features = x.flatten(2) if dtype is None else x.flatten(2).to(dtype)
    return features - features.mean(2, keepdim=True) if center else features


def gram_reference(x: torch.Tensor, normalize: str = "hw", center: bool = False) -> torch.Tensor:
    """The pure-torch definition every backend is tested against (autograd by torch)."""
    return _reference_forward(x, gram_scale(x, normalize), center)


def _reference_forward(x: torch.Tensor, scale: float, center: bool) -> torch.Tensor:
    features = _features(x, center)
    return torch.bmm(features, features.transpose(1, 2)) * scale


def check_gram_input(x, normalize: str, center: bool) -> tuple:
    """(x, scale, center) as the kernels take them, checked."""
    _checks.check_channel_tensor(x, "x", min_dim=3, max_dim=4)
    return x, gram_scale(x, normalize), bool(center)


# ----------------------------------------------------------------------------------- triton

def _triton_forward(x: torch.Tensor, scale: float, center: bool) -> torch.Tensor:
    from culturegan.kernels import gram as kernels

    _checks.check_channel_tensor(x, "x", min_dim=3, max_dim=4)
    _checks.check_number(scale, "scale", minimum=0.0, inclusive=False)
    compute = math_dtype(x.dtype)
    features = _features(x, center, compute) if center else x.flatten(2)
    products = x.new_empty((x.shape[0], x.shape[1], x.shape[1]), dtype=compute)
    kernels.forward(features, products)
    return (products * scale).to(x.dtype)


# ------------------------------------------------------------------ fake kernels, autograd

def _fake(x, scale, center):
    return x.new_empty((x.shape[0], x.shape[1], x.shape[1]))


def _setup_context(ctx, inputs, output):
    x, scale, center = inputs
    ctx.save_for_backward(x)
    ctx.scale, ctx.center = scale, center


def gram_grad(x: torch.Tensor, grad_gram: torch.Tensor, scale: float, center: bool) -> torch.Tensor:
    """dx = scale * (dG + dG^T) F: one batched GEMM, float32 math for the half types."""
    compute = math_dtype(x.dtype)
    features = _features(x, center, compute)
    grad_gram = grad_gram.to(compute)
    # Rows of a centered F have zero mean, so are those of this product: no projection needed.
    # The scale goes on the C x C factor, not on the (N, C, H*W) product: no extra pass over it.
    grad_features = torch.bmm((grad_gram + grad_gram.transpose(1, 2)) * scale, features)
    return grad_features.view(x.shape).to(x.dtype)


def _vjp(ctx, grad_gram):
    (x,) = ctx.saved_tensors
    return gram_grad(x, grad_gram, ctx.scale, ctx.center), None, None


KERNEL = _backends.register(_backends.Kernel("gram", _fake, triton=_triton_forward, vjp=_vjp,
                                             setup_context=_setup_context))
OP = _backends.declare(_backends.Op("gram", check_gram_input, _reference_forward, KERNEL))


# ----------------------------------------------------------------------------- public API

def gram(x: torch.Tensor, normalize: str = "hw", center: bool = False, *,
         backend: str | None = None) -> torch.Tensor:
    """Per-sample Gram matrices ``F F^T / norm`` of x's (N, C, H*W) features, shape (N, C, C).

    Args:
        x: (N, C, L) or (N, C, H, W) float16/bfloat16/float32/float64 tensor; contiguous,
            channels_last or strided. float32 accumulation for the half types; float32 inputs
            are multiplied exactly (no TF32).
        normalize: "hw" (divide by H*W, default), "chw" (by C*H*W) or "none".
        center: subtract each (n, c) mean over H*W first, giving the covariance.
        backend: "cuda" (cuBLAS), "triton" (symmetric tiles), "cpu" (BLAS), "reference" or
            "auto"; None defers to ``use_backend`` and CULTUREGAN_BACKEND.

    Differentiable in x to any order.
    """
    return OP(x, normalize, center, backend=backend)
