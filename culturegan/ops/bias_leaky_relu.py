"""bias_leaky_relu: fused bias + LeakyReLU + gain + clamp, with its pure-torch reference.

    y = clamp(leaky_relu(x + bias, negative_slope) * gain, -clamp, clamp)     bias along dim 1

Backends: cpu and cuda run the C++ op culturegan::bias_leaky_relu (csrc/), triton runs the
custom op culturegan::bias_leaky_relu_triton (kernels/), reference is plain torch. The fast
backends save only y for backward: its sign is the sign of x + bias (gain > 0,
negative_slope >= 0), and |y| >= clamp marks a clamped output, whose gradient is zero. Their
backward op computes grad_x and the bias gradient in one pass, and is itself differentiable,
so double backward (R1, gradient penalties) works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _autocast, _backends, _checks, _layout

def bias_leaky_relu_reference(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                              gain: float = 1.0, clamp: float | None = None) -> torch.Tensor:
    """The pure-torch definition every backend is tested against (autograd by torch)."""
    if bias is not None:
        x = x + bias.view((1, -1) + (1,) * (x.dim() - 2))
    y = F.leaky_relu(x, negative_slope)
    if gain != 1.0:
        y = y * gain
    if clamp is not None:
        y = y.clamp(-clamp, clamp)
    return y


def check_activation_params(negative_slope: float, gain: float, clamp: float | None) -> tuple[float, float, float | None]:
    return (_checks.check_number(negative_slope, "negative_slope", minimum=0.0),
            _checks.check_number(gain, "gain", minimum=0.0, inclusive=False),
            None if clamp is None else _checks.check_number(clamp, "clamp", minimum=0.0))


def _check_forward(x, bias, negative_slope, gain, clamp) -> tuple:
    _checks.check_channel_tensor(x, "x")
    if bias is not None:
        _checks.check_channel_vector(bias, "bias", x, "x")
    return x, bias, *check_activation_params(negative_slope, gain, clamp)


def _check_backward(grad, y, negative_slope, gain, clamp) -> None:
    _checks.check_channel_tensor(y, "y")
    _checks.check_tensor(grad, "grad")
    if grad.shape != y.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)} but y has shape {tuple(y.shape)}")
    _checks.check_same_device(grad, "grad", y, "y")
    _checks.check_same_dtype(grad, "grad", y, "y")
    check_activation_params(negative_slope, gain, clamp)


# ----------------------------------------------------------------------------------- triton

def _triton_forward(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float, gain: float,
                    clamp: float | None) -> torch.Tensor:
    from culturegan.kernels import bias_leaky_relu as kernels

    _check_forward(x, bias, negative_slope, gain, clamp)
    layout = _layout.channel_layout(x)
    y = _layout.empty_in_kernel_layout(layout.tensor)
    kernels.forward(layout.tensor, None if bias is None else bias.contiguous(), y, layout.inner, layout.channels,
                    negative_slope, gain, clamp)
    return y


def _triton_backward(grad: torch.Tensor, y: torch.Tensor, negative_slope: float, gain: float, clamp: float | None,
                     bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from culturegan.kernels import bias_leaky_relu as kernels

    _check_backward(grad, y, negative_slope, gain, clamp)
    layout = _layout.channel_layout(y)
    grad_x = _layout.empty_in_kernel_layout(layout.tensor)
    partial = kernels.backward(_layout.match_layout(grad, layout.tensor), layout.tensor, grad_x, layout.inner,
                               layout.channels, negative_slope, gain, clamp, bias_grad)
    # Partial sums [programs, C] added in a fixed order: deterministic.
    grad_bias = partial.sum(0).to(y.dtype) if bias_grad else y.new_empty(0)
    return grad_x, grad_bias


# ------------------------------------------------------------------ fake kernels, autograd

def _fake_forward(x, bias, negative_slope, gain, clamp):
    return _layout.empty_in_kernel_layout(x)


def _fake_backward(grad, y, negative_slope, gain, clamp, bias_grad):
    return _layout.empty_in_kernel_layout(y), y.new_empty(y.shape[1] if bias_grad else 0)


def _setup_forward(ctx, inputs, output):
    _, bias, negative_slope, gain, clamp = inputs
    ctx.save_for_backward(output)
    ctx.params = (negative_slope, gain, clamp)
    ctx.has_bias = bias is not None


def _forward_vjp(ctx, grad):
    (y,) = ctx.saved_tensors
    bias_grad = ctx.has_bias and ctx.needs_input_grad[1]
    grad_x, grad_bias = BACKWARD.on(ctx.backend)(grad, y, *ctx.params, bias_grad)
    return grad_x, grad_bias if bias_grad else None, None, None, None


def _setup_backward(ctx, inputs, output):
    _, y, negative_slope, gain, clamp, _ = inputs
    ctx.save_for_backward(y)
    ctx.params = (negative_slope, gain, clamp)


def _backward_vjp(ctx, grad_grad_x, grad_grad_bias):
    # grad_x = gradient(grad, y) is linear in grad, with a derivative of zero in y almost
    # everywhere; grad_bias is its channel sum. So d/dgrad applies the same mask.
    (y,) = ctx.saved_tensors
    total = torch.zeros_like(y) if grad_grad_x is None else grad_grad_x
    if grad_grad_bias is not None and grad_grad_bias.numel() > 0:
        total = total + grad_grad_bias.view((1, -1) + (1,) * (y.dim() - 2))
    grad_grad, _ = BACKWARD.on(ctx.backend)(total, y, *ctx.params, False)
    return grad_grad, None, None, None, None, None


FORWARD = _backends.register(_backends.Kernel("bias_leaky_relu", _fake_forward, triton=_triton_forward,
                                              vjp=_forward_vjp, setup_context=_setup_forward))
BACKWARD = _backends.register(_backends.Kernel("bias_leaky_relu_backward", _fake_backward, triton=_triton_backward,
                                               vjp=_backward_vjp, setup_context=_setup_backward))
OP = _backends.declare(_backends.Op("bias_leaky_relu", _check_forward, bias_leaky_relu_reference, FORWARD))


# ----------------------------------------------------------------------------- public API

@_autocast.in_input_dtype
def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                    gain: float = 1.0, clamp: float | None = None, *, backend: str | None = None) -> torch.Tensor:
    """Fused ``clamp(leaky_relu(x + bias, negative_slope) * gain, -clamp, clamp)``.

    Args:
        x: (N, C), (N, C, L) or (N, C, H, W) float16/bfloat16/float32/float64 tensor (float32
            math inside for the half types). Contiguous and channels_last inputs are used as
            they are and the output keeps their layout; other strided inputs are copied first.
        bias: optional (C,) tensor, same dtype and device as x, added along dim 1.
        negative_slope: slope for negative inputs, >= 0 (0.2 is the GAN default; 0 is ReLU).
        gain: factor applied after the activation, > 0. The default 1 matches nn.LeakyReLU;
            pass ``math.sqrt(2)`` for StyleGAN2's ``bias_act(act='lrelu')``.
        clamp: if given (>= 0), the output is clamped to [-clamp, clamp] and clamped elements
            get zero gradient (StyleGAN2's conv_clamp).
        backend: "cuda", "triton", "cpu", "reference" or "auto"; None defers to
            ``use_backend`` and CULTUREGAN_BACKEND (see culturegan.ops).

    Differentiable to any order in x and bias.
    """
    return OP(x, bias, negative_slope, gain, clamp, backend=backend)
