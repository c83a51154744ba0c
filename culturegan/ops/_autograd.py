"""Autograd helpers shared by the fused ops' backward formulas."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def recomputed_grads(compute: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor | None],
                     grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The gradients of compute(*inputs) for grad_output, as a differentiable graph.

    A fused op's backward kernel is not differentiable itself; when a double backward asks for
    it (create_graph=True: gradient penalties), the op differentiates a composition of
    differentiable ops that computes the same forward instead, recomputed from its saved
    inputs. Inputs that are None or need no gradient get None.
    """
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad(compute(*inputs), wanted, grad_output, create_graph=True))
    return tuple(next(grads) if t is not None and t.requires_grad else None for t in inputs)
