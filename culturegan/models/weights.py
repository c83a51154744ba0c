"""Reading weights files and fitting them to a model, with errors that say what does not fit.

Files are ``.safetensors`` or torch ``.pth``/``.pt`` files read with ``weights_only=True`` (no
pickled code runs). Wrappers that training scripts add are undone: a ``{"state_dict": ...}``
dict, and the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Old pytorch-CycleGAN-and-pix2pix checkpoints carry InstanceNorm running statistics that the
# layers never use (track_running_stats=False); they are dropped when the model has none.
NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: not a readable weights file: not a torch file, or it pickles objects other than "
                         "tensors (culturegan reads with weights_only=True and never runs pickled code)") from None
    except (OSError, RuntimeError, ValueError, SafetensorError, EOFError) as error:
        raise ValueError(f"{path}: not a readable weights file ({type(error).__name__}: {error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path}: holds no state_dict (a mapping of names to tensors)")
    return {_unwrapped(key): value for key, value in state.items()}


def _unwrapped(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """module.load_state_dict(state) after dropping unused norm statistics, or a ValueError that
    lists the missing, unexpected and differently shaped keys (`source` names the file). A module
    with a complete_state_dict method first fills in what states of its earlier versions lack."""
    module.load_state_dict(fit_weights(module, state, source))


def fit_weights(module: torch.nn.Module, state: dict[str, torch.Tensor],
                source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state load_weights loads into module, or its ValueError; module may be on the meta
    device (names and shapes are all that is compared)."""
    if hasattr(module, "complete_state_dict"):
        state = module.complete_state_dict(state)
    expected = module.state_dict()
    state = {k: v for k, v in state.items() if k in expected or k.rsplit(".", 1)[-1] not in NORM_STATISTICS}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})"
                   for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{source}: the weights do not fit {type(module).__name__} (another architecture?): "
                         f"{len(missing)} missing {missing[:8]}, {len(unexpected)} unexpected {unexpected[:8]}, "
                         f"{len(wrong)} of other shapes {wrong[:8]}")
    return state
