"""channel_affine: a per-sample, per-channel affine map with an optional LeakyReLU, and its reference.

    y = act((x - center[n, c]) * scale[n, c] + shift[n, c])      act = LeakyReLU or identity

One read and one write of x. Instance normalisation and AdaIN apply their statistics with it
(center = mean, scale = gamma / std, shift = beta, fused with the activation that follows),
and feature_stats' backward is one (dx = (x - mean) * dstd / (d std) + dmean / HW). The
center is subtracted before the scale, so features with a large mean keep their precision.

The parameters are in x's math type (float32 for float16/bfloat16 x, whose per-channel factors
such as 1 / (HW * std) would underflow in float16). Differentiable to any order in x and in
the parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _backends, _checks, _layout
from culturegan.ops._layout import math_dtype

PARAMETERS = ("center", "scale", "shift")

def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """An (N, C) tensor viewed to broadcast against `like` (N, C, ...)."""
    return t.view(t.shape + (1,) * (like.dim() - 2))


def channel_affine_reference(x: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                             negative_slope: float | None = None) -> torch.Tensor:
    """The pure-torch definition every backend is tested against (autograd by torch)."""
    y = (x.to(center.dtype) - _per_channel(center, x)) * _per_channel(scale, x) + _per_channel(shift, x)
    if negative_slope is not None:
        y = F.leaky_relu(y, negative_slope)
    return y.to(x.dtype)


def check_channel_affine_input(x, center, scale, shift, negative_slope) -> float | None:
    """Checks what the kernels take: (N, C) parameters in x's math type on x's device."""
    _checks.check_channel_tensor(x, "x", min_dim=2, max_dim=4)
    math = math_dtype(x.dtype)
    for name, parameter in zip(PARAMETERS, (center, scale, shift)):
        _checks.check_tensor(parameter, name)
        _checks.check_same_device(parameter, name, x, "x")
        if parameter.dtype != math:
            raise TypeError(f"{name} must have dtype {math} (x's math type), got {parameter.dtype}")
        if parameter.shape != x.shape[:2]:
            raise ValueError(f"{name} must have shape ({x.shape[0]}, {x.shape[1]}) (x's samples and channels), "
                             f"got shape {tuple(parameter.shape)}")
    if negative_slope is None:
        return None
    return _checks.check_number(negative_slope, "negative_slope", minimum=0.0)


# ----------------------------------------------------------------------------------- triton

def _triton_forward(x: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                    negative_slope: float | None) -> torch.Tensor:
    from culturegan.kernels import channel_affine as kernels

    check_channel_affine_input(x, center, scale, shift, negative_slope)
    layout = _layout.channel_layout(x)
    y = _layout.empty_in_kernel_layout(layout.tensor)
    kernels.forward(layout.tensor, center.contiguous(), scale.contiguous(), shift.contiguous(), y, layout.inner,
                    negative_slope)
    return y


# ------------------------------------------------------------------ fake kernels, autograd

def _fake(x, center, scale, shift, negative_slope):
    return _layout.empty_in_kernel_layout(x)


def _channel_sums(t: torch.Tensor) -> torch.Tensor:
    """(N, C) sums over everything after the channel dimension."""
    return t.reshape(t.shape[0], t.shape[1], -1).sum(2)


def _setup_context(ctx, inputs, output):
    x, center, scale, _, negative_slope = inputs
    ctx.negative_slope = negative_slope
    ctx.save_for_backward(x, center, scale, output if negative_slope is not None else None)


def _vjp(ctx, grad):
    x, center, scale, y = ctx.saved_tensors
    grad_x = grad_center = grad_scale = grad_shift = None
    grad_pre = grad.to(center.dtype)  # d loss / d (x - center) * scale + shift
    if ctx.negative_slope is not None:  # y > 0 exactly where the pre-activation is (slope >= 0)
        grad_pre = torch.where(y > 0, grad_pre, grad_pre * ctx.negative_slope)
    if ctx.needs_input_grad[0] and ctx.negative_slope is None:
        # dx = scale * grad: the op itself, one pass, and differentiable again.
        zeros = torch.zeros_like(center)
        grad_x = KERNEL.on(ctx.backend)(grad, zeros, scale, zeros, None)
    elif ctx.needs_input_grad[0]:
        grad_x = (grad_pre * _per_channel(scale, x)).to(x.dtype)
    if any(ctx.needs_input_grad[1:4]):
        grad_shift = _channel_sums(grad_pre)
        grad_center = -scale * grad_shift
        grad_scale = _channel_sums(grad_pre * (x.to(center.dtype) - _per_channel(center, x)))
    return grad_x, grad_center, grad_scale, grad_shift, None


KERNEL = _backends.register(_backends.Kernel("channel_affine", _fake, triton=_triton_forward, vjp=_vjp,
                                             setup_context=_setup_context))


# ----------------------------------------------------------------------------- public API

def _as_parameter(value: torch.Tensor, name: str, x: torch.Tensor) -> torch.Tensor:
    """A (C,) or (N, C) floating tensor as the (N, C) tensor in x's math type the kernels take."""
    value = _checks.check_tensor(value, name)
    _checks.check_floating(value, name)
    if value.dim() == 1 and value.shape[0] == x.shape[1]:
        value = value.expand(x.shape[:2])
    return value.to(math_dtype(x.dtype))


def _check(x, center, scale, shift, negative_slope) -> tuple:
    """The public arguments as the kernels take them: (N, C) parameters in x's math type."""
    _checks.check_channel_tensor(x, "x", min_dim=2, max_dim=4)
    center, scale, shift = (_as_parameter(v, name, x) for v, name in zip((center, scale, shift), PARAMETERS))
    return x, center, scale, shift, check_channel_affine_input(x, center, scale, shift, negative_slope)


OP = _backends.declare(_backends.Op("channel_affine", _check, channel_affine_reference, KERNEL))


def channel_affine(x: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
                   negative_slope: float | None = None, *, backend: str | None = None) -> torch.Tensor:
    """``act((x - center) * scale + shift)`` with one parameter per sample and channel.

    Args:
        x: (N, C), (N, C, L) or (N, C, H, W) float16/bfloat16/float32/float64 tensor;
            contiguous and channels_last inputs keep their layout, others are copied first.
        center, scale, shift: (N, C) or (C,) floating tensors on x's device; they are used in
            x's math type (float32, or float64 for float64 x).
        negative_slope: LeakyReLU slope (>= 0; 0 is ReLU) applied after the affine map, or
            None for no activation.
        backend: "cuda", "triton", "cpu", "reference" or "auto"; None defers to
            ``use_backend`` and CULTUREGAN_BACKEND (see culturegan.ops).

    Returns:
        y, x's shape and dtype. Differentiable in x, center, scale and shift.
    """
    return OP(x, center, scale, shift, negative_slope, backend=backend)
