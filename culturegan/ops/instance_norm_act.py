"""instance_norm_act: instance normalisation or AdaIN, then ReLU/LeakyReLU, with its reference.

    y = act((x - mean) / std * gamma + beta)          per (n, c); std = sqrt(var + eps), biased

gamma, beta: nn.InstanceNorm2d's affine weight and bias (C,), or AdaIN's style scale and shift
(N, C) (a style code per sample), or none. It matches nn.InstanceNorm2d (biased variance,
eps=1e-5, no running statistics) followed by the activation. The fast backends read x twice
and write y once: feature_stats (one stable pass) and channel_affine (normalise, scale, shift
and activate in one pass); eager torch takes a pass more for the activation. The backward runs
through those ops' own backward (channel_affine and feature_stats); a single fused
normalisation backward kernel is not written yet.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from culturegan.ops import _backends, _checks
from culturegan.ops.channel_affine import channel_affine, math_dtype
from culturegan.ops.feature_stats import feature_stats

ACTIVATIONS = ("relu", "leaky_relu", "none")


def activation_slope(activation: str, negative_slope: float) -> float | None:
    """channel_affine's negative_slope for `activation` (None: no activation)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}, got {activation!r}")
    slope = _checks.check_number(negative_slope, "negative_slope", minimum=0.0)
    return {"relu": 0.0, "leaky_relu": slope, "none": None}[activation]


def _scale_and_shift(x, weight, bias, style_scale, style_shift) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """gamma and beta as (N, C) or (C,) tensors, or None, after checking which ones are given."""
    if (style_scale is None) != (style_shift is None):
        raise ValueError("AdaIN needs both style_scale and style_shift (or neither)")
    if style_scale is not None and (weight is not None or bias is not None):
        raise ValueError("pass either the affine weight/bias (instance norm) or style_scale/style_shift (AdaIN), "
                         "not both")
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None:
            _checks.check_channel_vector(value, name, x, "x")
    for name, value in (("style_scale", style_scale), ("style_shift", style_shift)):
        if value is not None:
            _checks.check_tensor(value, name)
            _checks.check_floating(value, name)
            _checks.check_same_device(value, name, x, "x")
            if value.shape != x.shape[:2]:
                raise ValueError(f"{name} must have shape ({x.shape[0]}, {x.shape[1]}) (one style per sample and "
                                 f"channel), got shape {tuple(value.shape)}")
    return (weight, bias) if style_scale is None else (style_scale, style_shift)


def instance_norm_act_reference(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                                style_scale: torch.Tensor | None = None, style_shift: torch.Tensor | None = None,
                                activation: str = "relu", negative_slope: float = 0.2,
                                eps: float = 1e-5) -> torch.Tensor:
    """The pure-torch definition: F.instance_norm, the scale and shift, the activation."""
    gamma, beta = _gamma_beta(*_scale_and_shift(x, weight, bias, style_scale, style_shift))
    return _reference(x, gamma, beta, activation_slope(activation, negative_slope), eps)


def _reference(x, gamma, beta, slope, eps):
    y = F.instance_norm(x, eps=eps)
    if gamma is not None:
        per_channel = x.shape[:2] + (1,) * (x.dim() - 2)
        y = y * gamma.to(x.dtype).expand(x.shape[:2]).reshape(per_channel)
        y = y + beta.to(x.dtype).expand(x.shape[:2]).reshape(per_channel)
    return y if slope is None else F.leaky_relu(y, slope)


def _gamma_beta(gamma, beta):
    """Both or neither: an affine weight without bias has beta = 0, and the other way round."""
    if gamma is not None and beta is None:
        beta = torch.zeros_like(gamma)
    elif beta is not None and gamma is None:
        gamma = torch.ones_like(beta)
    return gamma, beta


def _on_backend(backend: str, x, gamma, beta, slope, eps):
    mean, std = feature_stats(x, False, eps, backend=backend)
    math = math_dtype(x.dtype)
    scale = 1.0 / std.to(math)
    if gamma is not None:
        scale = scale * gamma.to(math)
    shift = torch.zeros_like(scale) if beta is None else beta.to(math).expand_as(scale)
    return channel_affine(x, mean.to(math), scale, shift, slope, backend=backend)


_backends.register_op("instance_norm_act", {
    **{b: functools.partial(_on_backend, b) for b in _backends.BACKENDS if b != "reference"},
    "reference": _reference,
})


def instance_norm_act(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                      style_scale: torch.Tensor | None = None, style_shift: torch.Tensor | None = None,
                      activation: str = "relu", negative_slope: float = 0.2, eps: float = 1e-5, *,
                      backend: str | None = None) -> torch.Tensor:
    """``act(instance_norm(x) * gamma + beta)``: nn.InstanceNorm2d (+ AdaIN) + activation, fused.

    Args:
        x: (N, C, L) or (N, C, H, W) float16/bfloat16/float32/float64 tensor.
        weight, bias: nn.InstanceNorm2d's affine parameters (C,), x's dtype, or None.
        style_scale, style_shift: AdaIN's per-sample scale and shift (N, C), instead of them.
        activation: "relu", "leaky_relu" (with negative_slope) or "none".
        eps: added to the biased variance inside the square root (nn.InstanceNorm2d's 1e-5).
        backend: "cuda", "triton", "cpu", "reference" or "auto" (see culturegan.ops).

    Differentiable in x and in every parameter.
    """
    _checks.check_channel_tensor(x, "x", min_dim=3, max_dim=4)
    if x[0, 0].numel() == 1:
        raise ValueError(f"instance normalisation needs more than 1 spatial element per channel, got shape "
                         f"{tuple(x.shape)} (as nn.InstanceNorm2d)")
    gamma, beta = _gamma_beta(*_scale_and_shift(x, weight, bias, style_scale, style_shift))
    slope = activation_slope(activation, negative_slope)
    eps = _checks.check_number(eps, "eps", minimum=0.0)
    implementation = _backends.dispatch("instance_norm_act", x.device, backend)
    return implementation(x, gamma, beta, slope, eps)
