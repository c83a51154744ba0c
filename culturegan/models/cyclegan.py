"""CycleGAN's generator and discriminator, with the layout of pytorch-CycleGAN-and-pix2pix.

ResnetGenerator (7x7 reflect-padded stem, two stride-2 convolutions, residual blocks, two
transposed convolutions, 7x7 head, tanh) and NLayerDiscriminator (PatchGAN: 4x4 convolutions,
LeakyReLU 0.2), with instance normalisation, as that repository builds them by default
(``--netG resnet_9blocks --netD basic --norm instance``; ``norm="batch"`` gives ``--norm
batch``, whose convolutions have no bias, and ``use_dropout`` ``--use_dropout``). Their
state_dict keys and shapes are that repository's, so its published checkpoints load into them.
They are plain torch layers: ``culturegan.nn.fuse(model)`` rewrites them into fused blocks
(``fused=True`` does it here; batch-norm runs stay unfused).
"""

from __future__ import annotations

import torch
from torch import nn

from culturegan.nn import fuse

NORMS = {"instance": nn.InstanceNorm2d, "batch": nn.BatchNorm2d}
UPSAMPLING = ("transpose", "bilinear")


def _norm_layer(norm: str):
    """CycleGAN's norm layer (instance: no affine, no running statistics; batch: affine) and
    whether the convolutions before it have a bias (only with instance norm)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return NORMS[norm], norm == "instance"


class ResnetBlock(nn.Module):
    """x + (pad, conv3x3, norm, ReLU, [dropout], pad, conv3x3, norm)(x)."""

    def __init__(self, channels: int, use_dropout: bool = False, norm: str = "instance"):
        super().__init__()
        norm_layer, bias = _norm_layer(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(channels),
                  nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _upsampling(in_channels: int, out_channels: int, bias: bool, mode: str) -> nn.Module:
    """CycleGAN's stride-2 transposed convolution ("transpose"), or a bilinear 2x upsampling and a
    3x3 convolution ("bilinear", as CUT's generator upsamples): a transposed convolution whose
    kernel does not divide by its stride overlaps unevenly and draws a one-pixel checkerboard
    (Odena et al. 2016), which a cycle loss can also use to hide the input. The bilinear pair sits
    at the transposed convolution's index (model.N.1.weight), so every other key is unchanged."""
    if mode == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect", bias=bias))


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: resnet_9blocks (the default) has 11,378,179 parameters;
    ``upsample="bilinear"`` upsamples without a transposed convolution (see _upsampling)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 use_dropout: bool = False, fused: bool = False, norm: str = "instance", upsample: str = "transpose"):
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)}, got {upsample!r}")
        norm_layer, bias = _norm_layer(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias), norm_layer(ngf), nn.ReLU(True)]
        for i in range(2):  # downsampling
            channels = ngf * 2**i
            layers += [nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1, bias=bias),
                       norm_layer(2 * channels), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, use_dropout, norm) for _ in range(n_blocks)]
        for i in range(2):  # upsampling
            channels = ngf * 2 ** (2 - i)
            layers += [_upsampling(channels, channels // 2, bias, upsample), norm_layer(channels // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.n_blocks = n_blocks
        if fused:
            fuse(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def parts(self) -> dict[str, list[str]]:
        """Parameter names by part: "encoder" (stem and downsampling), "block0".. and "decoder"
        (upsampling and head), for freezing or fine-tuning parts of a pretrained generator."""
        first_block = 10  # model.0-3 stem, model.4-9 two downsampling conv/norm/ReLU triples
        names: dict[str, list[str]] = {}
        for name, _ in self.named_parameters():
            index = int(name.split(".")[1])
            if index < first_block:
                part = "encoder"
            elif index < first_block + self.n_blocks:
                part = f"block{index - first_block}"
            else:
                part = "decoder"
            names.setdefault(part, []).append(name)
        return names


class NLayerDiscriminator(nn.Module):
    """CycleGAN's PatchGAN discriminator: n_layers=3 (``basic``) has 2,764,737 parameters."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, fused: bool = False,
                 norm: str = "instance"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        norm_layer, bias = _norm_layer(norm)
        layers = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        multiplier = 1
        for n in range(1, n_layers + 1):
            previous, multiplier = multiplier, min(2**n, 8)
            layers += [nn.Conv2d(ndf * previous, ndf * multiplier, 4, stride=2 if n < n_layers else 1, padding=1,
                                 bias=bias), norm_layer(ndf * multiplier), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * multiplier, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        if fused:
            fuse(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
