"""Argument checks and the convolution itself for the fused convolution blocks.

The convolution runs through ATen (cuDNN on CUDA, oneDNN on the CPU): the fused blocks add
their epilogue (bias, activation, normalisation) with culturegan's own kernels. Reflection
padding is a padded copy here (ATen's convolutions pad with zeros only).

On the cpu backend the convolution is the op culturegan::conv2d_cpu: oneDNN's forward and input
gradient, and the weight gradient as one GEMM over the im2col matrix where that is faster
(gemm_weight_grad).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from culturegan.ops import _backends, _checks
from culturegan.ops._autograd import recomputed_grads
from culturegan.ops._layout import match_layout

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
             dilation, *, backend: str = "reference") -> torch.Tensor:
    """F.conv2d with "zeros" or "reflect" padding (as nn.Conv2d's padding_mode); on the cpu
    backend, without a bias, the op culturegan::conv2d_cpu (its faster weight gradient)."""
    stride, padding, dilation = pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    if padding_mode == "reflect" and any(padding):
        height, width = x.shape[2:]
        if padding[0] >= height or padding[1] >= width:
            raise ValueError(f"reflect padding {padding} must be smaller than x's height and width {(height, width)}")
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), mode="reflect")
        padding = (0, 0)
    if backend == "cpu" and bias is None:
        return conv2d_cpu(x, weight, list(stride), list(padding), list(dilation))
    return F.conv2d(x, weight, bias, stride, padding, dilation)


def convolve_transposed(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding,
                        output_padding, dilation, *, backend: str = "reference") -> torch.Tensor:
    """F.conv_transpose2d (as nn.ConvTranspose2d; zero padding only), with clear argument errors.
    Every backend transposes through ATen (`backend` keeps convolve's signature): a CycleGAN
    decoder has two such layers, a small share of its time."""
    stride, padding, dilation = pair(stride, "stride", 1), pair(padding, "padding", 0), pair(dilation, "dilation", 1)
    output_padding = pair(output_padding, "output_padding", 0)
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"output_padding {output_padding} must be smaller than stride {stride} or dilation {dilation}")
    return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, 1, dilation)


def input_and_weight_grads(grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, stride, padding,
                           padding_mode: str, dilation, needs: tuple[bool, bool]):
    """(grad_x, grad_weight) of convolve(x, weight, None, ...), each None where `needs` says no;
    with reflection padding through the padded copy, made here only."""
    if padding_mode == "reflect" and any(padding):
        pads = [padding[1], padding[1], padding[0], padding[0]]
        grad_padded, grad_weight = _zero_padded_grads(grad_output, F.pad(x, pads, mode="reflect"), weight, stride,
                                                      [0, 0], dilation, needs)
        grad_x = None if grad_padded is None else torch.ops.aten.reflection_pad2d_backward(grad_padded, x, pads)
        return grad_x, grad_weight
    return _zero_padded_grads(grad_output, x, weight, stride, padding, dilation, needs)


def _zero_padded_grads(grad_output, x, weight, stride, padding, dilation, needs):
    """grad_x by ATen's convolution backward (cuDNN, oneDNN); grad_weight too, or by one GEMM
    where that is faster (gemm_weight_grad_pays)."""
    by_gemm = needs[1] and gemm_weight_grad_pays(grad_output, weight)
    grad_x = grad_weight = None
    if needs[0] or (needs[1] and not by_gemm):
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_output, x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0], 1,
            [needs[0], needs[1] and not by_gemm, False])
    if by_gemm:
        grad_weight = match_layout(gemm_weight_grad(grad_output, x, tuple(weight.shape[2:]), stride, padding, dilation),
                                   weight)
    return grad_x, grad_weight


# ------------------------------------------------------------- the weight gradient as one GEMM

# oneDNN's weight gradient is slow on AVX2 CPUs: on this project's 2-core AMD EPYC (AVX2, torch
# 2.14) it took 1.6-2.0x the time of one GEMM over the im2col matrix (copy included) for
# CycleGAN's 3x3 convolutions of 128 and 256 output channels and PatchGAN's 4x4 ones, and about
# the same for the 7x7 stem (64 outputs). With few output channels the GEMM is too thin: 3
# outputs (the generator's last layer) took 8x oneDNN's time.
GEMM_MIN_OUT_CHANNELS = 64
GEMM_DTYPES = (torch.float32, torch.float64)
# The im2col copy is made in blocks of output rows of at most this size: memory stays bounded
# at any image size, and one block covers a whole CPU-sized training batch.
WINDOW_BLOCK_BYTES = 32 << 20


def gemm_weight_grad_pays(grad_output: torch.Tensor, weight: torch.Tensor) -> bool:
    return (grad_output.device.type == "cpu" and grad_output.dtype in GEMM_DTYPES and grad_output.numel() > 0
            and weight.shape[0] >= GEMM_MIN_OUT_CHANNELS)


def gemm_weight_grad(grad_output: torch.Tensor, x: torch.Tensor, kernel_size: tuple[int, int], stride, padding,
                     dilation) -> torch.Tensor:
    """d loss / d weight of conv2d(x, weight, None, stride, padding, dilation) (groups 1), given
    grad_output = d loss / d output: the sum over output pixels of grad_output's row times the
    pixel's input window, as grad_rows^T @ windows, accumulated over blocks of output rows.
    (C_out, C_in, kH, kW), channels-last."""
    windows = _windows(x, tuple(grad_output.shape[2:]), kernel_size, stride, padding, dilation)
    images, out_height, out_width, *window = windows.shape
    window_size = math.prod(window)
    rows = grad_output.permute(0, 2, 3, 1)  # (N, H_out, W_out, C_out): a view of channels-last grads
    block_rows = max(1, WINDOW_BLOCK_BYTES // (out_width * window_size * x.element_size()))
    grad_weight = None
    for block in _row_blocks(images, out_height, block_rows):
        grad_rows = rows[block].reshape(-1, rows.shape[-1]).t()
        block_windows = windows[block].reshape(-1, window_size)  # the im2col copy
        grad_weight = (grad_rows @ block_windows if grad_weight is None
                       else grad_weight.addmm_(grad_rows, block_windows))
    return grad_weight.view(-1, *window).permute(0, 3, 1, 2)


def _windows(x: torch.Tensor, output_size: tuple[int, int], kernel_size, stride, padding,
             dilation) -> torch.Tensor:
    """x's convolution windows, (N, H_out, W_out, kH, kW, C_in) with output_size = (H_out, W_out):
    a strided view of channels-last, zero-padded x whose rows are in a channels-last weight's
    (kH, kW, C_in) order."""
    if any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    x = x.contiguous(memory_format=torch.channels_last)
    image_stride, channel_stride, row_stride, column_stride = x.stride()
    return x.as_strided((x.shape[0], *output_size, *kernel_size, x.shape[1]),
                        (image_stride, stride[0] * row_stride, stride[1] * column_stride, dilation[0] * row_stride,
                         dilation[1] * column_stride, channel_stride))


def _row_blocks(images: int, rows: int, block_rows: int) -> list:
    """Indices into (N, H_out, ...) covering it in blocks of at most block_rows output rows:
    whole images together, or one image's rows in pieces."""
    if block_rows >= rows:
        step = block_rows // rows
        return [slice(start, start + step) for start in range(0, images, step)]
    return [(image, slice(start, start + block_rows))
            for image in range(images) for start in range(0, rows, block_rows)]


def _zero_padded_conv(x: torch.Tensor, weight: torch.Tensor, stride: list[int], padding: list[int],
                      dilation: list[int]) -> torch.Tensor:
    return torch.ops.aten.convolution(x, weight, None, stride, padding, dilation, False, [0, 0], 1)


def _conv2d_cpu_setup_context(ctx, inputs, output):
    x, weight, *ctx.geometry = inputs
    ctx.save_for_backward(x, weight)


def _conv2d_cpu_vjp(ctx, grad_output):
    x, weight = ctx.saved_tensors
    stride, padding, dilation = ctx.geometry
    if torch.is_grad_enabled():  # double backward: see recomputed_grads
        grads = recomputed_grads(lambda x, weight: F.conv2d(x, weight, None, stride, padding, dilation), (x, weight),
                                 grad_output)
    else:
        grads = _zero_padded_grads(grad_output, x, weight, stride, padding, dilation, ctx.needs_input_grad[:2])
    return *grads, None, None, None


# conv2d without bias, zero padding: oneDNN forward and input gradient, gemm_weight_grad where it pays
conv2d_cpu = _backends.register(_backends.Kernel("conv2d_cpu", _zero_padded_conv, native=_zero_padded_conv,
                                                 vjp=_conv2d_cpu_vjp,
                                                 setup_context=_conv2d_cpu_setup_context)).native


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
