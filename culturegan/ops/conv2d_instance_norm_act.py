"""conv2d_instance_norm_act and conv_transpose2d_instance_norm_act, with their references.

    y = act(instance_norm(conv(x, weight)) * gamma + beta)      conv = conv2d or conv_transpose2d

Every CycleGAN layer but the first and last (the transposed one is its decoder's upsampling
layer), and culture-conditioned (AdaIN) generators. The convolution's bias is cancelled exactly
by the normalisation: it is accepted for drop-in compatibility with nn.Conv2d, not added, and
gets a zero gradient. The fast backends run the convolution through ATen (cuDNN, oneDNN) and
then instance_norm_act on the backend (one statistics pass, one normalise-and-activate pass).
Accumulating the statistics in the convolution's own epilogue needs an implicit-GEMM
convolution, which is not written yet.
"""

from __future__ import annotations

import functools

import torch

from culturegan.ops import _backends, _conv
from culturegan.ops.instance_norm_act import instance_norm_act


def _block(convolve, backend: str, x, weight, bias, geometry, norm):
    """conv (with its bias on the reference, which adds it like the unfused layers) + norm + act."""
    if backend == "reference":
        return instance_norm_act(convolve(x, weight, bias, *geometry), *norm, backend="reference")
    y = instance_norm_act(convolve(x, weight, None, *geometry), *norm, backend=backend)
    return _conv.cancelled_bias(y, bias)


for _op, _convolve in (("conv2d_instance_norm_act", _conv.convolve),
                       ("conv_transpose2d_instance_norm_act", _conv.convolve_transposed)):
    _backends.register_op(_op, {b: functools.partial(_block, _convolve, b) for b in _backends.BACKENDS})


def conv2d_instance_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                             padding=0, padding_mode: str = "zeros", dilation=1,
                             norm_weight: torch.Tensor | None = None, norm_bias: torch.Tensor | None = None,
                             style_scale: torch.Tensor | None = None, style_shift: torch.Tensor | None = None,
                             activation: str = "relu", negative_slope: float = 0.2, eps: float = 1e-5, *,
                             backend: str | None = None) -> torch.Tensor:
    """Fused ``act(instance_norm(conv2d(x, weight)) * gamma + beta)``.

    Args:
        x, weight, bias, stride, padding, padding_mode, dilation: as conv2d_bias_leaky_relu's
            (bias is cancelled by the normalisation: see the module docstring).
        norm_weight, norm_bias: nn.InstanceNorm2d's affine parameters (C_out,), or None.
        style_scale, style_shift: AdaIN's (N, C_out) scale and shift instead of them.
        activation, negative_slope, eps: as instance_norm_act's.
        backend: "cuda", "triton", "cpu", "reference" or "auto" (see culturegan.ops).

    Differentiable in x, weight and every parameter.
    """
    _conv.check_conv_input(x, weight, bias, padding_mode)
    implementation = _backends.dispatch("conv2d_instance_norm_act", x.device, backend)
    return implementation(x, weight, bias, (stride, padding, padding_mode, dilation),
                          (norm_weight, norm_bias, style_scale, style_shift, activation, negative_slope, eps))


def conv_transpose2d_instance_norm_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                                       stride=2, padding=1, output_padding=1, dilation=1,
                                       norm_weight: torch.Tensor | None = None,
                                       norm_bias: torch.Tensor | None = None,
                                       style_scale: torch.Tensor | None = None,
                                       style_shift: torch.Tensor | None = None, activation: str = "relu",
                                       negative_slope: float = 0.2, eps: float = 1e-5, *,
                                       backend: str | None = None) -> torch.Tensor:
    """Fused ``act(instance_norm(conv_transpose2d(x, weight)) * gamma + beta)``: the decoder block.

    The defaults (stride 2, padding 1, output_padding 1) are CycleGAN's upsampling layer with a
    3x3 kernel: H, W -> 2H, 2W. weight is (C_in, C_out, kH, kW), as nn.ConvTranspose2d's; the
    other arguments are conv2d_instance_norm_act's.
    """
    _conv.check_conv_input(x, weight, bias, "zeros", transposed=True)
    implementation = _backends.dispatch("conv_transpose2d_instance_norm_act", x.device, backend)
    return implementation(x, weight, bias, (stride, padding, output_padding, dilation),
                          (norm_weight, norm_bias, style_scale, style_shift, activation, negative_slope, eps))
