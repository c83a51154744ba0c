"""conv2d_bias_leaky_relu: convolution, bias, LeakyReLU, gain and clamp, with its reference.

    y = clamp(leaky_relu(conv2d(x, weight) + bias, negative_slope) * gain, -clamp, clamp)

PatchGAN's first layer and StyleGAN-like nets. The fast backends run the convolution without
its bias through ATen (cuDNN, oneDNN), then ONE pass of the fused bias_leaky_relu on the same
backend. Its backward reads the saved output once to apply the activation's derivative and
reduces the bias gradient in the same pass, before the convolution's backward: eager torch
spends a pass on each. A Triton implicit-GEMM convolution with the epilogue inside it (one
write of y) is not written yet.
"""

from __future__ import annotations

import functools

import torch

from culturegan.ops import _backends, _conv
from culturegan.ops.bias_leaky_relu import check_activation_params, bias_leaky_relu, bias_leaky_relu_reference


def conv2d_bias_leaky_relu_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                     stride=1, padding=0, padding_mode: str = "zeros", dilation=1,
                                     negative_slope: float = 0.2, gain: float = 1.0,
                                     clamp: float | None = None) -> torch.Tensor:
    """The pure-torch definition (F.conv2d with its bias, then the activation)."""
    z = _conv.convolve(x, weight, bias, stride, padding, padding_mode, dilation)
    return bias_leaky_relu_reference(z, None, negative_slope, gain, clamp)


def _on_backend(backend: str, x, weight, bias, stride, padding, padding_mode, dilation, negative_slope, gain, clamp):
    z = _conv.convolve(x, weight, None, stride, padding, padding_mode, dilation)
    return bias_leaky_relu(z, bias, negative_slope, gain, clamp, backend=backend)


_backends.register_op("conv2d_bias_leaky_relu", {
    **{b: functools.partial(_on_backend, b) for b in _backends.BACKENDS if b != "reference"},
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
