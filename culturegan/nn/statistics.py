"""Instance-norm statistics shared across calls, for tiled inference.

A network with instance normalisation run tile by tile normalises every tile by its own
statistics, so the tiles of one image come out in different tones and the seams show. With
SharedNormStatistics the network first runs on the whole image (or a downscaled copy of it
when the whole does not fit), every fused instance-norm block records its (mean, std), and
later calls normalise with the recorded statistics: each tile then equals the untiled result
wherever the tile's own border is farther than the network's receptive field.

    with SharedNormStatistics(generator) as shared:
        generator(whole_image)            # records, one image
        shared.freeze()
        for tile in tiles:
            generator(tile)               # normalised like the whole image
"""

from __future__ import annotations

import torch
from torch import nn

from culturegan import ops
from culturegan.nn.blocks import FusedConvNormAct
from culturegan.nn.fuse import FusedRun


class SharedNormStatistics:
    def __init__(self, model: nn.Module):
        self.blocks = [m.block if isinstance(m, FusedRun) else m for m in model.modules()
                       if isinstance(m, FusedConvNormAct) or isinstance(m, FusedRun)
                       and isinstance(m.block, FusedConvNormAct)]
        unfused = [name for name, m in model.named_modules() if isinstance(m, nn.modules.instancenorm._InstanceNorm)
                   and not any(m is block[1] for block in self.blocks)]
        if unfused:
            raise ValueError(f"shared statistics need fused instance-norm blocks; {type(model).__name__} has unfused "
                             f"InstanceNorm layers {unfused[:4]} (build it with fused=True or culturegan.nn.fuse)")
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.frozen = False

    def __enter__(self) -> SharedNormStatistics:
        for block in self.blocks:
            block.shared_statistics = self
        return self

    def __exit__(self, *exc) -> None:
        for block in self.blocks:
            block.shared_statistics = None

    def freeze(self) -> None:
        """Later calls use the recorded statistics (every block must have recorded once)."""
        missing = sum(id(block) not in self.recorded for block in self.blocks)
        if missing:
            raise RuntimeError(f"{missing} of {len(self.blocks)} instance-norm blocks recorded no statistics: run "
                               "the model once on the whole image before freeze()")
        self.frozen = True

    def statistics(self, block: FusedConvNormAct, z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), (N, C) for z: recorded now, or the frozen ones broadcast to z's batch."""
        if not self.frozen:
            if id(block) in self.recorded:
                raise RuntimeError("a block recorded twice: record on one forward pass, then freeze()")
            self.recorded[id(block)] = ops.feature_stats(z, False, eps)
        mean, std = self.recorded[id(block)]
        if mean.shape[0] not in (1, z.shape[0]):
            raise ValueError(f"statistics recorded on a batch of {mean.shape[0]} cannot normalise a batch of "
                             f"{z.shape[0]}: record on one image, or on the same batch")
        return mean.expand(z.shape[0], -1), std.expand(z.shape[0], -1)
