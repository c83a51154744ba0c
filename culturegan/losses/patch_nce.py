"""CUT's PatchNCE objective (Park et al., ECCV 2020): a generated image's patch must resemble
the patch of its input at the same place more than the input's other patches, in the
generator's own encoder features, projected by small MLP heads (culturegan.models.contrastive).
The contrastive loss itself is culturegan.ops.patch_nce_loss."""

from __future__ import annotations

from collections.abc import Callable

import torch

from culturegan import ops
from culturegan.models.contrastive import sample_patches

Encoder = Callable[[torch.Tensor], list[torch.Tensor]]  # images -> (N, C, H, W) features per layer


class PatchNCELoss:
    """weight * the mean over layers of patch_nce_loss(query, key): at each layer `patches`
    locations are drawn (torch's global RNG: a resumed run draws the same), the same for query
    and key and for every image of the batch, as CUT's PatchSampleF draws them."""

    def __init__(self, patches: int = 256, temperature: float = 0.07, weight: float = 1.0):
        self.patches, self.temperature, self.weight = patches, temperature, weight

    def __call__(self, encode: Encoder, heads: Callable, sources: torch.Tensor, outputs: torch.Tensor,
                 flipped: bool = False) -> torch.Tensor:
        """The loss of `outputs` generated from `sources`. The keys (the sources' features) take
        no gradient; `flipped`: the outputs were made from horizontally flipped sources, so their
        features are flipped back before they are compared (CUT's flip equivariance)."""
        with torch.no_grad():
            keys = encode(sources)
        queries = encode(outputs)
        if flipped:
            queries = [q.flip(3) for q in queries]
        positions = [self.positions(k) for k in keys]
        with torch.no_grad():
            key_patches = heads([sample_patches(k, p) for k, p in zip(keys, positions)])
        query_patches = heads([sample_patches(q, p) for q, p in zip(queries, positions)])
        # every head gives (N, P, 256): one call over the stacked layers, whose mean over all
        # patches is the mean of the layers' means (CUT's loss), saves a call per layer
        loss = ops.patch_nce_loss(torch.cat(query_patches), torch.cat(key_patches).detach(),
                                  temperature=self.temperature)
        return self.weight * loss

    def positions(self, features: torch.Tensor) -> torch.Tensor:
        """`patches` distinct flat positions of (N, C, H, W) features, on their device (drawn on
        the CPU: CUT found torch.randperm on CUDA unreliable in some torch versions)."""
        count = features.shape[2] * features.shape[3]
        if self.patches > count:
            raise ValueError(f"nce_patches={self.patches} is more than the {count} positions of a "
                             f"{features.shape[2]}x{features.shape[3]} feature layer")
        return torch.randperm(count)[:self.patches].to(features.device)
