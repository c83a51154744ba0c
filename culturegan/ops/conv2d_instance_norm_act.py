"""conv2d_instance_norm_act and conv_transpose2d_instance_norm_act, with their references.

    y = act(instance_norm(conv(x, weight)) * gamma + beta)      conv = conv2d or conv_transpose2d

Every CycleGAN layer but the first and last (the transposed one is its decoder's upsampling
layer), and culture-conditioned (AdaIN) generators. The convolution's bias is cancelled exactly
by the normalisation: it is accepted for drop-in compatibility with nn.Conv2d, not added, and
gets a zero gradient. The cuda and cpu backends run the convolution through ATen (cuDNN,
oneDNN; the cpu backend's weight gradient is a GEMM where that is faster: _conv.conv2d_cpu) and
then instance_norm_act (one statistics pass, one normalise-and-activate pass). On
triton, conv2d_instance_norm_act is the implicit-GEMM convolution (kernels/conv2d.py) whose
epilogue also keeps the statistics, so z is read once more only to normalise it; the
transposed block takes the ATen path there too. The backward is one instance_norm_act_backward kernel,
then ATen's convolution backward.
"""

from __future__ import annotations

import functools

import torch

from culturegan.ops import _autocast, _backends, _conv
from culturegan.ops.channel_affine import KERNEL as CHANNEL_AFFINE
from culturegan.ops._autograd import recomputed_grads
from culturegan.ops.conv2d_bias_leaky_relu import empty_output, output_size, triton_geometry
from culturegan.ops.instance_norm_act import BACKWARD as INSTANCE_NORM_ACT_BACKWARD, check_arguments, instance_norm_act
from culturegan.ops.instance_norm_act import per_sample


def _block(convolve, backend: str, x, weight, bias, geometry, norm):
    """conv (with its bias on the reference, which adds it like the unfused layers) + norm + act."""
    if backend == "reference":
        return instance_norm_act(convolve(x, weight, bias, *geometry), *norm, backend="reference")
    if backend == "triton" and convolve is _conv.convolve:
        y = _on_triton(x, weight, geometry, norm)
    else:
        y = instance_norm_act(convolve(x, weight, None, *geometry, backend=backend), *norm, backend=backend)
    return _conv.cancelled_bias(y, bias)


# ------------------------------------------ triton: the statistics in the convolution's epilogue

# Output pixels per tile of the Triton convolution in statistics mode (one tile's moments each).
TILE_PIXELS = {"cpu": 32, "cuda": 128}


def _merge_tiles(tile_mean: torch.Tensor, tile_m2: torch.Tensor, pixels: int, tile: int,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per (n, c) from the tiles' [N, T, C] moments (Chan et al.: no E[z^2] - E[z]^2)."""
    tiles = tile_mean.shape[1]
    counts = (pixels - torch.arange(tiles, device=tile_mean.device) * tile).clamp(max=tile).to(tile_mean.dtype)
    mean = (tile_mean * counts[:, None]).sum(1) / pixels
    m2 = tile_m2.sum(1) + (counts[:, None] * (tile_mean - mean[:, None, :]).square()).sum(1)
    return mean, torch.sqrt(m2 / pixels + eps)


def _triton_forward(x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                    stride: list[int], padding: list[int], reflect: bool, dilation: list[int],
                    negative_slope: float | None, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    """(y, z, mean, std): z = the convolution, written once by the implicit-GEMM kernel whose
    epilogue also keeps per-tile moments; y = the normalised, scaled, shifted, activated z (one
    channel_affine pass). z, mean and std are kept for the backward, not differentiable."""
    from culturegan.kernels import conv2d as kernels

    _conv.check_conv_input(x, weight, None, "zeros")  # direct calls of the op get the same checks
    out_height, out_width = output_size(x, weight, stride, padding, dilation)
    if out_height * out_width < 2:
        raise ValueError(f"instance normalisation needs more than 1 spatial element per channel: the convolution "
                         f"of x {tuple(x.shape)} gives {out_height}x{out_width}")
    z = empty_output(x, weight.shape[0], out_height, out_width)
    tile = TILE_PIXELS["cpu" if x.device.type == "cpu" else "cuda"]
    moments = kernels.forward(x.contiguous(memory_format=torch.channels_last), weight, None, z, stride, padding,
                              dilation, reflect, 1.0, 1.0, None, tile_pixels=tile)  # slope 1: no activation
    mean, std = _merge_tiles(*moments, out_height * out_width, tile, eps)
    y = CHANNEL_AFFINE.triton(z, mean, gamma / std, beta, negative_slope)
    return y, z, mean, std


def _fake(x, weight, gamma, beta, stride, padding, reflect, dilation, negative_slope, eps):
    z = empty_output(x, weight.shape[0], *output_size(x, weight, stride, padding, dilation))
    return torch.empty_like(z), z, torch.empty_like(gamma), torch.empty_like(gamma)


def _setup_context(ctx, inputs, output):
    x, weight, gamma, beta, stride, padding, reflect, dilation, negative_slope, eps = inputs
    _, z, mean, std = output
    ctx.save_for_backward(x, weight, gamma, beta, z, mean, std)
    ctx.mark_non_differentiable(z, mean, std)
    ctx.geometry = (stride, padding, "reflect" if reflect else "zeros", dilation)
    ctx.negative_slope, ctx.eps = negative_slope, eps


def _vjp(ctx, grad_y, _grad_z, _grad_mean, _grad_std):
    x, weight, gamma, beta, z, mean, std = ctx.saved_tensors
    if torch.is_grad_enabled():  # double backward: see recomputed_grads
        def compose(x, weight, gamma, beta):
            z = _conv.convolve(x, weight, None, *ctx.geometry)
            return instance_norm_act(z, activation="none" if ctx.negative_slope is None else "leaky_relu",
                                     negative_slope=ctx.negative_slope or 0.0, style_scale=gamma, style_shift=beta,
                                     eps=ctx.eps, backend="triton")

        return *recomputed_grads(compose, (x, weight, gamma, beta), grad_y), *[None] * 6
    grad_z, grad_gamma, grad_beta = INSTANCE_NORM_ACT_BACKWARD.triton(grad_y, z, mean, std, gamma, beta,
                                                                          ctx.negative_slope)
    grad_x, grad_weight = _conv.input_and_weight_grads(grad_z, x, weight, *ctx.geometry, ctx.needs_input_grad[:2])
    return grad_x, grad_weight, grad_gamma, grad_beta, *[None] * 6


# Triton only: the cpu and cuda backends compose ATen's convolution and instance_norm_act.
FORWARD = _backends.register(_backends.Kernel("conv2d_instance_norm_act", _fake, native=None, triton=_triton_forward,
                                              vjp=_vjp, setup_context=_setup_context))


def _on_triton(x, weight, geometry, norm):
    stride, padding, padding_mode, dilation = geometry
    stride, padding, reflect, dilation = triton_geometry(x, stride, padding, padding_mode, dilation)
    out_height, out_width = output_size(x, weight, stride, padding, dilation)
    # z's shape, dtype and device for the argument checks, without memory (a broadcast scalar).
    stand_in = x.new_empty(()).expand(x.shape[0], weight.shape[0], max(out_height, 1), max(out_width, 1))
    gamma, beta, slope, eps = check_arguments(stand_in, *norm)
    gamma, beta = per_sample(gamma, beta, stand_in.shape[:2], x.dtype, x.device)
    return FORWARD.triton(x, weight, gamma, beta, stride, padding, reflect, dilation, slope, eps)[0]


def _check(x, weight, bias, geometry, norm) -> tuple:
    _conv.check_conv_input(x, weight, bias, padding_mode=geometry[2])
    return x, weight, bias, geometry, norm


def _check_transposed(x, weight, bias, geometry, norm) -> tuple:
    _conv.check_conv_input(x, weight, bias, "zeros", transposed=True)
    return x, weight, bias, geometry, norm


BLOCK = _backends.declare(_backends.Op("conv2d_instance_norm_act", _check,
                                       functools.partial(_block, _conv.convolve, "reference"),
                                       functools.partial(_block, _conv.convolve)))
TRANSPOSED_BLOCK = _backends.declare(_backends.Op("conv_transpose2d_instance_norm_act", _check_transposed,
                                                  functools.partial(_block, _conv.convolve_transposed, "reference"),
                                                  functools.partial(_block, _conv.convolve_transposed)))


@_autocast.lowered
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
    return BLOCK(x, weight, bias, (stride, padding, padding_mode, dilation),
                 (norm_weight, norm_bias, style_scale, style_shift, activation, negative_slope, eps), backend=backend)


@_autocast.lowered
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
    return TRANSPOSED_BLOCK(x, weight, bias, (stride, padding, output_padding, dilation),
                            (norm_weight, norm_bias, style_scale, style_shift, activation, negative_slope, eps),
                            backend=backend)
