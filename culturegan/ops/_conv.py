"""Argument checks and the convolution itself for the fused convolution blocks.

The convolution runs through ATen (cuDNN on CUDA, oneDNN on the CPU): the fused blocks add
their epilogue (bias, activation, normalisation) with culturegan's own kernels. Reflection
padding is a padded copy here (ATen's convolutions pad with zeros only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _checks

PADDING_MODES = ("zeros", "reflect")


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints >= minimum, as a pair."""
    values = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return values


def check_conv_input(x, weight, bias, padding_mode: str, transposed: bool = False) -> None:
    """x (N, C_in, H, W); weight (C_out, C_in, kH, kW), or (C_in, C_out, kH, kW) when transposed;
    bias (C_out,) or None; all floating, of one dtype, on one device. groups = 1."""
    _checks.check_channel_tensor(x, "x", min_dim=4, max_dim=4)
    _checks.check_channel_tensor(weight, "weight", min_dim=4, max_dim=4)
    _checks.check_same_device(weight, "weight", x, "x")
    _checks.check_same_dtype(weight, "weight", x, "x")
    in_channels = weight.shape[0] if transposed else weight.shape[1]
    if in_channels != x.shape[1]:
        layout = "(C_in, C_out, kH, kW)" if transposed else "(C_out, C_in, kH, kW)"
        raise ValueError(f"weight {layout} has shape {tuple(weight.shape)}, which takes {in_channels} input "
                         f"channels, but x has {x.shape[1]} (shape {tuple(x.shape)}); groups are not supported")
    if bias is not None:
        out_channels = weight.shape[1] if transposed else weight.shape[0]
        _checks.check_tensor(bias, "bias")
        _checks.check_same_device(bias, "bias", x, "x")
        _checks.check_same_dtype(bias, "bias", x, "x")
        if bias.shape != (out_channels,):
            raise ValueError(f"bias must have shape ({out_channels},) (weight's output channels), "
                             f"got shape {tuple(bias.shape)}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, got {padding_mode!r}")


def convolve(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, padding_mode: str,
             dilation) -> torch.Tensor:
    """F.conv2d with "zeros" or "reflect" padding (as nn.Conv2d's padding_mode)."""
    stride, padding, dilation = pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    if padding_mode == "reflect" and any(padding):
        height, width = x.shape[2:]
        if padding[0] >= height or padding[1] >= width:
            raise ValueError(f"reflect padding {padding} must be smaller than x's height and width {(height, width)}")
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), mode="reflect")
        padding = (0, 0)
    return F.conv2d(x, weight, bias, stride, padding, dilation)


def convolve_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
                        output_padding, dilation) -> torch.Tensor:
    """F.conv_transpose2d (as nn.ConvTranspose2d; zero padding only), with clear argument errors."""
    stride, padding, dilation = pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    output_padding = pair(output_padding, "output_padding", 0)
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}")
    return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, 1, dilation)


def input_and_weight_grads(grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride, padding,
                           padding_mode: str, dilation, needs: tuple[bool, bool]):
    """(grad_x, grad_weight) of convolve(x, weight, None, ...) by ATen's convolution backward
    (cuDNN, oneDNN); with reflection padding through the padded copy, made here only."""
    if padding_mode == "reflect" and any(padding):
        pads = [padding[1], padding[1], padding[0], padding[0]]
        grad_padded, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_output, F.pad(x, pads, mode="reflect"), weight, None, list(stride), [0, 0], list(dilation), False,
            [0, 0], 1, [needs[0], needs[1], False])
        grad_x = None if grad_padded is None else torch.ops.aten.reflection_pad2d_backward(grad_padded, x, pads)
        return grad_x, grad_weight
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_output, x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], 1,
        [needs[0], needs[1], False])
    return grad_x, grad_weight


class _CancelledBias(torch.autograd.Function):
    """y unchanged; the bias gets a zero gradient. A convolution bias followed by a normalisation
    is cancelled by it exactly (d y / d bias = 0): the fused blocks skip adding it, and this gives
    it the zero gradient autograd would have found, so optimisers treat it as the unfused model's."""

    @staticmethod
    def forward(y, bias):
        # a view with y's exact strides: view_as recomputes them, and gives a size-1 batch a
        # batch stride that makes F.pad and oneDNN treat a channels_last tensor as NCHW (a copy)
        return y[...]

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return grad, grad.new_zeros(grad.shape[1])


def cancelled_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y, with a zero gradient for `bias` when it requires one (see _CancelledBias)."""
    if bias is None or not (torch.is_grad_enabled() and bias.requires_grad):
        return y
    return _CancelledBias.apply(y, bias)
