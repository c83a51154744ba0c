"""feature_stats: per-(N, C) mean and standard deviation of feature maps, with its reference.

    mean = x.mean over the trailing dims,   std = sqrt(var + eps)     per (n, c)

These are the texture statistics of AdaIN and instance normalisation. Conventions differ
between implementations; this op's defaults are instance normalisation's (biased variance,
``eps=1e-5`` inside the square root, as ``nn.InstanceNorm2d``). AdaIN's reference code
(``calc_mean_std``) uses the unbiased variance with eps inside the root: pass
``unbiased=True``. For eps outside the root, pass ``eps=0`` and add it to the result.

The fast backends read x once and never form E[x^2] - E[x]^2, so inputs with large means
(say 1000 +- 1) keep their precision in float32. The backward
(dx = dmean / HW + dstd * (x - mean) / (d * std), d = HW or HW - 1) is one channel_affine
pass over x on the forward's backend, differentiable again.
"""

from __future__ import annotations

import torch

from culturegan.ops import _backends, _checks, _layout
from culturegan.ops._layout import math_dtype
from culturegan.ops.channel_affine import channel_affine


def feature_stats_reference(x: torch.Tensor, unbiased: bool = False,
                            eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure-torch definition every backend is tested against (autograd by torch)."""
    var, mean = torch.var_mean(x, dim=tuple(range(2, x.dim())), correction=1 if unbiased else 0)
    return mean, torch.sqrt(var + eps)


def check_feature_stats_input(x, unbiased, eps) -> tuple:
    """(x, unbiased, eps) as the kernels take them, checked."""
    _checks.check_channel_tensor(x, "x", min_dim=3, max_dim=4)
    eps = _checks.check_number(eps, "eps", minimum=0.0)
    if unbiased and x[0, 0].numel() < 2:
        raise ValueError(f"unbiased=True needs at least 2 elements per (n, c) to average over, got shape "
                         f"{tuple(x.shape)}")
    return x, bool(unbiased), eps


# ----------------------------------------------------------------------------------- triton

def _triton_forward(x: torch.Tensor, unbiased: bool, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    from culturegan.kernels import feature_stats as kernels

    check_feature_stats_input(x, unbiased, eps)
    layout = _layout.channel_layout(x)
    mean = x.new_empty(x.shape[:2])
    std = x.new_empty(x.shape[:2])
    kernels.forward(layout.tensor, mean, std, layout.inner == 1, unbiased, eps)
    return mean, std


# ------------------------------------------------------------------ fake kernels, autograd

def _fake(x, unbiased, eps):
    return x.new_empty(x.shape[:2]), x.new_empty(x.shape[:2])


def _setup_context(ctx, inputs, output):
    x, unbiased, _ = inputs
    ctx.save_for_backward(x, *output)
    ctx.unbiased = unbiased


def stats_grad(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, grad_mean: torch.Tensor | None,
               grad_std: torch.Tensor | None, unbiased: bool, backend: str) -> torch.Tensor:
    """dx = (x - mean) * grad_std / (d * std) + grad_mean / HW: per-(n, c) factors in x's math
    type, then one pass over x (channel_affine on `backend`), differentiable again."""
    count = x[0, 0].numel()
    math = math_dtype(x.dtype)
    slope = torch.zeros(x.shape[:2], dtype=math, device=x.device)
    offset = torch.zeros_like(slope)
    if grad_std is not None:
        slope = grad_std.to(math) / ((count - 1 if unbiased else count) * std.to(math))
    if grad_mean is not None:
        offset = grad_mean.to(math) / count
    return channel_affine(x, mean.to(math), slope, offset, backend=backend)


def _vjp(ctx, grad_mean, grad_std):
    x, mean, std = ctx.saved_tensors
    return stats_grad(x, mean, std, grad_mean, grad_std, ctx.unbiased, ctx.backend), None, None


KERNEL = _backends.register(_backends.Kernel("feature_stats", _fake, triton=_triton_forward, vjp=_vjp,
                                             setup_context=_setup_context))
OP = _backends.declare(_backends.Op("feature_stats", check_feature_stats_input, feature_stats_reference, KERNEL))


# ----------------------------------------------------------------------------- public API

def feature_stats(x: torch.Tensor, unbiased: bool = False, eps: float = 1e-5, *,
                  backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(N, C) ``(mean, std)`` over the trailing dimensions, ``std = sqrt(var + eps)``.

    Args:
        x: (N, C, L) or (N, C, H, W) float16/bfloat16/float32/float64 tensor (float32
            accumulation for the half types); contiguous, channels_last or strided.
        unbiased: divide the squared deviations by HW - 1 (AdaIN's reference code) instead of
            HW (instance normalisation, the default). Needs HW >= 2.
        eps: added to the variance inside the square root, >= 0.
        backend: "cuda", "triton", "cpu", "reference" or "auto"; None defers to
            ``use_backend`` and CULTUREGAN_BACKEND (see culturegan.ops).

    Returns:
        mean and std, each (N, C) in x's dtype. Differentiable in x.
    """
    return OP(x, unbiased, eps, backend=backend)
