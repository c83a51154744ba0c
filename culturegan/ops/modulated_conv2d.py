"""modulated_conv2d: StyleGAN2's style-modulated convolution, with its reference.

NVlabs' semantics (stylegan2-ada-pytorch training/networks.py, modulated_conv2d). Per sample n,
with styles s (N, C_in) and the shared weight W (C_out, C_in, kH, kW):

    W'[n, o, i] = W[o, i] * s[n, i]                                       modulation
    W'[n, o]   *= d[n, o] = 1 / sqrt(sum_{i, kh, kw} W'[n, o, i]^2 + 1e-8)   demodulation (optional)
    y[n] = conv2d_resample(x[n], W'[n], resample_filter, up, down, padding, flip_weight) + noise

noise, (N, 1, H', W') or anything that broadcasts to y's shape, is added as given (the caller
scales it by its noise strength). The reference materialises the N modulated weights.

The fast backends (cpu, cuda, triton) fold the modulation into the input and the
demodulation into the output instead of materialising N weights:

    y = conv2d_resample(x * s[n, i], W) * d[n, o] + noise,   d = rsqrt(s^2 @ (sum_{kh,kw} W^2)^T + eps)

- one convolution with the shared weight (conv2d_resample's fast order on the same backend:
  ATen's convolution, ops.upfirdn2d); its weight gradient is reduced over the batch by the
  convolution's backward, not by N per-sample weight gradients;
- d from one (N, C_in) x (C_in, C_out) GEMM in float32 (NVlabs squares and sums the N
  modulated weights to get it, even when it does not convolve with them);
- x * s and * d (+ noise) as one ATen pass each (a broadcast multiply, or one addcmul with
  noise), the scales rounded to x's dtype as NVlabs does. channel_affine would keep them in
  float32, but its backward also reduces the center and shift gradients: training ran 1.3x
  slower with it for x * s on the 2-core CPU VM.
Every step is differentiable to any order (R1, path-length regularisation).

NVlabs runs the other form at inference (fused_modconv): one grouped convolution over the N
modulated weights. On the 2-core CPU VM it never paid: 2-14x slower at 8-16 px with 512
channels (the N weights outweigh the activations), and within noise (0.93-1.24x) at 32-128 px
at batch 1 and 2; so every backend folds. For float16 x with demodulation the scales are
pre-normalised against overflow as NVlabs does, with d's epsilon rescaled so that the result
is float32's function (folded_scales).
"""

from __future__ import annotations

import torch

from culturegan.ops import _autocast, _backends, _checks
from culturegan.ops._layout import math_dtype
from culturegan.ops.upfirdn2d import TRITON_FIRST_ON_CUDA
from culturegan.ops.conv2d_resample import (check_resampling, conv2d_resample_fast, conv2d_resample_reference,
                                            output_size)

DEMODULATION_EPS = 1e-8  # NVlabs' epsilon inside the square root


def modulated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                               noise: torch.Tensor | None = None, up: int = 1, down: int = 1, padding=0,
                               resample_filter: torch.Tensor | None = None, demodulate: bool = True,
                               flip_weight: bool = True) -> torch.Tensor:
    """The definition: the N modulated (and demodulated) weights in x's math type, then one
    grouped convolution over the batch (autograd by torch; exact in float64)."""
    batch, in_channels, height, width = x.shape
    math = math_dtype(x.dtype)
    modulated = weight.to(math)[None] * styles.to(math)[:, None, :, None, None]  # (N, C_out, C_in, kH, kW)
    if demodulate:
        modulated = modulated * (modulated.square().sum([2, 3, 4], keepdim=True) + DEMODULATION_EPS).rsqrt()
    y = conv2d_resample_reference(x.reshape(1, batch * in_channels, height, width),
                                  modulated.reshape(-1, *weight.shape[1:]).to(x.dtype), resample_filter, up, down,
                                  padding, batch, flip_weight)
    y = y.reshape(batch, -1, *y.shape[2:])
    return y if noise is None else y + noise.to(x.dtype)


# ---------------------------------------------------------------------------- argument checks

def _check_floating_operand(t, name: str, x: torch.Tensor) -> None:
    """A floating tensor on x's device, in any floating dtype (the op computes in x's)."""
    _checks.check_tensor(t, name)
    _checks.check_floating(t, name)
    _checks.check_same_device(t, name, x, "x")


def _check_weight_and_styles(x: torch.Tensor, weight, styles) -> None:
    _checks.check_channel_tensor(weight, "weight", min_dim=4, max_dim=4)
    _check_floating_operand(weight, "weight", x)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight (C_out, C_in, kH, kW) has shape {tuple(weight.shape)}, which takes "
                         f"{weight.shape[1]} input channels, but x has {x.shape[1]} (shape {tuple(x.shape)})")
    _check_floating_operand(styles, "styles", x)
    if styles.shape != x.shape[:2]:
        raise ValueError(f"styles must have shape ({x.shape[0]}, {x.shape[1]}) (x's samples and input channels), "
                         f"got shape {tuple(styles.shape)}")


def _check_noise(noise, output_shape: tuple[int, ...], x: torch.Tensor) -> None:
    if noise is None:
        return
    _check_floating_operand(noise, "noise", x)
    try:
        broadcast = torch.broadcast_shapes(noise.shape, output_shape)
    except RuntimeError:
        broadcast = None
    if broadcast != output_shape:
        raise ValueError(f"noise of shape {tuple(noise.shape)} does not broadcast to the output's shape "
                         f"{output_shape}; pass (N, 1, H', W') noise, H' x W' the output's size")


def _check(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight) -> tuple:
    _checks.check_channel_tensor(x, "x", min_dim=4, max_dim=4)
    _check_weight_and_styles(x, weight, styles)
    kernel_size = tuple(weight.shape[2:])
    resample_filter, up, down, padding = check_resampling(x, kernel_size, resample_filter, up, down, padding)
    output_shape = (x.shape[0], weight.shape[0], *output_size(tuple(x.shape[2:]), kernel_size, resample_filter,
                                                               up, down, padding))
    _check_noise(noise, output_shape, x)
    return x, weight, styles, noise, up, down, padding, resample_filter, bool(demodulate), bool(flip_weight)


# ------------------------------------------------------------------------- fast backends

def demodulation(weight: torch.Tensor, styles: torch.Tensor, eps: float | torch.Tensor = DEMODULATION_EPS):
    """d (N, C_out) = 1 / sqrt(sum_{i,kh,kw} (W[o, i] s[n, i])^2 + eps) as one small GEMM:
    (s^2 @ (sum_{kh,kw} W^2)^T)[n, o], never the N modulated weights."""
    return (styles.square() @ weight.square().sum([2, 3]).t() + eps).rsqrt()


def _half_range_factors(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a (C_out,), b (N,)): a = 1 / (sqrt(C_in kH kW) max_i |W[o, i]|), b = 1 / max_i |s[n, i]|,
    NVlabs' fp16 pre-normalisation. W * a and s * b have |entries| <= 1 / sqrt(C_in kH kW) and
    1, so the float16 convolution of x * s * b with W * a stays near x's magnitude."""
    weight, styles, fan_in = weight.detach(), styles.detach(), weight[0].numel()
    tiny = torch.finfo(weight.dtype).tiny  # an all-zero row or style: finite factors, and a zero output
    a = 1 / (fan_in ** 0.5 * weight.abs().amax(dim=[1, 2, 3]).clamp_min(tiny))
    b = 1 / styles.abs().amax(dim=1).clamp_min(tiny)
    return a, b


def folded_scales(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                  demodulate: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(input scale (N, C_in), output scale (N, C_out) or None, the shared weight in x's dtype)
    with y = conv(x * input scale, weight) * output scale: the modulation and demodulation
    folded out of the weight, the scales in x's math type.

    For float16 x with demodulation, W and s are pre-normalised by a (per output channel) and
    b (per sample) as NVlabs does (_half_range_factors); d's epsilon is scaled by (a b)^2, so
    the output scale is exactly d / (a b) and y is the same function as in float32 (NVlabs
    leaves the epsilon unscaled). a and b are constants to autograd: y does not depend on them.
    """
    math = math_dtype(x.dtype)
    weight, styles = weight.to(math), styles.to(math)
    if not demodulate:
        return styles, None, weight.to(x.dtype)
    if x.dtype != torch.float16:
        return styles, demodulation(weight, styles), weight.to(x.dtype)
    a, b = _half_range_factors(weight, styles)
    weight, styles = weight * a.view(-1, 1, 1, 1), styles * b.view(-1, 1)
    return styles, demodulation(weight, styles, DEMODULATION_EPS * torch.outer(b, a).square()), weight.to(x.dtype)


def _folded(backend: str, x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight):
    """x * s -> one convolution with the shared weight -> * d + noise: one pass over x and one
    over y around the convolution, no modulated weights."""
    input_scale, output_scale, weight = folded_scales(x, weight, styles, demodulate)
    x = x * input_scale.to(x.dtype)[:, :, None, None]
    y = conv2d_resample_fast(backend, x, weight, resample_filter, up, down, padding, 1, flip_weight, False)
    noise = None if noise is None else noise.to(y.dtype)
    if output_scale is None:
        return y if noise is None else y + noise
    output_scale = output_scale.to(y.dtype)[:, :, None, None]
    return y * output_scale if noise is None else torch.addcmul(noise, y, output_scale)


OP = _backends.declare(_backends.Op("modulated_conv2d", _check, modulated_conv2d_reference, _folded,
                                    auto_order=TRITON_FIRST_ON_CUDA))


@_autocast.lowered
def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, down: int = 1, padding=0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, *,
                     backend: str | None = None) -> torch.Tensor:
    """StyleGAN2's modulated convolution, as NVlabs' modulated_conv2d (module docstring).

    Args:
        x: (N, C_in, H, W) float16/bfloat16/float32/float64 tensor (contiguous or channels_last).
        weight: (C_out, C_in, kH, kW) floating tensor on x's device, in any floating dtype (a
            float32 parameter with float16 x, as NVlabs' fp16 layers): the scales are computed
            in x's math type (float32 for the half types), the convolution in x's dtype.
        styles: (N, C_in) floating tensor on x's device: the per-sample input-channel scales.
        noise: None, or a floating tensor that broadcasts to the output's shape, e.g.
            (N, 1, H', W'): added after the demodulation.
        up, down, padding, resample_filter, flip_weight: as conv2d_resample's (f = resample_filter).
        demodulate: normalise each sample's output channels (StyleGAN2's convolutions; ToRGB
            layers pass False).
        backend: "cuda", "triton", "cpu", "reference" or "auto" (see culturegan.ops).

    Returns:
        (N, C_out, H', W') in x's dtype. Differentiable to any order in x, weight, styles and noise.
    """
    return OP(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight, backend=backend)
