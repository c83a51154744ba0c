"""torch.autocast for culturegan's ops, which autocast itself does not know.

Under autocast a network's tensors arrive in mixed dtypes: a convolution's output in bfloat16
meets float32 parameters. The ops take one dtype, so their public functions apply autocast's
own policy before checking their arguments, then run with autocast off (the convolutions
inside must not be recast):

- ``lowered`` (the convolution blocks): every floating tensor argument in autocast's dtype, as
  autocast runs F.conv2d; the normalisation statistics are still accumulated in float32.
- ``in_input_dtype`` (bias + activation, instance norm): the parameters in x's dtype, so the
  op runs in the dtype its input arrives in. (channel_affine takes its parameters in any
  floating dtype already.)
- ``in_float32`` (losses: patch_nce_loss): every floating tensor argument in at least float32,
  as autocast runs cross_entropy and log_softmax.

Casts are differentiable: the float32 parameters get their gradients in float32.
"""

from __future__ import annotations

import functools
import inspect

import torch


def _cast(value, dtype: torch.dtype):
    return value.to(dtype) if torch.is_tensor(value) and value.is_floating_point() else value


def _autocast_dtype(x) -> torch.dtype | None:
    """autocast's dtype for x's device, or None when autocast is off there (or x is no tensor, or
    on the meta device, which has no autocast: torch raises when asked about it)."""
    if not torch.is_tensor(x) or x.device.type == "meta" or not torch.is_autocast_enabled(x.device.type):
        return None
    return torch.get_autocast_dtype(x.device.type)


def _policy(choose_dtype):
    def decorator(op):
        first = next(iter(inspect.signature(op).parameters))  # x, which may come by keyword too

        @functools.wraps(op)
        def wrapper(*args, **kwargs):
            x = args[0] if args else kwargs.get(first)
            autocast_dtype = _autocast_dtype(x)
            if autocast_dtype is None:
                return op(*args, **kwargs)
            dtype = choose_dtype(x, autocast_dtype)
            with torch.autocast(x.device.type, enabled=False):
                return op(*(_cast(a, dtype) for a in args), **{k: _cast(v, dtype) for k, v in kwargs.items()})

        return wrapper

    return decorator


lowered = _policy(lambda x, autocast_dtype: autocast_dtype if x.is_floating_point() else x.dtype)
in_input_dtype = _policy(lambda x, autocast_dtype: x.dtype)
in_float32 = _policy(lambda x, autocast_dtype: torch.promote_types(x.dtype, torch.float32))
