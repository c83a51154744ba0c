"""Transfer learning: start from pretrained weights, freeze generator parts, and give the
pretrained layers a lower learning rate.

``init_from`` is either a culturegan training run (its latest checkpoint), one checkpoint
directory, or a generator weights file (.safetensors, or a .pth such as pytorch-CycleGAN-and-
pix2pix's ``latest_net_G_A.pth``), which initialises the first generator (G_AB, or G in the
multi and contrastive modes); ``init_from_reverse`` initialises G_BA. Discriminators start
fresh unless ``init_discriminators`` takes them from a checkpoint too. A run of another mode
gives each network its counterpart: a contrastive run's G starts from a CycleGAN run's
generator that transfers to the same target (G_AB or G_BA), its D from the discriminator of
that target (D_B or D_A). A multi-culture generator trained without a reference projection
(lambda_reference = 0, or before culturegan trained one) initialises a run that has one with the
run's own freshly initialised projection, and with this run's reference feature statistics
(a trained projection keeps the statistics it was trained with).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from culturegan.models import checkpoints
from culturegan.models.loading import Run, load_run
from culturegan.models.weights import load_weights, read_state_dict
from culturegan.training.config import TrainConfig

logger = logging.getLogger(__name__)

# MultiCultureGenerator's reference projection's keys, and its feature statistics' (reference_mean,
# reference_scale): a projection comes with the statistics it was trained with
PROJECTION = "reference_"


def initialise(config: TrainConfig, models: dict[str, torch.nn.Module], generators: tuple[str, ...],
               discriminators: tuple[str, ...]) -> None:
    """Loads config.init_from (and init_from_reverse) into the models (see the module docstring)."""
    source = Path(config.init_from)
    if not source.exists():
        raise FileNotFoundError(f"init_from: {source} does not exist")
    if checkpoints.checkpoint_directory(source) is not None:
        run = load_run(source)
        names = generators + (discriminators if config.init_discriminators else ())
        for name in names:
            stored = _stored_name(run, name, config)
            state = _with_fresh_projection(models[name], checkpoints.subset(run.tensors, stored))
            load_weights(models[name], state, f"{run.checkpoint} ({stored})")
        return
    if config.init_discriminators:
        raise ValueError(f"init_discriminators: {source} is a generator weights file, not a training checkpoint")
    load_weights(models[generators[0]], _with_fresh_projection(models[generators[0]], read_state_dict(source)), source)
    if config.init_from_reverse:
        load_weights(models[generators[1]], read_state_dict(config.init_from_reverse), config.init_from_reverse)


def _with_fresh_projection(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state`, completed by `model`'s own (fresh) reference projection when `model` has one and
    `state` has none (see the module docstring)."""
    fresh = {k: v for k, v in model.state_dict().items() if k.startswith(PROJECTION)}
    if not fresh or any(k.startswith(PROJECTION) for k in state):
        return state
    logger.info("the pretrained generator has no reference projection: this run trains a fresh one")
    return {**state, **fresh}


def _stored_name(run: Run, name: str, config: TrainConfig) -> str:
    """The network of `run`'s checkpoint that initialises `name` (see the module docstring)."""
    if checkpoints.subset(run.tensors, name):
        return name
    if name == "G":
        return run.generator_name(config.target)
    if name == "D":
        return run.discriminator_name(config.target) or name
    return name


def pretrained_models(config: TrainConfig, generators: tuple[str, ...]) -> tuple[str, ...]:
    """The generators that start from pretrained weights."""
    if not config.init_from:
        return ()
    if len(generators) == 1 or config.init_from_reverse:  # (one generator: a resumed run's file may be gone)
        return generators
    source = Path(config.init_from)
    if not source.exists():
        raise FileNotFoundError(f"init_from: {source} does not exist (whether it held both generators sets their "
                                "learning rates)")
    return generators if checkpoints.checkpoint_directory(source) is not None else generators[:1]


def freeze(config: TrainConfig, models: dict[str, torch.nn.Module], generators: tuple[str, ...]) -> int:
    """Turns off the gradients of the generator parts config.freeze names; returns how many
    parameters (elements) are frozen."""
    if not config.freeze_parts():  # (then a generator without parts, StyleGAN2's, is not asked for them)
        return 0
    frozen = 0
    for name in generators:
        model = models[name]
        parts = model.parts()
        blocks = sorted((p for p in parts if p.startswith("block")), key=lambda p: int(p[len("block"):]))
        parameters = dict(model.named_parameters())
        for wanted in config.freeze_parts():
            part, _, count = wanted.partition(":")
            if part == "blocks" and int(count or 0) <= len(blocks):
                selected = blocks[:int(count)] if count else blocks
            elif part in parts and part != "blocks":
                selected = [part]
            else:
                raise ValueError(f"freeze: {name} ({type(model).__name__}) has no part {wanted!r}; its parts: "
                                 f"{', '.join(p for p in parts if not p.startswith('block'))} and {len(blocks)} blocks")
            for key in (k for p in selected for k in parts[p]):
                parameters[key].requires_grad_(False)
                frozen += parameters[key].numel()
    return frozen


def parameter_groups(models: list[torch.nn.Module], pretrained: list[bool], lr: float,
                     pretrained_lr: float) -> list[dict]:
    """Adam parameter groups of the models' trainable parameters: the pretrained models' at
    lr * pretrained_lr, the others at lr (frozen parameters are left out)."""
    def trainable(wanted: bool) -> list[torch.nn.Parameter]:
        return [p for model, is_pretrained in zip(models, pretrained) if is_pretrained == wanted
                for p in model.parameters() if p.requires_grad]

    return [{"params": params, "lr": lr * factor}
            for params, factor in ((trainable(False), 1.0), (trainable(True), pretrained_lr)) if params]
