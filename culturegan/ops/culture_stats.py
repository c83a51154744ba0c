"""culture_stats: the texture statistics of a feature map, mean, std and Gram, in one call.

    mean, std = feature_stats(x, unbiased, eps);   G = gram(x, normalize, center)

Every culture loss and profile in culturegan reads these three together. Each backend computes
them with its own kernels: the statistics in one stable pass, the Gram matrix in a second read
of x (BLAS/cuBLAS, or Triton's symmetric tiles). See feature_stats and gram for conventions.
"""

from __future__ import annotations

import functools

import torch

from culturegan.ops import _backends
from culturegan.ops.feature_stats import check_feature_stats_input, feature_stats, feature_stats_reference
from culturegan.ops.gram import check_gram_input, gram, gram_reference

Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def culture_stats_reference(x: torch.Tensor, unbiased: bool = False, eps: float = 1e-5, normalize: str = "hw",
                            center: bool = False) -> Stats:
    """The pure-torch definition every backend is tested against."""
    return (*feature_stats_reference(x, unbiased, eps), gram_reference(x, normalize, center))


def _on_backend(backend: str, x, unbiased, eps, normalize, center) -> Stats:
    mean, std = feature_stats(x, unbiased, eps, backend=backend)
    return mean, std, gram(x, normalize, center, backend=backend)


_backends.register_op("culture_stats", {b: functools.partial(_on_backend, b) for b in _backends.BACKENDS})


def culture_stats(x: torch.Tensor, unbiased: bool = False, eps: float = 1e-5, normalize: str = "hw",
                  center: bool = False, *, backend: str | None = None) -> Stats:
    """``(mean, std, gram)`` of x: (N, C), (N, C) and (N, C, C), in x's dtype.

    Arguments as for ``feature_stats`` (unbiased, eps) and ``gram`` (normalize, center), all on
    the same backend. Differentiable in x.
    """
    eps = check_feature_stats_input(x, unbiased, eps)
    check_gram_input(x, normalize)
    implementation = _backends.dispatch("culture_stats", x.device, backend)
    return implementation(x, unbiased, eps, normalize, center)
