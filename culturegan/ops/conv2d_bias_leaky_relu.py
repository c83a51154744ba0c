"""conv2d_bias_leaky_relu: convolution, bias, LeakyReLU, gain and clamp, with its reference.

    y = clamp(leaky_relu(conv2d(x, weight) + bias, negative_slope) * gain, -clamp, clamp)

PatchGAN's first layer and StyleGAN-like nets. The triton backend is an implicit-GEMM
convolution (kernels/conv2d.py, NHWC) with the bias, activation, gain and clamp in its epilogue:
y is written once, and reflection padding is index arithmetic, not a padded copy. The cuda and
cpu backends run the convolution without its bias through ATen (cuDNN, oneDNN), then ONE pass
of the fused bias_leaky_relu. On every fast backend the backward reads the saved output once to
apply the activation's derivative and reduce the bias gradient in the same pass, then runs
ATen's convolution backward: eager torch spends a pass on each.
"""

from __future__ import annotations

import functools

import torch

from culturegan.ops import _backends, _conv
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
    z = _conv.convolve(x, weight, None, stride, padding, padding_mode, dilation)
    return bias_leaky_relu(z, bias, negative_slope, gain, clamp, backend=backend)


# ----------------------------------------------------------------------------------- triton

def output_size(x, weight, stride, padding, dilation) -> tuple[int, int]:
    return tuple((size + 2 * pad - dil * (k - 1) - 1) // st + 1
                 for size, k, st, pad, dil in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation))


def empty_output(x, channels, height, width) -> torch.Tensor:
    return torch.empty((x.shape[0], channels, height, width), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last)


@torch.library.custom_op("culturegan::conv2d_bias_leaky_relu_triton", mutates_args=())
def _triton_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list[int],
                    padding: list[int], reflect: bool, dilation: list[int], negative_slope: float, gain: float,
                    clamp: float | None) -> torch.Tensor:
    """The implicit-GEMM convolution with the epilogue inside it (kernels/conv2d.py): y is
    written once, channels_last."""
    from culturegan.kernels import conv2d as kernels

    out_height, out_width = output_size(x, weight, stride, padding, dilation)
    if out_height < 1 or out_width < 1:
        raise ValueError(f"the convolution's output would be empty: x {tuple(x.shape)}, kernel "
                         f"{tuple(weight.shape[2:])}, stride {stride}, padding {padding}, dilation {dilation}")
    y = empty_output(x, weight.shape[0], out_height, out_width)
    x = x.contiguous(memory_format=torch.channels_last)
    kernels.forward(x, weight, bias, y, stride, padding, dilation, reflect, negative_slope, gain, clamp)
    return y


@_triton_forward.register_fake
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
    # One pass for the activation's derivative and the bias gradient, then the convolution's
    # backward (cuDNN / oneDNN) on the pre-activation gradient.
    grad_pre, grad_bias = torch.ops.culturegan.bias_leaky_relu_backward_triton(
        grad, y, *ctx.activation, bias is not None and ctx.needs_input_grad[2])
    grad_x, grad_weight = _conv.input_and_weight_grads(grad_pre, x, weight, stride, padding, padding_mode, dilation,
                                                       ctx.needs_input_grad[:2])
    return grad_x, grad_weight, grad_bias if ctx.needs_input_grad[2] else None, *[None] * 7


_triton_forward.register_autograd(_vjp, setup_context=_setup_context)


def triton_geometry(x, stride, padding, padding_mode, dilation) -> tuple[list[int], list[int], bool, list[int]]:
    """(stride, padding, reflect, dilation) as the Triton convolution ops take them, checked."""
    stride, padding, dilation = (list(_conv.pair(v, name, minimum)) for v, name, minimum in
                                 ((stride, "stride", 1), (padding, "padding", 0), (dilation, "dilation", 1)))
    reflect = padding_mode == "reflect" and any(padding)
    if reflect and (padding[0] >= x.shape[2] or padding[1] >= x.shape[3]):
        raise ValueError(f"reflect padding {tuple(padding)} must be smaller than x's height and width "
                         f"{tuple(x.shape[2:])}")
    return stride, padding, reflect, dilation


def _on_triton(x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp):
    return _triton_forward(x, weight, bias, *triton_geometry(x, stride, padding, padding_mode, dilation),
                           negative_slope, gain, clamp)


_backends.register_op("conv2d_bias_leaky_relu", {
    "cuda": functools.partial(_composed, "cuda"),
    "cpu": functools.partial(_composed, "cpu"),
    "triton": _on_triton,
    "reference": conv2d_bias_leaky_relu_reference,
})


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
    _conv.check_conv_input(x, weight, bias, padding_mode)
    negative_slope, gain, clamp = check_activation_params(negative_slope, gain, clamp)
    implementation = _backends.dispatch("conv2d_bias_leaky_relu", x.device, backend)
    return implementation(x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp)
