"""patch_nce_loss: CUT's patchwise InfoNCE loss (Park et al., ECCV 2020), with its reference.

For each image n, query patch i must pick its own key patch i among the P key patches of the
same image (CUT's negatives: the other patches of the image, never of other images):

    q^ = q / max(|q|, 1e-12),  k^ likewise          (per patch, over the C features)
    L_ij = <q^_i, k^_j> / temperature               (N, P, P) logits
    loss_i = logsumexp_j L_ij - L_ii                cross-entropy with the diagonal as positives

CUT's code appends the positive as an extra logit and masks the diagonal of the negatives to
-10 / 0.07; exp(-142.9) is zero in float32, so that is this loss exactly.

The fast backends never keep the (N, P, P) logits. The query's gradient is linear in the
per-patch upstream gradient (row i of dL scales with grad_i), so when the query needs a
gradient the forward also forms d loss_i / d q_i from the logits it has just made (as Liger's
fused linear cross-entropy does) and the backward only scales it: one GEMM fewer than
recomputing. The key's gradient mixes every row and needs the upstream gradient: the backward
recomputes the logits from the inputs and the saved log-sum-exp (CUT detaches the key, so its
training never pays for it). The backward is differentiable once; asking for a second
derivative raises.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _autocast, _backends, _checks
from culturegan.ops._layout import math_dtype

REDUCTIONS = ("mean", "sum", "none")
NORM_EPS = 1e-12  # F.normalize's: a zero feature vector stays zero


def patch_nce_loss_reference(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """The pure-torch definition every backend is tested against: (N, P) per-patch losses in
    query's dtype, computed in float32 for the half types (autograd by torch)."""
    math = math_dtype(query.dtype)
    q = F.normalize(query.to(math), dim=-1, eps=NORM_EPS)
    k = F.normalize(key.to(math), dim=-1, eps=NORM_EPS)
    logits = torch.bmm(q, k.transpose(1, 2)) / temperature
    return (torch.logsumexp(logits, -1) - logits.diagonal(dim1=1, dim2=2)).to(query.dtype)


def check_patch_nce_input(query, key, temperature) -> tuple:
    """(query, key, temperature) as the kernels take them, checked."""
    for tensor, name in ((query, "query"), (key, "key")):
        _checks.check_tensor(tensor, name)
        if tensor.dim() != 3:
            raise ValueError(f"{name} must have shape (N, P, C) (images, patches, features), got "
                             f"{tuple(tensor.shape)}")
        if tensor.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}); every dimension must be >= 1")
        _checks.check_floating(tensor, name)
    _checks.check_same_device(key, "key", query, "query")
    _checks.check_same_dtype(key, "key", query, "query")
    if key.shape != query.shape:
        raise ValueError(f"key must have query's shape {tuple(query.shape)} (the same patches at the same "
                         f"places), got {tuple(key.shape)}")
    return query, key, _checks.check_number(temperature, "temperature", minimum=0.0, inclusive=False)


def _empty_gradient(query: torch.Tensor) -> torch.Tensor:
    return query.new_empty((0,), dtype=math_dtype(query.dtype))


# ----------------------------------------------------------------------------------- triton

def _triton_forward(query: torch.Tensor, key: torch.Tensor, temperature: float,
                    query_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from culturegan.kernels import patch_nce_loss as kernels

    check_patch_nce_input(query, key, temperature)
    return kernels.forward(query, key, temperature, query_grad)


def _triton_backward(grad: torch.Tensor, query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor,
                     temperature: float, query_grad: bool, key_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from culturegan.kernels import patch_nce_loss as kernels

    check_patch_nce_input(query, key, temperature)
    return kernels.backward(grad, query, key, lse, temperature, query_grad, key_grad)


# ------------------------------------------------------------------ fake kernels, autograd

def _fake_forward(query, key, temperature, query_grad):
    rows = query.shape[:2]
    unit = query.new_empty(query.shape, dtype=math_dtype(query.dtype)) if query_grad else _empty_gradient(query)
    return query.new_empty(rows), query.new_empty(rows, dtype=math_dtype(query.dtype)), unit


def _fake_backward(grad, query, key, lse, temperature, query_grad, key_grad):
    # contiguous, whatever the inputs' strides, as every backend returns them
    return (query.new_empty(query.shape if query_grad else (0,)), key.new_empty(key.shape if key_grad else (0,)))


BACKWARD = _backends.register(_backends.Kernel("patch_nce_loss_backward", _fake_backward, triton=_triton_backward))


def _setup_context(ctx, inputs, output):
    query, key, temperature, query_grad = inputs
    _, lse, unit = output
    ctx.mark_non_differentiable(lse, unit)
    # lse's and unit's gradients are always zero: not filling an (N, P, C) tensor of them each
    # backward saves a pass over the features (their gradients then arrive as None)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(query, key, lse, unit)
    ctx.temperature, ctx.unit_ready = temperature, query_grad


class _NotTwice(torch.autograd.Function):
    """Passes gradients through; differentiating them again raises (see the module docstring)."""

    @staticmethod
    def forward(ctx, *gradients):
        return tuple(g.clone() for g in gradients)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError("patch_nce_loss is differentiable once: its double backward is not implemented "
                           "(use backend='reference' for higher derivatives)")


def _vjp(ctx, grad_loss, _grad_lse, _grad_unit):
    if grad_loss is None:  # the loss's gradient is undefined (zero): so are the inputs'
        return None, None, None, None
    query, key, lse, unit = ctx.saved_tensors
    want_query, want_key = ctx.needs_input_grad[:2]
    grad_query = grad_key = None
    if want_query and ctx.unit_ready:
        grad_query = (grad_loss.to(unit.dtype).unsqueeze(-1) * unit).to(query.dtype)
    recompute_query = want_query and grad_query is None
    if recompute_query or want_key:
        computed_query, computed_key = BACKWARD.on(ctx.backend)(grad_loss.contiguous(), query, key, lse,
                                                                ctx.temperature, recompute_query, want_key)
        grad_query = computed_query if recompute_query else grad_query
        grad_key = computed_key if want_key else None
    if torch.is_grad_enabled():  # create_graph: the formulas above are not differentiable again
        present = [g for g in (grad_query, grad_key) if g is not None]
        passed = iter(_NotTwice.apply(*present))
        grad_query, grad_key = (None if g is None else next(passed) for g in (grad_query, grad_key))
    return grad_query, grad_key, None, None


FORWARD = _backends.register(_backends.Kernel("patch_nce_loss", _fake_forward, triton=_triton_forward, vjp=_vjp,
                                              setup_context=_setup_context))


def _on_backend(backend: str, query, key, temperature) -> torch.Tensor:
    # the query's gradient is formed in the forward only when autograd will ask for it
    query_grad = torch.is_grad_enabled() and query.requires_grad
    loss, _, _ = FORWARD.on(backend)(query, key, temperature, query_grad)
    return loss


OP = _backends.declare(_backends.Op("patch_nce_loss", check_patch_nce_input, patch_nce_loss_reference, _on_backend))


# ----------------------------------------------------------------------------- public API

@_autocast.in_float32
def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07, reduction: str = "mean", *,
                   backend: str | None = None) -> torch.Tensor:
    """CUT's PatchNCE loss of sampled patch features (see the module docstring).

    Args:
        query: (N, P, C) features of P patches of each generated image (CUT: the MLP head's
            output for the output image), float16/bfloat16/float32/float64 (float32 math for
            the half types); any strides. Normalised here: pass them unnormalised.
        key: (N, P, C) features of the same P places of the image each was made from
            (detach it as CUT does unless its gradient is wanted); query's dtype and device.
        temperature: > 0; CUT's nce_T is 0.07.
        reduction: "mean" over the N*P patches (CUT's, per layer; default), "sum", or "none"
            for the (N, P) per-patch losses.
        backend: "cuda", "triton", "cpu", "reference" or "auto"; None defers to
            ``use_backend`` and CULTUREGAN_BACKEND (see culturegan.ops).

    Returns:
        The loss in query's dtype, differentiable in query and key (once). Under
        torch.autocast the features are taken in float32 (as autocast runs cross-entropy) and
        so is the loss.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}, got {reduction!r}")
    losses = OP(query, key, temperature, backend=backend)
    if reduction == "mean":
        return losses.mean()
    return losses.sum() if reduction == "sum" else losses
