"""instance_norm_act: instance normalisation or AdaIN, then ReLU/LeakyReLU, with its reference.

    y = act((x - mean) / std * gamma + beta)          per (n, c); std = sqrt(var + eps), biased

gamma, beta: nn.InstanceNorm2d's affine weight and bias (C,), or AdaIN's style scale and shift
(N, C) (a style code per sample), or none. It matches nn.InstanceNorm2d (biased variance,
eps=1e-5, no running statistics) followed by the activation. The fast backends read x twice
and write y once: feature_stats (one stable pass) and channel_affine (normalise, scale, shift
and activate in one pass); eager torch takes a pass more for the activation. The backward is
one instance_norm_act_backward kernel (csrc/ops/instance_norm_act.h): per (n, c) it sums g' and
g' (z - mean), g' being the gradient through the activation, then writes dz while the plane is
still in cache; y itself is never saved (the activation's side is recomputed from z). A double
backward differentiates the composition of the two forward ops instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _autocast, _backends, _checks, _layout
from culturegan.ops._autograd import recomputed_grads
from culturegan.ops._layout import math_dtype
from culturegan.ops.channel_affine import KERNEL as CHANNEL_AFFINE, channel_affine
from culturegan.ops.feature_stats import KERNEL as FEATURE_STATS, feature_stats

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


def _composed(backend: str, x, gamma, beta, slope, eps):
    """feature_stats, then channel_affine, with autograd through both ops: the differentiable
    form of the fused op's forward, for double backward."""
    mean, std = feature_stats(x, False, eps, backend=backend)
    math = math_dtype(x.dtype)
    mean, std = mean.to(math), std.to(math)
    return channel_affine(x, mean, gamma / std, beta, slope, backend=backend), mean, std


# ------------------------------------------------------------ the backward kernel, one pass

def _triton_backward(grad: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, gamma: torch.Tensor,
                     beta: torch.Tensor, negative_slope: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from culturegan.kernels import instance_norm_act as kernels

    _check_backward_args(grad, z, (mean, std, gamma, beta), negative_slope)
    layout = _layout.channel_layout(z)
    out = _layout.empty_in_kernel_layout(layout.tensor)
    grad_gamma, grad_beta = torch.empty_like(mean), torch.empty_like(mean)
    parameters = tuple(t.contiguous() for t in (mean, std, gamma, beta))
    kernels.backward(_layout.match_layout(grad, layout.tensor), layout.tensor, out, parameters, grad_gamma, grad_beta,
                     layout.inner == 1 and z[0, 0].numel() > 1, negative_slope)
    return out, grad_gamma, grad_beta


def _check_backward_args(grad, z, parameters, negative_slope) -> None:
    """What the C++ op checks (csrc/ops/instance_norm_act.h), for direct calls of the Triton op."""
    _checks.check_channel_tensor(z, "z", min_dim=3, max_dim=4)
    _checks.check_tensor(grad, "grad")
    if grad.shape != z.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but z has shape {tuple(z.shape)}")
    _checks.check_same_device(grad, "grad", z, "z")
    _checks.check_same_dtype(grad, "grad", z, "z")
    for name, parameter in zip(("mean", "std", "gamma", "beta"), parameters):
        _checks.check_same_device(parameter, name, z, "z")
        if parameter.dtype != math_dtype(z.dtype) or parameter.shape != z.shape[:2]:
            raise ValueError(f"{name} must be ({z.shape[0]}, {z.shape[1]}) in {math_dtype(z.dtype)}, got "
                             f"{tuple(parameter.shape)} in {parameter.dtype}")
    if negative_slope is not None:
        _checks.check_number(negative_slope, "negative_slope", minimum=0.0)


def _fake_backward(grad, z, mean, std, gamma, beta, negative_slope):
    return _layout.empty_in_kernel_layout(z), torch.empty_like(mean), torch.empty_like(mean)


# A double backward differentiates the forward's composition instead (see _vjp).
BACKWARD = _backends.register(_backends.Kernel("instance_norm_act_backward", _fake_backward, triton=_triton_backward))


# ----------------------------------------------- the forward: statistics, then one affine pass

def _forward_on(backend: str, x, gamma, beta, negative_slope, eps):
    """(y, mean, std) by the two kernels of `backend` (the caller has checked the arguments)."""
    mean, std = FEATURE_STATS.on(backend)(x, False, eps)
    math = math_dtype(x.dtype)
    mean, std = mean.to(math), std.to(math)
    return CHANNEL_AFFINE.on(backend)(x, mean, gamma / std, beta, negative_slope), mean, std


def _native_forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, negative_slope: float | None,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, std); gamma, beta (N, C) in x's math type. mean and std are returned for the
    backward only: they are not differentiable outputs."""
    return _forward_on(x.device.type, x, gamma, beta, negative_slope, eps)


def _triton_forward(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, negative_slope: float | None,
                    eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_native_forward on the Triton kernels."""
    return _forward_on("triton", x, gamma, beta, negative_slope, eps)


def _fake_forward(x, gamma, beta, negative_slope, eps):
    return _layout.empty_in_kernel_layout(x), torch.empty_like(gamma), torch.empty_like(gamma)


def _setup_context(ctx, inputs, output):
    x, gamma, beta, negative_slope, eps = inputs
    ctx.save_for_backward(x, gamma, beta, *output[1:])
    ctx.mark_non_differentiable(*output[1:])
    ctx.negative_slope, ctx.eps = negative_slope, eps


def _vjp(ctx, grad_y, _grad_mean, _grad_std):
    x, gamma, beta, mean, std = ctx.saved_tensors
    if torch.is_grad_enabled():
        # A double backward (create_graph=True): see recomputed_grads.
        def compose(x, gamma, beta):
            return _composed(ctx.backend, x, gamma, beta, ctx.negative_slope, ctx.eps)[0]

        return *recomputed_grads(compose, (x, gamma, beta), grad_y), None, None
    grad_x, grad_gamma, grad_beta = BACKWARD.on(ctx.backend)(grad_y, x, mean, std, gamma, beta, ctx.negative_slope)
    return grad_x, grad_gamma, grad_beta, None, None


FORWARD = _backends.register(_backends.Kernel("instance_norm_act", _fake_forward, native=_native_forward,
                                              triton=_triton_forward, vjp=_vjp, setup_context=_setup_context))


def per_sample(gamma, beta, shape, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """gamma and beta as the (N, C) tensors in the math type of `dtype` that the kernels take
    (ones and zeros where None)."""
    math = math_dtype(dtype)
    gamma = torch.ones(shape, dtype=math, device=device) if gamma is None else gamma.to(math).expand(shape)
    beta = torch.zeros(shape, dtype=math, device=device) if beta is None else beta.to(math).expand(shape)
    return gamma, beta


def _on_backend(backend: str, x, gamma, beta, slope, eps):
    return FORWARD.on(backend)(x, *per_sample(gamma, beta, x.shape[:2], x.dtype, x.device), slope, eps)[0]


def check_arguments(x, weight, bias, style_scale, style_shift, activation, negative_slope, eps):
    """(gamma, beta, slope, eps) of instance_norm_act's arguments for input x, checked. x only
    lends its shape (N, C, ...), dtype and device."""
    if x[0, 0].numel() == 1:
        raise ValueError(f"instance normalisation needs more than 1 spatial element per channel, got shape "
                         f"{tuple(x.shape)} (as nn.InstanceNorm2d)")
    gamma, beta = _gamma_beta(*_scale_and_shift(x, weight, bias, style_scale, style_shift))
    slope = activation_slope(activation, negative_slope)
    return gamma, beta, slope, _checks.check_number(eps, "eps", minimum=0.0)


def _check(x, weight, bias, style_scale, style_shift, activation, negative_slope, eps) -> tuple:
    _checks.check_channel_tensor(x, "x", min_dim=3, max_dim=4)
    return x, *check_arguments(x, weight, bias, style_scale, style_shift, activation, negative_slope, eps)


OP = _backends.declare(_backends.Op("instance_norm_act", _check, _reference, _on_backend))


@_autocast.in_input_dtype
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
    return OP(x, weight, bias, style_scale, style_shift, activation, negative_slope, eps, backend=backend)
