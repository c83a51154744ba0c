"""The culturegan checkpoint format: a directory ``step-00001000/`` holding
``state.safetensors`` (every tensor: model weights, optimiser moments, image pools, RNG states,
culture profiles) and ``state.json`` (everything else: step, configuration, optimiser
hyper-parameters, schedulers, Python RNG). A checkpoint is written into a temporary directory
and renamed when complete, so a run killed mid-write leaves the previous checkpoints intact;
only the last `keep_last` are kept. Training writes them (culturegan.training); applying and
converting models read them (load_generator).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from culturegan._files import atomic_directory
from culturegan.models.weights import load_weights

FORMAT_VERSION = 1
TENSORS_FILE = "state.safetensors"  # a checkpoint directory's tensors
META_FILE = "state.json"  # and its config, step and records


def save_checkpoint(directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict, keep_last: int) -> Path:
    final = directory / f"step-{step:08d}"
    for stale in directory.glob(".step-*.tmp"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    with atomic_directory(final) as temporary:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(temporary / TENSORS_FILE))
        (temporary / META_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, "step": step, **meta},
                                                         indent=2))
    for old in sorted(directory.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    complete = sorted(p for p in directory.glob("step-*") if (p / META_FILE).is_file())
    return complete[-1] if complete else None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    try:
        tensors = load_file(str(path / TENSORS_FILE))
    except (OSError, ValueError, SafetensorError) as error:
        raise ValueError(f"{path}: not a readable culturegan checkpoint ({error})") from error
    return tensors, meta


def read_meta(path: Path) -> dict:
    """The checkpoint's state.json (config, step, ...), without its tensors."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable culturegan checkpoint ({error})") from error
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    return meta


def subset(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor], name: str, path: Path) -> None:
    """module's weights from a checkpoint's `name.*` tensors, or an error listing what does not fit."""
    load_weights(module, subset(tensors, name), f"{path} ({name})")


def checkpoint_directory(path: Path) -> Path | None:
    """The checkpoint directory `path` names (a run, a checkpoints folder, a checkpoint or its
    state file), or None when it is a plain weights file."""
    if path.is_file():
        return path.parent if path.name == TENSORS_FILE and (path.parent / META_FILE).is_file() else None
    if (path / META_FILE).is_file():
        return path
    for folder in (path / "checkpoints", path):
        latest = latest_checkpoint(folder)
        if latest is not None:
            return latest
    raise FileNotFoundError(f"{path} holds no culturegan checkpoint")
