"""Backend selection for culturegan ops.

Every op has the same four backends:
  cuda       CUDA C++ kernels (culturegan._C_cuda)           CUDA tensors
  triton     Triton kernels (culturegan.kernels)             CUDA tensors; CPU through TRITON_INTERPRET=1
  cpu        C++ kernels (culturegan._C)                     CPU tensors
  reference  pure torch, always available, the ground truth  any device

The backend is, from the most to the least specific: the call's `backend=` argument, the
innermost `use_backend(...)` block, the CULTUREGAN_BACKEND environment variable, or "auto":
the fastest one usable for the tensor's device. An explicitly requested backend that cannot
run raises BackendUnavailableError with the reason. "auto" falls back (see _libraries).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping

import torch

from culturegan import _libraries

BACKENDS = ("cuda", "triton", "cpu", "reference")
AUTO = "auto"
# Preference order of "auto" per device type; any other device runs the reference.
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
ENV_VAR = "CULTUREGAN_BACKEND"

_scoped_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("culturegan_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; the message says why."""


def check_backend_name(name: str, source: str = "backend") -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS + (AUTO,):
        raise ValueError(f"unknown {source} {name!r}; expected one of {', '.join(BACKENDS + (AUTO,))}")
    return name.strip().lower()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Runs the ops inside the block on backend `name` (or "auto") unless a call says otherwise."""
    token = _scoped_backend.set(check_backend_name(name))
    try:
        yield
    finally:
        _scoped_backend.reset(token)


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for by the call, the enclosing block or the environment ("auto" if none)."""
    if backend is not None:
        return check_backend_name(backend)
    scoped = _scoped_backend.get()
    if scoped is not None:
        return scoped
    from_env = os.environ.get(ENV_VAR)
    return check_backend_name(from_env, f"{ENV_VAR} value") if from_env else AUTO


def _triton_unavailable(device_type: str) -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device is available"
    if device_type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return None
        return "triton runs CPU tensors only through its interpreter: set TRITON_INTERPRET=1 before importing triton (slow)"
    return f"triton does not run {device_type} tensors"


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """Why `backend` cannot run tensors of `device_type` here, or None if it can."""
    if backend == "reference":
        return None
    if backend == "triton":
        return _triton_unavailable(device_type)
    if backend != device_type:
        return f"the {backend} backend runs {backend} tensors, not {device_type} tensors"
    library = _libraries.cpu_library() if backend == "cpu" else _libraries.cuda_library()
    if not library.loaded:
        return f"compiled library {library.name} is unavailable: {library.reason}"
    if backend == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def _select(device_type: str, backend: str | None) -> str:
    requested = requested_backend(backend)
    if requested != AUTO:
        reason = unavailable_reason(requested, device_type)
        if reason is not None:
            raise BackendUnavailableError(f"backend {requested!r} cannot run here: {reason}")
        return requested
    for candidate in AUTO_ORDER.get(device_type, ("reference",)):
        if candidate in ("cpu", "cuda"):
            library = _libraries.cpu_library() if candidate == "cpu" else _libraries.cuda_library()
            if not _libraries.require(library):  # warns once, or raises in strict mode
                continue
        if unavailable_reason(candidate, device_type) is None:
            return candidate
    return "reference"


# The choice depends only on the device type, the request, the enclosing use_backend block and
# the environment. Under torch.compile it is made once while tracing and is a constant of the
# compiled graph (change the backend before compiling, not after).
_select_constant = torch.compiler.assume_constant_result(_select)


_OPS: dict[str, Mapping[str, Callable]] = {}


def register_op(op: str, implementations: Mapping[str, Callable]) -> None:
    """Declares an op and its implementation per backend (every name in BACKENDS)."""
    missing = set(BACKENDS) - set(implementations)
    if missing:
        raise ValueError(f"op {op} lacks backends {sorted(missing)}")
    _OPS[op] = dict(implementations)


def register_formulas(op: str, fake: Callable, vjp: Callable, setup_context: Callable) -> None:
    """Registers the fake kernel and autograd formula of the custom op culturegan::<op>_triton
    and of the C++ op culturegan::<op> (only once _C, which defines its schema, is loaded). The
    formula finds the forward's backend in ctx.backend, so that the backward runs on the same one."""
    variants = [(f"culturegan::{op}_triton", "triton")]
    if _libraries.cpu_library().loaded:
        variants.append((f"culturegan::{op}", None))  # cpu or cuda: the tensors' device type
    for qualname, backend in variants:
        def setup(ctx, inputs, output, backend=backend):
            ctx.backend = backend or inputs[0].device.type
            setup_context(ctx, inputs, output)

        torch.library.register_fake(qualname)(fake)
        torch.library.register_autograd(qualname, vjp, setup_context=setup)


def register_kernel_op(op: str, reference: Callable, fake: Callable, vjp: Callable, setup_context: Callable) -> None:
    """Declares an op whose cpu and cuda backends are the C++ op culturegan::<op> and whose triton
    backend is the custom op culturegan::<op>_triton, with their formulas (register_formulas)."""
    register_formulas(op, fake, vjp, setup_context)

    def native(*args):
        return getattr(torch.ops.culturegan, op)(*args)

    register_op(op, {"cuda": native, "cpu": native, "triton": getattr(torch.ops.culturegan, f"{op}_triton"),
                     "reference": reference})


def registered_ops() -> dict[str, Mapping[str, Callable]]:
    return dict(_OPS)


def dispatch(op: str, device: torch.device, backend: str | None) -> Callable:
    """The implementation of `op` to run for a tensor on `device`."""
    return _OPS[op][_select_constant(device.type, backend)]
