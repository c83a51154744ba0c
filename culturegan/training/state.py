"""A training run's state, all a resumed run needs to continue exactly: save() writes it as a
checkpoint and restore() reads it back (networks, optimisers and schedulers, image pools,
culture profiles, RNGs, AMP scaler, step); the image pools and the sample stream are here too.
The file format itself (folder, atomic write, keep_last): culturegan.models.checkpoints.

Tensors go to state.safetensors under "NETWORK.", "OPTIMISER.INDEX.FIELD", "pool.NAME.",
"profile.CULTURE." and "rng."; everything else to state.json.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Sampler

from culturegan.culture import CultureProfile
from culturegan.models import checkpoints
from culturegan.models.loading import recorded_architecture

if TYPE_CHECKING:
    from culturegan.training.trainer import Trainer


def save(trainer: Trainer) -> Path:
    """Writes the trainer's state after its current step as a checkpoint; returns its folder."""
    objective = trainer.objective
    optimizer_tensors, param_groups = _optimizers_state(trainer.optimizers)
    profile_tensors, profiles = _profiles_state(objective.profiles)
    tensors = {f"{name}.{k}": v for name, model in trainer.models.items() for k, v in model.state_dict().items()}
    tensors.update(optimizer_tensors)
    tensors.update({f"pool.{name}.{k}": v for name, pool in objective.pools.items() for k, v in pool.state().items()})
    tensors.update(profile_tensors)
    tensors.update(_rng_state(trainer.device))
    meta = {"config": dataclasses.asdict(trainer.config), "optimizers": param_groups,
            "schedulers": {name: s.state_dict() for name, s in trainer.schedulers.items()},
            "python_rng": _jsonable(trainer.rng.getstate()), "scaler": trainer.scaler.state_dict(),
            "bad_steps": trainer.bad_steps, "cultures": objective.cultures, "profiles": profiles,
            "init_from_shapes": objective.init_from_shapes(),
            # init_from where this run started: read later from other working directories
            # (culturegan.transfer.latent_transfer.default_base), whose config keeps it as given
            "init_from_path": trainer.init_from_path,
            # how each StyleGAN2 network was built, for whoever reads the run later (culturegan.models.Run)
            "architectures": {name: architecture for name, model in trainer.models.items()
                              if (architecture := recorded_architecture(model)) is not None}}
    return checkpoints.save_checkpoint(trainer.checkpoints, trainer.step, tensors, meta, trainer.config.keep_last)


def _check_reference_projection(model: torch.nn.Module, tensors: dict[str, torch.Tensor], name: str,
                                path: Path) -> None:
    """A clear error for resuming, with lambda_reference > 0, a multi-culture run whose generator
    has no reference projection (trained with lambda_reference = 0 or before culturegan had one)."""
    wanted = any(k.startswith("reference_projection.") for k in model.state_dict())
    if wanted and not any(k.startswith(f"{name}.reference_projection.") for k in tensors):
        raise ValueError(f"{path}: this run's generator {name} has no reference projection (it was trained with "
                         "lambda_reference = 0, or before culturegan trained one): resume it with "
                         "lambda_reference = 0")


def _check_init_from(started_from: str | None, configured: str, path: Path) -> None:
    """A resumed run must say init_from as its start did: the pretrained generator layers train in
    optimizer groups of their own (pretrained_lr), which a checkpoint's optimizer state holds."""
    if started_from is None or bool(started_from) == bool(configured):  # (older checkpoints record none)
        return
    if started_from:
        raise ValueError(f"{path}: init_from: this run started from {started_from}; resume it with the same "
                         "init_from (and freeze and pretrained_lr): its pretrained layers have optimizer groups of "
                         "their own")
    raise ValueError(f"{path}: init_from={configured!r}: this run started without init_from; resume it without")


def _check_nce_layers(recorded, configured, path: Path) -> None:
    """A contrastive run resumes on the layers it trained on: their heads would load as well onto
    other layers of the same widths (the default changed on 2026-12-01, to CUT's own layers)."""
    if recorded is not None and tuple(recorded) != tuple(configured or ()):
        raise ValueError(f"{path}: nce_layers: this run trained on layers {tuple(recorded)}, this resume asks for "
                         f"{configured}; resume with nce_layers={','.join(map(str, recorded))}")


def restore(trainer: Trainer, path: Path) -> tuple[int, int]:
    """Puts the checkpoint save() wrote to `path` back into the trainer's networks, optimisers,
    schedulers, image pools, objective (its profiles), RNGs and scaler; returns (step, bad steps
    in a row)."""
    tensors, meta = checkpoints.load_checkpoint(path)
    objective = trainer.objective
    if meta.get("cultures") != objective.cultures:
        raise ValueError(f"{path}: the checkpoint was trained on cultures {meta.get('cultures')}, this run has "
                         f"{objective.cultures}")
    _check_init_from(meta.get("init_from_path"), trainer.config.init_from, path)
    _check_nce_layers(meta["config"].get("nce_layers"), trainer.config.nce_layers, path)
    for name, model in trainer.models.items():
        _check_reference_projection(model, tensors, name, path)
        checkpoints.load_module(model, tensors, name, path)
    _restore_optimizers(trainer.optimizers, tensors, meta["optimizers"], path)
    for name, scheduler in trainer.schedulers.items():
        scheduler.load_state_dict(meta["schedulers"][name])
    for name, pool in objective.pools.items():
        pool.restore(checkpoints.subset(tensors, f"pool.{name}"), trainer.device)
    objective.profiles = {culture: CultureProfile.from_state(checkpoints.subset(tensors, f"profile.{culture}"),
                                                             profile_meta, path)
                          for culture, profile_meta in meta["profiles"].items()}
    trainer.rng.setstate(_tuple(meta["python_rng"]))
    trainer.scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    if trainer.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
    return meta["step"], meta["bad_steps"]


def _optimizers_state(optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict]:
    """(each optimiser's per-parameter state as tensors, each one's parameter groups)."""
    tensors, param_groups = {}, {}
    for name, optimizer in optimizers.items():
        state = optimizer.state_dict()
        for index, values in state["state"].items():
            for key, value in values.items():
                tensors[f"{name}.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        param_groups[name] = state["param_groups"]
    return tensors, param_groups


def _restore_optimizers(optimizers: dict[str, torch.optim.Optimizer], tensors: dict[str, torch.Tensor],
                        param_groups: dict, path: Path) -> None:
    for name, optimizer in optimizers.items():
        saved, built = ([len(group["params"]) for group in groups]
                        for groups in (param_groups[name], optimizer.param_groups))
        if saved != built:  # (torch's own error names neither the cause nor the cure)
            raise ValueError(f"{path}: {name} was saved with parameter groups of {saved} tensors, this run builds "
                             f"{built}: resume with the settings the run started with (init_from, "
                             "init_from_reverse, freeze and the networks' sizes)")
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        state: dict = {}
        for key, value in checkpoints.subset(tensors, name).items():
            index, field = key.split(".", 1)
            state.setdefault(int(index), {})[field] = _like_parameter(value, parameters[int(index)])
        optimizer.load_state_dict({"state": state, "param_groups": param_groups[name]})


def _like_parameter(value: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """A saved optimiser moment with its parameter's device and strides (checkpoints store
    tensors contiguous; fused Adam walks parameter and moment memory in step, so a
    channels_last weight needs channels_last moments). Scalars such as `step` stay as saved."""
    if value.shape != parameter.shape:
        return value
    return torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def _profiles_state(profiles: dict[str, CultureProfile]) -> tuple[dict[str, torch.Tensor], dict]:
    """(every profile's tensors, each profile's metadata by culture)."""
    tensors, meta = {}, {}
    for culture, profile in profiles.items():
        profile_tensors, meta[culture] = profile.state()
        tensors.update({f"profile.{culture}.{k}": v for k, v in profile_tensors.items()})
    return tensors, meta


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    rng = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _jsonable(value):
    """Python's RNG state (nested tuples) as JSON lists."""
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuple(value):
    """_jsonable's inverse."""
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al.): once full, each new image
    is returned as is or, with probability 1/2, swapped for a stored older one. Images may
    carry a label (their target culture), which travels with them."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.images, self.labels = size, rng, [], []

    def query(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        """The images to show the discriminator (and their labels, when labels are given)."""
        images = images.detach()
        if self.size == 0:
            return images if labels is None else (images, labels)
        carried = labels if labels is not None else images.new_zeros(len(images), dtype=torch.long)
        chosen = list(zip(images, carried))
        for position, entry in enumerate(chosen):
            if len(self.images) < self.size:
                self.images.append(entry[0].clone())
                self.labels.append(entry[1].clone())
            elif self.rng.random() < 0.5:
                index = self.rng.randrange(self.size)
                chosen[position] = (self.images[index].clone(), self.labels[index].clone())
                self.images[index], self.labels[index] = entry[0].clone(), entry[1].clone()
        out = torch.stack([image for image, _ in chosen])
        return out if labels is None else (out, torch.stack([label for _, label in chosen]))

    def state(self) -> dict[str, torch.Tensor]:
        return {"images": torch.stack(self.images).cpu(), "labels": torch.stack(self.labels).cpu()} \
            if self.images else {}

    def restore(self, state: dict[str, torch.Tensor], device) -> None:
        self.images = [image.to(device) for image in state.get("images", ())]
        self.labels = [label.to(device) for label in state.get("labels", ())]


class SampleStream(Sampler):
    """An endless stream of (epoch, index) pairs: each epoch a seeded permutation, of which rank
    r of w takes every w-th element. Starting at `position` (samples this rank already drew)
    resumes the stream exactly."""

    def __init__(self, size: int, seed: int, position: int = 0, rank: int = 0, world: int = 1):
        self.size, self.seed, self.position, self.rank, self.world = size, seed, position, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_epoch = len(range(self.rank, self.size, self.world))
        epoch, offset = divmod(self.position, per_epoch)
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
            for index in order[self.rank::self.world][offset:].tolist():
                yield epoch, index
            epoch, offset = epoch + 1, 0
