"""Fused convolution blocks as drop-in modules for the torch layer patterns they replace.

Each block is an nn.Sequential of the very torch layers it fuses, so its state_dict has the
same keys and shapes as the unfused ``nn.Sequential(Conv2d, [InstanceNorm2d], [Leaky]ReLU)``:
a checkpoint saved from either loads into the other and gives the same outputs. Only the
forward differs: one culturegan.ops call instead of one kernel chain per layer.
"""

from __future__ import annotations

import torch
from torch import nn

from culturegan import ops
from culturegan.ops._conv import PADDING_MODES
from culturegan.ops.instance_norm_act import activation_slope

ACTIVATION_LAYERS = (nn.ReLU, nn.LeakyReLU)


class FusionError(ValueError):
    """The layers cannot be fused; the message says which setting stands in the way."""


def _check_conv(conv: nn.Module, transposed: bool = False) -> None:
    expected = nn.ConvTranspose2d if transposed else nn.Conv2d
    if type(conv) is not expected:
        raise FusionError(f"expected an nn.{expected.__name__}, got {type(conv).__name__}")
    if conv.groups != 1:
        raise FusionError(f"grouped convolutions (groups={conv.groups}) are not fused")
    if isinstance(conv.padding, str):
        raise FusionError(f"padding={conv.padding!r} is not fused: give the padding as numbers")
    if conv.padding_mode not in PADDING_MODES:
        raise FusionError(f"padding_mode={conv.padding_mode!r} is not fused (only {' and '.join(PADDING_MODES)})")


def _check_norm(norm: nn.Module) -> None:
    if type(norm) is not nn.InstanceNorm2d:
        raise FusionError(f"expected an nn.InstanceNorm2d, got {type(norm).__name__}")
    if norm.track_running_stats:
        raise FusionError("InstanceNorm2d(track_running_stats=True) uses running statistics in eval mode: not fused")


def activation_of(layer: nn.Module | None) -> tuple[str, float]:
    """The (activation, negative_slope) of culturegan.ops for a ReLU, a LeakyReLU or None."""
    if layer is None:
        return "none", 0.0
    if type(layer) is nn.ReLU:
        return "relu", 0.0
    if type(layer) is nn.LeakyReLU:
        if layer.negative_slope < 0:
            raise FusionError(f"LeakyReLU(negative_slope={layer.negative_slope}) < 0 is not fused")
        return "leaky_relu", float(layer.negative_slope)
    raise FusionError(f"expected an nn.ReLU or nn.LeakyReLU, got {type(layer).__name__}")


class FusedConvLeakyReLU(nn.Sequential):
    """``nn.Sequential(nn.Conv2d(...), nn.LeakyReLU(negative_slope))``, fused (ops.conv2d_bias_leaky_relu).

    ``gain`` and ``clamp`` (StyleGAN2's) have no torch layer: with other values than 1 and None
    the block computes more than the plain pair, and says so in its repr.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, padding_mode: str = "zeros", negative_slope: float = 0.2, gain: float = 1.0,
                 clamp: float | None = None, *, backend: str | None = None, device=None, dtype=None):
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias,
                         padding_mode=padding_mode, device=device, dtype=dtype)
        self._init_from(conv, nn.LeakyReLU(negative_slope), gain, clamp, backend)

    def _init_from(self, conv, activation, gain, clamp, backend):
        _check_conv(conv)
        if activation is None:
            raise FusionError("a conv + LeakyReLU block needs its activation layer")
        _, negative_slope = activation_of(activation)
        nn.Sequential.__init__(self, conv, activation)
        self.negative_slope, self.gain, self.clamp, self.backend = negative_slope, gain, clamp, backend

    @classmethod
    def from_layers(cls, conv: nn.Conv2d, activation: nn.LeakyReLU | nn.ReLU, gain: float = 1.0, clamp: float | None = None,
                    backend: str | None = None) -> FusedConvLeakyReLU:
        """The block around existing layers (their parameters are shared, not copied)."""
        block = cls.__new__(cls)
        block._init_from(conv, activation, gain, clamp, backend)
        return block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self[0]
        return ops.conv2d_bias_leaky_relu(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.padding_mode,
                                          conv.dilation, self.negative_slope, self.gain, self.clamp,
                                          backend=self.backend)

    def extra_repr(self) -> str:
        extras = [f"gain={self.gain}"] if self.gain != 1.0 else []
        return ", ".join(extras + ([f"clamp={self.clamp}"] if self.clamp is not None else []))


class FusedConvNormAct(nn.Sequential):
    """``nn.Sequential(conv, nn.InstanceNorm2d(C), activation)``, fused
    (ops.conv2d_instance_norm_act, or ops.conv_transpose2d_instance_norm_act for an
    nn.ConvTranspose2d: the decoder block).

    With ``norm="adain"`` the normalisation has no affine parameters and ``forward(x,
    style_scale, style_shift)`` takes AdaIN's (N, C) scale and shift per call. ``activation``
    may be None (CycleGAN's residual blocks end in a norm).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 bias: bool = True, padding_mode: str = "zeros", norm: str = "instance", affine: bool = False,
                 activation: str | None = "relu", negative_slope: float = 0.2, eps: float = 1e-5, *,
                 transposed: bool = False, output_padding=0, backend: str | None = None, device=None, dtype=None):
        if norm not in ("instance", "adain"):
            raise ValueError(f"norm must be 'instance' or 'adain', got {norm!r}")
        if norm == "adain" and affine:
            raise ValueError("norm='adain' takes its scale and shift from the style: affine must be False")
        factory = dict(device=device, dtype=dtype)
        if transposed:
            conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                                      bias=bias, dilation=dilation, **factory)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias,
                             padding_mode=padding_mode, **factory)
        layers = {None: None, "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(negative_slope)}
        if activation not in layers:
            raise ValueError(f"activation must be 'relu', 'leaky_relu' or None, got {activation!r}")
        self._init_from(conv, nn.InstanceNorm2d(out_channels, eps=eps, affine=affine, **factory), layers[activation],
                        norm, backend)

    def _init_from(self, conv, norm, activation, kind, backend):
        _check_conv(conv, transposed=isinstance(conv, nn.ConvTranspose2d))
        _check_norm(norm)
        activation_name, negative_slope = activation_of(activation)
        nn.Sequential.__init__(self, *[layer for layer in (conv, norm, activation) if layer is not None])
        self.activation, self.negative_slope, self.norm, self.backend = activation_name, negative_slope, kind, backend
        self.shared_statistics = None  # a culturegan.nn.SharedNormStatistics while one is active

    @classmethod
    def from_layers(cls, conv: nn.Conv2d | nn.ConvTranspose2d, norm: nn.InstanceNorm2d,
                    activation: nn.Module | None = None, norm_kind: str = "instance",
                    backend: str | None = None) -> FusedConvNormAct:
        """The block around existing layers (their parameters are shared, not copied)."""
        block = cls.__new__(cls)
        block._init_from(conv, norm, activation, norm_kind, backend)
        return block

    def forward(self, x: torch.Tensor, style_scale: torch.Tensor | None = None,
                style_shift: torch.Tensor | None = None) -> torch.Tensor:
        conv, norm = self[0], self[1]
        if (self.norm == "adain") != (style_scale is not None):
            raise ValueError("an AdaIN block takes style_scale and style_shift; an instance-norm block takes neither")
        if self.shared_statistics is not None:
            return self._normalise_with_shared(x, style_scale, style_shift)
        args = dict(norm_weight=norm.weight, norm_bias=norm.bias, style_scale=style_scale, style_shift=style_shift,
                    activation=self.activation, negative_slope=self.negative_slope, eps=norm.eps,
                    backend=self.backend)
        if isinstance(conv, nn.ConvTranspose2d):
            return ops.conv_transpose2d_instance_norm_act(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                                          conv.output_padding, conv.dilation, **args)
        return ops.conv2d_instance_norm_act(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.padding_mode,
                                            conv.dilation, **args)

    def _normalise_with_shared(self, x, style_scale, style_shift) -> torch.Tensor:
        """The block with the shared statistics instead of z's own (see SharedNormStatistics)."""
        conv, norm = self[0], self[1]
        z = conv(x)
        mean, std = self.shared_statistics.statistics(self, z, norm.eps)
        gamma, beta = (style_scale, style_shift) if style_scale is not None else (norm.weight, norm.bias)
        if gamma is None:  # instance norm without affine parameters
            gamma, beta = z.new_ones(z.shape[1]), z.new_zeros(z.shape[1])
        slope = activation_slope(self.activation, self.negative_slope)
        return ops.channel_affine(z, mean, gamma / std, beta.expand_as(mean), slope, backend=self.backend)

    def extra_repr(self) -> str:
        return f"norm={self.norm!r}" if self.norm != "instance" else ""
