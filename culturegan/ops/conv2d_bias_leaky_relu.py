"""conv2d_bias_leaky_relu: convolution, bias, LeakyReLU, gain and clamp, with its reference.

    y = clamp(leaky_relu(conv2d(x, weight) + bias, negative_slope) * gain, -clamp, clamp)

PatchGAN's first layer and StyleGAN-like nets. The triton backend is an implicit-GEMM
convolution (kernels/conv2d.py, NHWC) with the bias, activation, gain and clamp in its epilogue:
y is written once, and reflection padding is index arithmetic, not a padded copy. The cuda and
cpu backends run the convolution without its bias through ATen (cuDNN, oneDNN; the cpu
backend's weight gradient is a GEMM where that is faster: _conv.conv2d_cpu), then ONE pass of
the fused bias_leaky_relu. On triton the backward is two implicit GEMMs (dx, and dweight
with the bias gradient) that apply the activation's derivative as they load grad and y: no
pass over grad of its own. On cuda and cpu one pass applies the derivative and reduces the
bias gradient, then ATen's convolution backward runs: eager torch spends a pass on each.
"""

from __future__ import annotations

import torch

from culturegan.ops import _autocast, _backends, _checks, _conv
from culturegan.ops._autograd import recomputed_grads
from culturegan.ops.bias_leaky_relu import check_activation_params, bias_leaky_relu, bias_leaky_relu_reference


def conv2d_bias_leaky_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                     stride=1, padding=0, padding_mode: str = "zeros", dilation=1,
                                     negative_slope: float = 0.2, gain: float = 1.0,
                                     clamp: float | None = None) -> torch.Tensor:
    """The pure-torch definition (F.conv2d with its bias, then the activation)."""
    z = _conv.convolve(x, weight, bias, stride, padding, padding_mode, dilation)
    return bias_leaky_relu_reference(z, None, negative_slope, gain, clamp)


def _composed(backend: str, x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp):
    """ATen's convolution, then one bias_leaky_relu pass: the cpu and cuda backends, and the
    differentiable form the triton op's double backward uses."""
    z = _conv.convolve(x, weight, None, stride, padding, padding_mode, dilation, backend=backend)
    return bias_leaky_relu(z, bias, negative_slope, gain, clamp, backend=backend)


# ----------------------------------------------------------------------------------- triton

def output_size(x, weight, stride, padding, dilation) -> tuple[int, int]:
    return tuple((size + 2 * pad - dil * (k - 1) - 1) // st + 1
                 for size, k, st, pad, dil in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation))


def empty_output(x, channels, height, width) -> torch.Tensor:
    return torch.empty((x.shape[0], channels, height, width), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


def _triton_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                    padding: list[int], reflect: bool, dilation: list[int], negative_slope: float, gain: float,
                    clamp: float | None) -> torch.Tensor:
    """The implicit-GEMM convolution with the epilogue inside it (kernels/conv2d.py): y is
    written once, channels_last."""
    from culturegan.kernels import conv2d as kernels

    _conv.check_conv_input(x, weight, bias, "zeros")  # direct calls of the op get the same checks
    check_activation_params(negative_slope, gain, clamp)
    out_height, out_width = output_size(x, weight, stride, padding, dilation)
    if out_height < 1 or out_width < 1:
        raise ValueError(f"the convolution's output would be empty: x {tuple(x.shape)}, kernel "
                         f"{tuple(weight.shape[2:])}, stride {stride}, padding {padding}, dilation {dilation}")
    y = empty_output(x, weight.shape[0], out_height, out_width)
    x = x.contiguous(memory_format=torch.channels_last)
    kernels.forward(x, weight, bias, y, stride, padding, dilation, reflect, negative_slope, gain, clamp)
    return y


def _fake(x, weight, bias, stride, padding, reflect, dilation, negative_slope, gain, clamp):
    out_height, out_width = output_size(x, weight, stride, padding, dilation)
    return empty_output(x, weight.shape[0], out_height, out_width)


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, reflect, dilation, negative_slope, gain, clamp = inputs
    ctx.save_for_backward(x, weight, bias, output)
    ctx.geometry = (stride, padding, "reflect" if reflect else "zeros", dilation)
    ctx.activation = (negative_slope, gain, clamp)


def _vjp(ctx, grad):
    x, weight, bias, y = ctx.saved_tensors
    stride, padding, padding_mode, dilation = ctx.geometry
    if torch.is_grad_enabled():  # double backward (R1 penalties): differentiate the composed form
        def compose(x, weight, bias):
            return _composed("triton", x, weight, bias, *ctx.geometry, *ctx.activation)

        return *recomputed_grads(compose, (x, weight, bias), grad), *[None] * 7
    needs_bias = ctx.needs_input_grad[2] and bias is not None
    grad_x, grad_weight, grad_bias = BACKWARD.triton(
        grad, y, x, weight, *_triton_args(ctx.geometry), *ctx.activation,
        [ctx.needs_input_grad[0], ctx.needs_input_grad[1], needs_bias])
    return (grad_x if ctx.needs_input_grad[0] else None, grad_weight if ctx.needs_input_grad[1] else None,
            grad_bias if needs_bias else None, *[None] * 7)


def _triton_args(geometry) -> tuple:
    stride, padding, padding_mode, dilation = geometry
    return stride, padding, padding_mode == "reflect" and any(padding), dilation


def _triton_backward(grad: torch.Tensor, y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride: list[int],
                     padding: list[int], reflect: bool, dilation: list[int], negative_slope: float, gain: float,
                     clamp: float | None, needs: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias), each empty where `needs` says no: Triton implicit GEMMs that apply
    the activation's derivative as they load grad and y (the weight kernel also reduces the
    bias gradient), so the pre-activation gradient is never written."""
    from culturegan.kernels import conv2d as kernels

    _conv.check_conv_input(x, weight, None, "zeros")
    _checks.check_same_dtype(grad, "grad", y, "y")
    if grad.shape != y.shape or y.shape[:2] != (x.shape[0], weight.shape[0]):
        raise ValueError(f"grad {tuple(grad.shape)} and y {tuple(y.shape)} must be the convolution's output "
                         f"({x.shape[0]}, {weight.shape[0]}, ...)")
    grad = grad.contiguous(memory_format=torch.channels_last)
    activation = (negative_slope, gain, clamp)
    grad_x, grad_weight, grad_bias = x.new_empty(0), weight.new_empty(0), weight.new_empty(0)
    if needs[0] and reflect:  # the gradient of the reflected input, folded back by ATen
        padded_size = (x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1])
        grad_padded = kernels.input_grad(grad, y, weight, padded_size, stride, [0, 0], dilation, *activation)
        grad_x = torch.ops.aten.reflection_pad2d_backward(grad_padded, x, [padding[1], padding[1], padding[0],
                                                                         padding[0]])
        grad_x = grad_x.contiguous(memory_format=torch.channels_last)
    elif needs[0]:
        grad_x = kernels.input_grad(grad, y, weight, tuple(x.shape[2:]), stride, padding, dilation, *activation)
    if needs[1] or needs[2]:
        dw, db = kernels.weight_grad(grad, y, x.contiguous(memory_format=torch.channels_last), tuple(weight.shape[2:]),
                                     stride, padding, dilation, reflect, *activation, needs[2])
        grad_weight = dw.to(weight.dtype) if needs[1] else grad_weight
        grad_bias = db.to(weight.dtype) if needs[2] else grad_bias
    return grad_x, grad_weight, grad_bias


def _fake_backward(grad, y, x, weight, stride, padding, reflect, dilation, negative_slope, gain, clamp, needs):
    grad_x = torch.empty_like(x, memory_format=torch.channels_last) if needs[0] else x.new_empty(0)
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format) if needs[1] else weight.new_empty(0)
    return grad_x, grad_weight, weight.new_empty(weight.shape[0] if needs[2] else 0)


# Triton only: the cpu and cuda backends compose ATen's convolution and bias_leaky_relu.
FORWARD = _backends.register(_backends.Kernel("conv2d_bias_leaky_relu", _fake, native=None, triton=_triton_forward,
                                              vjp=_vjp, setup_context=_setup_context))
BACKWARD = _backends.register(_backends.Kernel("conv2d_bias_leaky_relu_backward", _fake_backward, native=None,
                                               triton=_triton_backward))


def triton_geometry(x, stride, padding, padding_mode, dilation) -> tuple[list[int], list[int], bool, list[int]]:
    """(stride, padding, reflect, dilation) as the Triton convolution ops take them, checked."""
    stride, padding, dilation = (list(_conv.pair(v, name, minimum)) for v, name, minimum in
                                 ((stride, "stride", 1), (padding, "padding", 0), (dilation, "dilation", 1)))
    reflect = padding_mode == "reflect" and any(padding)
    if reflect and (padding[0] >= x.shape[2] or padding[1] >= x.shape[3]):
        raise ValueError(f"reflect padding {tuple(padding)} must be smaller than x's height and width "
                         f"{tuple(x.shape[2:])}")
    return stride, padding, reflect, dilation


def _on_backend(backend: str, x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp):
    if backend != "triton":
        return _composed(backend, x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain,
                         clamp)
    return FORWARD.triton(x, weight, bias, *triton_geometry(x, stride, padding, padding_mode, dilation),
                          negative_slope, gain, clamp)


def _check(x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp) -> tuple:
    _conv.check_conv_input(x, weight, bias, padding_mode)
    return (x, weight, bias, stride, padding, padding_mode, dilation,
            *check_activation_params(negative_slope, gain, clamp))


OP = _backends.declare(_backends.Op("conv2d_bias_leaky_relu", _check, conv2d_bias_leaky_relu_reference, _on_backend))


@_autocast.lowered
def conv2d_bias_leaky_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                           padding=0, padding_mode: str = "zeros", dilation=1, negative_slope: float = 0.2,
                           gain: float = 1.0, clamp: float | None = None, *,
                           backend: str | None = None) -> torch.Tensor:
    """Fused ``clamp(leaky_relu(conv2d(x, weight) + bias) * gain, -clamp, clamp)``.

    Args:
        x: (N, C_in, H, W) float16/bfloat16/float32/float64 tensor (contiguous or channels_last).
        weight: (C_out, C_in, kH, kW), x's dtype and device (groups = 1).
        bias: optional (C_out,).
        stride, padding, dilation: ints or pairs, as nn.Conv2d's.
        padding_mode: "zeros" or "reflect" (CycleGAN's), as nn.Conv2d's.
        negative_slope, gain, clamp: as bias_leaky_relu's.
        backend: "cuda", "triton", "cpu", "reference" or "auto" (see culturegan.ops).

    Differentiable in x, weight and bias.
    """
    return OP(x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp, backend=backend)
