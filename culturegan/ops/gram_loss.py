"""gram_loss: mean squared difference between x's Gram matrices and a target (style loss).

    loss = reduce((gram(x) - target_gram)^2)

A target of shape (C, C) applies to every sample; (N, C, C) gives one per sample. Its
backward is dL/dF = c * (G - T + (G - T)^T) F: autograd takes the C x C gradient of the
squared difference into gram's backward, a single batched GEMM, so nothing larger than the
C x C matrices and the gradient of x is materialised.
"""

from __future__ import annotations

import torch

from culturegan.ops import _backends, _checks
from culturegan.ops.gram import check_gram_input, gram, gram_reference

REDUCTIONS = ("mean", "sum", "none")


def _reduce(squared: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return squared.mean()
    if reduction == "sum":
        return squared.sum()
    return squared.flatten(1).mean(1)  # "none": one mean per sample, shape (N,)


def gram_loss_reference(x: torch.Tensor, target_gram: torch.Tensor, reduction: str = "mean", normalize: str = "hw",
                        center: bool = False) -> torch.Tensor:
    """The pure-torch definition every backend is tested against (autograd by torch)."""
    return _reduce((gram_reference(x, normalize, center) - target_gram) ** 2, reduction)


def _check(x, target_gram, reduction: str, normalize: str, center: bool) -> tuple:
    check_gram_input(x, normalize, center)
    _checks.check_tensor(target_gram, "target_gram")
    _checks.check_same_device(target_gram, "target_gram", x, "x")
    _checks.check_same_dtype(target_gram, "target_gram", x, "x")
    samples, channels = x.shape[:2]
    if tuple(target_gram.shape) not in ((channels, channels), (samples, channels, channels)):
        raise ValueError(f"target_gram must have shape ({channels}, {channels}) or ({samples}, {channels}, {channels}) "
                         f"to match x of shape {tuple(x.shape)}, got {tuple(target_gram.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")
    return x, target_gram, reduction, normalize, bool(center)


def _on_backend(backend: str, x, target_gram, reduction, normalize, center) -> torch.Tensor:
    return _reduce((gram(x, normalize, center, backend=backend) - target_gram) ** 2, reduction)


OP = _backends.declare(_backends.Op("gram_loss", _check, gram_loss_reference, _on_backend))


def gram_loss(x: torch.Tensor, target_gram: torch.Tensor, reduction: str = "mean", normalize: str = "hw",
              center: bool = False, *, backend: str | None = None) -> torch.Tensor:
    """``reduce((gram(x, normalize, center) - target_gram) ** 2)``.

    Args:
        x: as for ``gram``.
        target_gram: (C, C), broadcast over the batch, or (N, C, C); x's dtype and device.
        reduction: "mean" over all N*C*C elements (default), "sum", or "none" for one mean per
            sample, shape (N,).
        normalize, center: as for ``gram``; use the convention the target was made with.

    Differentiable in x (and in target_gram).
    """
    return OP(x, target_gram, reduction, normalize, center, backend=backend)
