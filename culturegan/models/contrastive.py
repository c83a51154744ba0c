"""CUT's pieces beside its generator (Park et al., ECCV 2020): the generator's intermediate
features at chosen layers (layer_features), and the small MLP per layer that projects sampled
feature patches for the PatchNCE loss (PatchHeads, CUT's ``netF = mlp_sample``).

A layer index i names the output of ``generator.model[i]``, the generator's nn.Sequential (a
ResnetGenerator: 0-3 stem, 4-6 and 7-9 the two downsamplings, 10.. the residual blocks). In a
fused generator (culturegan.nn.fuse) a fused run's convolution computes the whole run and the
layers after it pass it through, so every index of a run gives the run's output: 0 the input
pixels, 4 and 7 the first and second downsampling (after their norm and ReLU, where CUT takes the
convolutions' outputs), 10 + k the output of residual block k.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_WIDTH = 256  # CUT's netF_nc


def layer_features(generator: nn.Module, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
    """The outputs of generator.model[i] for each i of `layers` (in that order) for input x; the
    layers after the last one asked for are not run. An index the generator lacks is an error
    naming nce_layers (the setting that chose them)."""
    sequence = generator.model
    missing = [i for i in layers if not 0 <= i < len(sequence)]
    if missing:
        raise ValueError(f"nce_layers: the generator has layers 0..{len(sequence) - 1}, not {missing}")
    outputs, last = {}, max(layers)
    for index, layer in enumerate(sequence):
        x = layer(x)
        if index in layers:
            outputs[index] = x
        if index == last:
            break
    return [outputs[i] for i in layers]


@torch.no_grad()
def feature_shapes(generator: nn.Module, layers: tuple[int, ...], size: int) -> list[tuple[int, int, int]]:
    """(channels, height, width) at each of `layers` for size x size inputs (one probe image)."""
    parameter = next(generator.parameters())
    probe = torch.zeros(1, 3, size, size, device=parameter.device, dtype=parameter.dtype)
    return [tuple(f.shape[1:]) for f in layer_features(generator, probe, layers)]


def sample_patches(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(N, P, C): the C features of (N, C, H, W) `features` at the P flat positions (y * W + x)."""
    return features.flatten(2)[:, :, positions].transpose(1, 2)


class PatchHeads(nn.Module):
    """One MLP per feature layer, Linear(C, 256) -> ReLU -> Linear(256, 256), as CUT's netF
    (whose L2 normalisation the PatchNCE loss does itself). Trained with the generator."""

    def __init__(self, channels: list[int], width: int = HEAD_WIDTH):
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(c, width), nn.ReLU(), nn.Linear(width, width))
                                   for c in channels)

    def forward(self, patches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each layer's (N, P, C) patches projected by its head to (N, P, width)."""
        if len(patches) != len(self.heads):
            raise ValueError(f"{len(patches)} feature layers for {len(self.heads)} heads")
        return [head(p) for head, p in zip(self.heads, patches)]
