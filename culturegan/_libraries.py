"""Loading culturegan's compiled libraries: _C (CPU kernels, op schemas) and _C_cuda.

Each library is loaded at most once per process. A library that is missing, was built
against another torch, or fails to load is remembered with the reason; the first op that
would have used it warns once (or raises, with CULTUREGAN_STRICT=1) and falls back.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
REBUILD_HINT = "rebuild with: pip install --no-build-isolation --force-reinstall --no-deps ."

logger = logging.getLogger(__name__)


class LibraryUnavailableWarning(RuntimeWarning):
    """A compiled library could not be used; ops fall back to another backend."""


@dataclasses.dataclass(frozen=True)
class LibraryStatus:
    name: str
    loaded: bool
    path: str | None
    reason: str | None  # why it is not loaded


def strict_mode() -> bool:
    return os.environ.get("CULTUREGAN_STRICT", "0").strip().lower() in ("1", "true", "yes", "on")


@functools.cache
def build_info() -> dict:
    """What setup.py built and skipped, and against which torch (empty if unknown)."""
    path = PACKAGE_DIR / "_build_info.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _library_path(name: str) -> str | None:
    spec = importlib.util.find_spec(f"culturegan.{name}")
    return spec.origin if spec is not None and spec.origin else None


def _torch_mismatch() -> str | None:
    built_with = build_info().get("torch_version")
    if built_with and built_with != torch.__version__:
        return f"it was built against torch {built_with} but torch {torch.__version__} is running; {REBUILD_HINT}"
    return None


def _load(name: str, prerequisite: LibraryStatus | None) -> LibraryStatus:
    path = _library_path(name)
    if path is None:
        skipped = build_info().get("skipped", {}).get(name)
        reason = f"not built: {skipped}" if skipped else f"not found in {PACKAGE_DIR} (was the package installed with pip?)"
        return LibraryStatus(name, False, None, reason)
    if prerequisite is not None and not prerequisite.loaded:
        return LibraryStatus(name, False, path, f"needs {prerequisite.name}, which is unavailable ({prerequisite.reason})")
    mismatch = _torch_mismatch()
    if mismatch:
        return LibraryStatus(name, False, path, mismatch)
    try:
        torch.ops.load_library(path)
    except (OSError, RuntimeError) as error:
        hint = f"; {REBUILD_HINT}" if "undefined symbol" in str(error) else ""
        return LibraryStatus(name, False, path, f"failed to load: {error}{hint}")
    return LibraryStatus(name, True, path, None)


def _logged(status: LibraryStatus) -> LibraryStatus:
    """`status`, logged at debug level (`culturegan --verbose`): which library loaded from where, or why not."""
    logger.debug("compiled library %s: %s", status.name,
                 f"loaded from {status.path}" if status.loaded else f"unavailable ({status.reason})")
    return status


@functools.cache
def cpu_library() -> LibraryStatus:
    return _logged(_load("_C", None))


@functools.cache
def cuda_library() -> LibraryStatus:
    if torch.version.cuda is None:
        return _logged(LibraryStatus("_C_cuda", False, _library_path("_C_cuda"), "this torch is a CPU-only build"))
    return _logged(_load("_C_cuda", cpu_library()))


@functools.cache
def _report_unavailable(name: str, reason: str) -> None:
    """Warns once per library (functools.cache remembers that it did)."""
    message = (f"culturegan: compiled library {name} is unavailable ({reason}); "
               "ops fall back to the triton or reference backend")
    warnings.warn(message, LibraryUnavailableWarning, stacklevel=4)


def require(status: LibraryStatus) -> bool:
    """True if the library is usable; otherwise warns once, or raises in strict mode."""
    if status.loaded:
        return True
    if strict_mode():
        raise RuntimeError(f"culturegan: compiled library {status.name} is unavailable ({status.reason}) "
                           "and CULTUREGAN_STRICT=1 forbids falling back")
    _report_unavailable(status.name, status.reason)
    return False
