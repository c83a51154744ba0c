"""Triton kernel of culture_stats (installed as culturegan.kernels.culture_stats).

Mean, std and Gram matrix from one read of x: gram's symmetric-tile kernel (kernels/gram.py)
run with STATS, whose diagonal programs keep the moments of the rows they load.
"""

from __future__ import annotations

import torch

from culturegan.kernels import gram


def forward(features: torch.Tensor, products: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, unbiased: bool,
            eps: float) -> None:
    """products[n] = features[n] @ features[n]^T (as gram.forward) and each row's mean and
    sqrt(var + eps) (biased, or unbiased when asked) into mean and std, (N, C)."""
    gram.forward(features, products, (mean, std, unbiased, eps))
