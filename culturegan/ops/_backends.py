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
import functools
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

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


def _compiled_library(backend: str) -> _libraries.LibraryStatus:
    """The compiled library of the cpu or cuda backend."""
    return _libraries.cpu_library() if backend == "cpu" else _libraries.cuda_library()


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """Why `backend` cannot run tensors of `device_type` here, or None if it can."""
    if backend == "reference":
        return None
    if backend == "triton":
        return _triton_unavailable(device_type)
    if backend != device_type:
        return f"the {backend} backend runs {backend} tensors, not {device_type} tensors"
    library = _compiled_library(backend)
    if not library.loaded:
        return f"compiled library {library.name} is unavailable: {library.reason}"
    if backend == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def _select(device_type: str, backend: str | None, auto_order: tuple[str, ...] | None = None) -> str:
    """The backend to run: the one requested, else the first usable one of auto_order (the op's
    own preference for this device type) or AUTO_ORDER."""
    requested = requested_backend(backend)
    if requested != AUTO:
        reason = unavailable_reason(requested, device_type)
        if reason is not None:
            raise BackendUnavailableError(f"backend {requested!r} cannot run here: {reason}")
        return requested
    for candidate in auto_order or AUTO_ORDER.get(device_type, ("reference",)):
        if candidate in ("cpu", "cuda"):
            if not _libraries.require(_compiled_library(candidate)):  # warns once, or raises in strict mode
                continue
        if unavailable_reason(candidate, device_type) is None:
            return candidate
    return "reference"


# The choice depends only on the device type, the request, the op's preference, the enclosing
# use_backend block and the environment. Under torch.compile it is made once while tracing and is a constant of the
# compiled graph (change the backend before compiling, not after).
_select_constant = torch.compiler.assume_constant_result(_select)


# ------------------------------------------------------------------------ declaring an op
#
# Every op is declared the same way (README, "Adding an op"):
#   1. its kernels, each a `Kernel` given to `register`: one torch.library op in up to two
#      variants sharing one fake kernel and one autograd formula;
#   2. the op itself, an `Op` given to `declare`: the argument check, run once per call before
#      the backend is chosen, the pure-torch reference, and the fast backends (a registered
#      kernel's variants, or a function composing other ops on one backend).

CPP = "c++"  # Kernel.native: the C++ op culturegan::<name>, whose schema is in csrc/registration.cpp


@dataclass(frozen=True)
class Kernel:
    """One op registered with torch.library:

        culturegan::<name>          the cpu and cuda backends: the C++ op (native=CPP), a Python
                                    custom op whose body is `native` (composing C++ ops), or none
        culturegan::<name>_triton   the triton backend: a Python custom op whose body is `triton`

    A body's type annotations are its schema. Bodies check their arguments as the C++ ops do:
    torch.ops.culturegan.* are callable directly and must fail as clearly as the public function.
    vjp and setup_context are torch.library.register_autograd's; the formula finds the backend
    of the variant that ran the forward in ctx.backend, so the backward runs on the same one.
    """

    name: str
    fake: Callable
    native: Callable | str | None = CPP
    triton: Callable | None = None
    vjp: Callable | None = None
    setup_context: Callable | None = None


@dataclass(frozen=True)
class Variants:
    """A registered kernel's callable variants (None where it has none, or _C is not loaded)."""

    name: str
    native: Callable | None
    triton: Callable | None

    def on(self, backend: str) -> Callable:
        """The variant that runs `backend` ("cpu" and "cuda" share the native one)."""
        variant = self.triton if backend == "triton" else self.native
        if variant is None:
            raise BackendUnavailableError(f"culturegan::{self.name} has no {backend} variant here")
        return variant


def _custom_op(qualname: str, body: Callable):
    return torch.library.custom_op(qualname, body, mutates_args=())


def _native_variant(kernel: Kernel) -> Callable | None:
    if kernel.native == CPP:  # the schema exists only once _C is loaded
        return getattr(torch.ops.culturegan, kernel.name) if _libraries.cpu_library().loaded else None
    return None if kernel.native is None else _custom_op(f"culturegan::{kernel.name}", kernel.native)


def _register_formulas(qualname: str, kernel: Kernel, backend: str | None) -> None:
    """The fake kernel and autograd formula of one variant (backend None: the tensors' device type)."""
    torch.library.register_fake(qualname)(kernel.fake)
    if kernel.vjp is None:
        return

    def setup(ctx, inputs, output):
        ctx.backend = backend or inputs[0].device.type
        kernel.setup_context(ctx, inputs, output)

    torch.library.register_autograd(qualname, kernel.vjp, setup_context=setup)


def register(kernel: Kernel) -> Variants:
    """Registers the kernel's variants with their fake kernel and autograd formula."""
    native = _native_variant(kernel)
    triton = None if kernel.triton is None else _custom_op(f"culturegan::{kernel.name}_triton", kernel.triton)
    if native is not None:
        _register_formulas(f"culturegan::{kernel.name}", kernel, None)
    if triton is not None:
        _register_formulas(f"culturegan::{kernel.name}_triton", kernel, "triton")
    return Variants(kernel.name, native, triton)


@dataclass(frozen=True)
class Op:
    """A public op: `check` turns the public arguments into the implementations' arguments (x
    first) or raises; `reference` is the pure-torch implementation; `fast` gives the cpu, cuda
    and triton ones: a registered kernel's variants, or a function (backend, *arguments) that
    composes other ops on that backend. Calling the Op checks once and runs the chosen backend."""

    name: str
    check: Callable[..., tuple]
    reference: Callable
    fast: Variants | Callable
    # "auto"'s order per device type where this op's measurements say another backend is
    # faster than AUTO_ORDER's first (the README's benchmark tables give the reason per op)
    auto_order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def implementation(self, backend: str) -> Callable:
        if backend == "reference":
            return self.reference
        if isinstance(self.fast, Variants):
            return self.fast.on(backend)
        return functools.partial(self.fast, backend)

    def __call__(self, *arguments, backend: str | None = None):
        arguments = self.check(*arguments)
        device_type = arguments[0].device.type
        chosen = _select_constant(device_type, backend, self.auto_order.get(device_type))
        return _OPS[self.name][chosen](*arguments)


_OPS: dict[str, Mapping[str, Callable]] = {}


def declare(op: Op) -> Op:
    """Makes `op` one of culturegan's ops (registered_ops) and returns it, ready to call."""
    if op.name in _OPS:
        raise ValueError(f"op {op.name} is declared twice")
    _OPS[op.name] = {backend: _implementation_or_error(op, backend) for backend in BACKENDS}
    return op


def _implementation_or_error(op: Op, backend: str) -> Callable:
    """The implementation, or one that raises the reason it is missing (a C++ op without _C:
    "auto" never chooses it, and an explicit request fails in _select first)."""
    try:
        return op.implementation(backend)
    except BackendUnavailableError as error:
        def unavailable(*arguments, error=error):
            raise error

        return unavailable


def registered_ops() -> dict[str, Mapping[str, Callable]]:
    """Every declared op's implementation per backend."""
    return dict(_OPS)
