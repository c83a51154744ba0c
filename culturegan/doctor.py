"""`culturegan doctor`: what this installation can run, and why not where not."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

import torch

from culturegan import __version__, _libraries
from culturegan.ops import _backends


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _environment_lines() -> list[str]:
    cuda = torch.version.cuda or "none (CPU-only torch)"
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    built = _libraries.build_info()
    lines = [
        f"culturegan {__version__}  python {platform.python_version()}  {platform.machine()}",
        f"torch {torch.__version__}  CUDA {cuda}  triton {_version('triton')}",
        f"GPUs: {', '.join(devices) if devices else 'none visible'}",
        f"built against torch {built.get('torch_version', 'unknown')} (python {built.get('python', 'unknown')}):",
    ]
    lines += [f"  built {name}: {what}" for name, what in built.get("built", {}).items()]
    lines += [f"  skipped {name}: {why}" for name, why in built.get("skipped", {}).items()]
    return lines


def _library_lines() -> list[str]:
    lines = []
    for status in (_libraries.cpu_library(), _libraries.cuda_library()):
        state = f"loaded from {status.path}" if status.loaded else f"unavailable: {status.reason}"
        lines.append(f"  {status.name:8s} {state}")
    return lines


def _backend_lines() -> list[str]:
    lines = []
    for op in sorted(_backends.registered_ops()):
        lines.append(f"  {op}")
        for device in ("cpu", "cuda"):
            for backend in _backends.BACKENDS:
                if backend in ("cpu", "cuda") and backend != device:
                    continue  # the cpu backend never runs cuda tensors, and vice versa
                reason = _backends.unavailable_reason(backend, device)
                lines.append(f"    {device:4s} tensors  {backend:9s} {'yes' if reason is None else 'no: ' + reason}")
    return lines


def report() -> str:
    sections = [
        _environment_lines(),
        ["compiled libraries:"] + _library_lines(),
        ["ops (device, backend, usable):"] + _backend_lines(),
    ]
    return "\n".join(line for section in sections for line in section + [""]).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
