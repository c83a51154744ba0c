"""fuse(model): rewrite a plain torch model's conv -> [InstanceNorm2d] -> [Leaky]ReLU runs into fused blocks.

Inside every nn.Sequential of the model, a run of

    [ReflectionPad2d | ZeroPad2d]  Conv2d  InstanceNorm2d  [ReLU | LeakyReLU]      -> FusedConvNormAct
    [ReflectionPad2d | ZeroPad2d]  Conv2d  (ReLU | LeakyReLU)                      -> FusedConvLeakyReLU
                                   ConvTranspose2d  InstanceNorm2d  [ReLU | LeakyReLU]

is computed by one fused block. The rewrite keeps every state_dict key: the run's first
convolution is replaced by a FusedRun that owns the convolution's own parameters (the same
Parameter objects, under the same names) and computes the whole run; the run's other layers
are replaced by PassThrough modules that keep their parameters (an affine norm's weight and
bias) under the same names and return their input. Checkpoints load into the fused model and
out of it unchanged, and optimisers built before fusing still hold the right parameters.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from culturegan.nn.blocks import ACTIVATION_LAYERS, FusedConvLeakyReLU, FusedConvNormAct, FusionError

PAD_LAYERS = (nn.ReflectionPad2d, nn.ZeroPad2d)


class FusedRun(nn.Module):
    """Stands where a fused run's convolution stood: owns its parameters, computes the run."""

    def __init__(self, block: nn.Module, conv: nn.Module):
        super().__init__()
        self.weight = conv.weight
        self.bias = conv.bias
        self.__dict__["block"] = block  # not a submodule: its parameters are registered here and in PassThroughs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def extra_repr(self) -> str:
        return " -> ".join(type(layer).__name__ for layer in self.block) + f" ({type(self.block).__name__})"


class PassThrough(nn.Module):
    """Stands where a fused layer stood: keeps its parameters and buffers, returns its input."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        for name, parameter in layer.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        for name, buffer in layer.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        self.fused_layer = type(layer).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"fused {self.fused_layer}"


@dataclasses.dataclass
class FuseReport:
    """What fuse() rewrote (``fused``) and which candidate runs it left alone, with why (``skipped``)."""

    fused: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fused {len(self.fused)} block(s)"] + [f"  {entry}" for entry in self.fused]
        lines += [f"skipped {len(self.skipped)}"] + [f"  {entry}" for entry in self.skipped] if self.skipped else []
        return "\n".join(lines)


def _padding_of(pad: nn.Module) -> tuple[str, tuple[int, int]]:
    """(padding_mode, (pad_h, pad_w)) of a symmetric ReflectionPad2d or ZeroPad2d."""
    left, right, top, bottom = pad.padding
    if left != right or top != bottom:
        raise FusionError(f"asymmetric padding {pad.padding} is not fused")
    return ("reflect" if isinstance(pad, nn.ReflectionPad2d) else "zeros"), (top, left)


def _with_padding(conv: nn.Conv2d, pad: nn.Module | None) -> nn.Conv2d:
    """The convolution with the pad layer folded in (the same Parameter objects, no copy)."""
    if pad is None:
        return conv
    mode, padding = _padding_of(pad)
    if any(conv.padding):
        raise FusionError(f"a {type(pad).__name__} before a Conv2d with padding={conv.padding} is not fused")
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding, conv.dilation,
                       conv.groups, conv.bias is not None, mode, device="meta")
    folded.weight, folded.bias = conv.weight, conv.bias
    return folded


def _match(layers: list[nn.Module], start: int) -> tuple[int, nn.Module] | None:
    """(length, fused block) of the run starting at layers[start], or None if none starts there."""
    index = start
    pad = layers[index] if isinstance(layers[index], PAD_LAYERS) else None
    index += pad is not None
    if index >= len(layers) or type(layers[index]) not in (nn.Conv2d, nn.ConvTranspose2d):
        return None
    conv = layers[index]
    follower = layers[index + 1] if index + 1 < len(layers) else None
    if type(follower) is nn.InstanceNorm2d:
        after = layers[index + 2] if index + 2 < len(layers) else None
        activation = after if isinstance(after, ACTIVATION_LAYERS) else None
        if pad is not None and isinstance(conv, nn.ConvTranspose2d):
            raise FusionError("a pad layer before a ConvTranspose2d is not fused")
        block = FusedConvNormAct.from_layers(_with_padding(conv, pad) if pad else conv, follower, activation)
        return index + 2 + (activation is not None) - start, block
    if isinstance(follower, ACTIVATION_LAYERS) and type(conv) is nn.Conv2d:
        return index + 2 - start, FusedConvLeakyReLU.from_layers(_with_padding(conv, pad), follower)
    return None


def _describe(path: str, first: int, layers: list[nn.Module]) -> str:
    names = " + ".join(type(layer).__name__ for layer in layers)
    return f"{path}[{first}:{first + len(layers)}] {names}"


def _fuse_sequential(sequential: nn.Sequential, path: str, report: FuseReport) -> None:
    layers = list(sequential)
    names = list(sequential._modules)
    start = 0
    while start < len(layers):
        try:
            match = _match(layers, start)
        except FusionError as error:
            report.skipped.append(f"{_describe(path, start, layers[start:start + 2])}: {error}")
            start += 1
            continue
        if match is None:
            start += 1
            continue
        length, block = match
        run = layers[start:start + length]
        conv_index = start + isinstance(run[0], PAD_LAYERS)
        for offset, layer in enumerate(run):
            index = start + offset
            replacement = FusedRun(block, layer) if index == conv_index else PassThrough(layer)
            setattr(sequential, names[index], replacement)
        report.fused.append(f"{_describe(path, start, run)} -> {type(block).__name__}")
        start += length


def fuse(model: nn.Module) -> FuseReport:
    """Rewrites ``model`` in place (see the module docstring) and returns what it fused.

    The fused model computes the same function, with the same parameters, state_dict keys and
    gradients (within float tolerance). Blocks already fused and layers outside nn.Sequential
    containers are left alone.
    """
    report = FuseReport()
    for path, module in list(model.named_modules()):
        if type(module) is nn.Sequential:
            _fuse_sequential(module, path or "<model>", report)
    return report
