"""Generators and discriminators from files, with their architecture read off the keys.

``load_generator(path)`` takes a pytorch-CycleGAN-and-pix2pix file (``latest_net_G.pth``,
``latest_net_G_A.pth``; any number of residual blocks, instance or batch norm, with or without
dropout), a file ``culturegan convert`` wrote (safetensors + JSON model card), or a culturegan
training run or checkpoint, and returns the model and its card. ``load_run(path)`` reads such a
file once and says which generator serves which direction, between which cultures (the
transfer and evaluation code asks it). ``convert`` writes our format.
No flags describe the architecture: ``infer_generator`` reads it from the keys and shapes, and
a file it cannot map gets an error listing what it found and what did not fit.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from culturegan._files import atomic_path, write_text
from culturegan.models import checkpoints
from culturegan.models.culture import MultiCultureGenerator
from culturegan.models.cyclegan import NLayerDiscriminator, ResnetGenerator
from culturegan.models.weights import load_weights, read_state_dict

CARD_FORMAT = "culturegan.model"
CARD_VERSION = 1
FIRST_BLOCK = 10  # ResnetGenerator: model.0-9 are the stem and the two downsampling triples
GENERATORS = ("resnet_generator", "multi_generator")  # the Architecture kinds load_generator returns


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What build() needs: kind "resnet_generator", "multi_generator" or "patchgan"."""

    kind: str
    in_channels: int = 3
    out_channels: int = 3
    width: int = 64  # ngf or ndf
    depth: int = 9  # residual blocks, or discriminator layers
    norm: str = "instance"
    dropout: bool = False
    num_cultures: int = 0
    style_dim: int = 0
    feature_dim: int | None = None
    upsample: str = "transpose"  # resnet_generator: CycleGAN's transposed convolutions, or "bilinear"

    def build(self, fused: bool = True) -> torch.nn.Module:
        if self.kind == "resnet_generator":
            return ResnetGenerator(self.in_channels, self.out_channels, self.width, self.depth, self.dropout,
                                   fused=fused and self.norm == "instance", norm=self.norm, upsample=self.upsample)
        if self.kind == "multi_generator":
            return MultiCultureGenerator(self.num_cultures, self.in_channels, self.out_channels, self.width,
                                         self.depth, self.style_dim, self.feature_dim)
        if self.kind == "patchgan":
            return NLayerDiscriminator(self.in_channels, self.width, self.depth,
                                       fused=fused and self.norm == "instance", norm=self.norm)
        raise ValueError(f"unknown architecture kind {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "resnet_generator":
            extras = "".join(f", {extra}" for extra, on in (("dropout", self.dropout),
                                                            ("bilinear upsampling", self.upsample == "bilinear")) if on)
            return (f"resnet_{self.depth}blocks generator (ngf {self.width}, {self.norm} norm{extras}, "
                    f"{self.in_channels}->{self.out_channels} channels)")
        if self.kind == "multi_generator":
            return (f"multi-culture generator ({self.num_cultures} cultures, ngf {self.width}, {self.depth} AdaIN "
                    f"blocks, style {self.style_dim})")
        return f"PatchGAN discriminator ({self.depth} layers, ndf {self.width}, {self.norm} norm)"


def infer_architecture(state: dict[str, torch.Tensor]) -> Architecture:
    """The architecture a state_dict belongs to, from its keys and shapes (see the module docstring)."""
    if "culture_embedding.weight" in state and "encoder.0.0.weight" in state:
        return _infer_multi(state)
    if "model.1.weight" in state and any(".conv_block." in k for k in state) or "model.26.weight" in state:
        return _infer_resnet(state)
    if "model.0.weight" in state and state["model.0.weight"].dim() == 4 and state["model.0.weight"].shape[-1] == 4:
        return _infer_patchgan(state)
    raise ValueError(f"cannot tell the architecture of these {len(state)} tensors (first keys: "
                     f"{sorted(state)[:6]}): expected a CycleGAN ResNet generator (model.1.weight, "
                     "model.N.conv_block...), a PatchGAN discriminator (model.0.weight 4x4) or a culturegan "
                     "multi-culture generator")


def _infer_resnet(state) -> Architecture:
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    if blocks and blocks != list(range(FIRST_BLOCK, FIRST_BLOCK + len(blocks))):
        raise ValueError(f"residual blocks at model indices {blocks}; a CycleGAN ResnetGenerator has them at "
                         f"{FIRST_BLOCK}.. consecutively")
    stem = state["model.1.weight"]
    head = state.get(f"model.{FIRST_BLOCK + len(blocks) + 7}.weight")
    if head is None:
        raise ValueError(f"found {len(blocks)} residual blocks but no output convolution "
                         f"model.{FIRST_BLOCK + len(blocks) + 7}.weight")
    # with dropout (at conv_block.4) the block's second conv moves from conv_block.5 to .6
    second = state.get(f"model.{FIRST_BLOCK}.conv_block.6.weight")
    dropout = second is not None and second.dim() == 4
    norm = "batch" if "model.2.weight" in state else "instance"
    upsample = "bilinear" if f"model.{FIRST_BLOCK + len(blocks)}.1.weight" in state else "transpose"
    return Architecture("resnet_generator", int(stem.shape[1]), int(head.shape[0]), int(stem.shape[0]), len(blocks),
                        norm, dropout, upsample=upsample)


def _infer_multi(state) -> Architecture:
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    stem, embedding = state["encoder.0.0.weight"], state["culture_embedding.weight"]
    head = state.get("decoder.3.weight")
    if head is None:
        raise ValueError("a multi-culture generator without its output convolution decoder.3.weight")
    # the projection's feature statistics (reference_mean, reference_scale) load with it when the
    # file has them; a projection saved before them gets identity statistics (complete_state_dict)
    reference = state.get("reference_projection.0.weight")
    return Architecture("multi_generator", int(stem.shape[1]), int(head.shape[0]), int(stem.shape[0]), len(blocks),
                        num_cultures=int(embedding.shape[0]), style_dim=int(embedding.shape[1]),
                        feature_dim=None if reference is None else int(reference.shape[1]))


def _infer_patchgan(state) -> Architecture:
    convs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"model\.(\d+)\.weight", k))
                   and state[k].dim() == 4)
    first = state["model.0.weight"]
    norm = "batch" if "model.3.weight" in state else "instance"
    return Architecture("patchgan", int(first.shape[1]), 1, int(first.shape[0]), len(convs) - 2, norm)


# ------------------------------------------------------------------------------ loading

def build_model(state: dict[str, torch.Tensor], source, architecture: Architecture | None = None,
                fused: bool = True) -> torch.nn.Module:
    """The model `state` belongs to (`architecture`, or the one read off the keys) with its
    weights, in eval mode; a mismatch names `source` and what was inferred."""
    architecture = architecture or infer_architecture(state)
    model = architecture.build(fused)
    load_weights(model, state, f"{source} (inferred: {architecture.describe()})")
    return model.eval()


@dataclasses.dataclass(frozen=True)
class Run:
    """A model file or a training checkpoint, read once (load_run): its networks, and which
    direction each generator serves."""

    path: Path  # as the caller named it (a file, a run, a checkpoint): errors name it
    checkpoint: Path | None  # a training run's checkpoint directory; None for a model file
    tensors: dict[str, torch.Tensor]  # a run's, each network's under "NAME."; a file's one model
    meta: dict  # a run's state.json (config, step, cultures, ...); {} for a file
    card: dict | None  # a file's model card; None for a run (its generators' cards are made from meta)

    @property
    def directions(self) -> dict[str | None, dict]:
        """Generator name (None: a file's one model) -> the cultures it serves, as its card's
        "cultures" say them: {"source", "target"}, {"all": [...]} (a multi-culture generator: to
        any of them) or {} (a file that names none). The default generator comes first."""
        if self.checkpoint is None:
            return {None: self.card.get("cultures", {})}
        config = self.meta["config"]
        if config.get("mode") == "multi":
            return {"G": {"all": list(self.meta["cultures"])}}
        source, target = config["source"], config["target"]
        if config.get("mode") == "contrastive":  # CUT: one generator, one way
            return {"G": {"source": source, "target": target}}
        return {"G_AB": {"source": source, "target": target}, "G_BA": {"source": target, "target": source}}

    def generator_state(self, name: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        """(state_dict, card) of generator `name` (None: the default, G_AB or G)."""
        if self.checkpoint is None:
            if name is not None:
                raise ValueError(f"{self.path} holds one model: generator={name!r} applies to training checkpoints")
            return self.tensors, copy.deepcopy(self.card)
        directions = self.directions
        name = name or next(iter(directions))
        state = checkpoints.subset(self.tensors, name) if name in directions else {}
        if not state:
            raise ValueError(f"{self.checkpoint}: no generator {name!r} (this run has {' and '.join(directions)})")
        card = new_card(infer_architecture(state), self.checkpoint / "state.safetensors", self._state_digest)
        card.update(cultures=directions[name], trained_steps=self.meta["step"])
        return state, card

    @functools.cached_property
    def _state_digest(self) -> str:
        """The checkpoint's state file's SHA-256 (every generator's card names it)."""
        return _sha256(self.checkpoint / "state.safetensors")

    def generator(self, name: str | None = None, fused: bool = True,
                  device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
        """(model in eval mode on `device`, card) of generator `name` (see generator_state)."""
        model, card = _built(self.path, self.generator_state(name), GENERATORS, "generator", fused)
        return model.to(device), card

    def generator_for(self, target: str | None) -> tuple[str | None, int | None]:
        """(name of the generator that transfers to `target` (None: the default one's target), the
        culture index to condition a multi-culture generator on, or None)."""
        directions = self.directions
        cultures = next(iter(directions.values()))
        if "all" in cultures:  # one generator for K cultures
            if target not in cultures["all"]:
                raise ValueError(f"{self.path} transfers to any of {cultures['all']}: give target_culture as one of "
                                 "them" + ("" if target is None else f", not {target!r}"))
            return None, cultures["all"].index(target)
        if target is None or target == cultures.get("target"):
            return None, None
        if not cultures:
            raise ValueError(f"{self.path} does not name its cultures (a plain weights file): omit target_culture, "
                             "or name them with `culturegan convert --source-culture A --target-culture B`")
        for name, served in directions.items():
            if served.get("target") == target:  # a two-culture run's reverse generator
                return name, None
        if self.meta.get("config", {}).get("mode") == "contrastive":
            raise ValueError(f"{self.path} is a contrastive (CUT) run: its one generator transfers "
                             f"{cultures['source']} -> {cultures['target']} only; it has no reverse direction "
                             f"to {target!r}")
        raise ValueError(f"{self.path} transfers {cultures.get('source')} -> {cultures.get('target')}; it cannot "
                         f"transfer to {target!r}")

    def generator_name(self, target: str | None) -> str:
        """The name of the generator, in this run's checkpoint, that transfers to `target`."""
        name, _ = self.generator_for(target)
        return name or next(iter(self.directions))

    def discriminator_name(self, target: str) -> str | None:
        """The name of the discriminator, in this run's checkpoint, that judges images of `target`
        (D_B the run's target, D_A its source; a contrastive run's D its target only); None for
        other files and runs."""
        config = self.meta.get("config", {})
        if self.checkpoint is None or config.get("mode") == "multi":
            return None
        if config.get("mode") == "contrastive":
            return "D" if target == config["target"] else None
        return "D_B" if target == config["target"] else "D_A"

    def discriminator_for(self, target: str,
                          device: torch.device | str = "cpu") -> tuple[torch.nn.Module, str] | None:
        """(discriminator in eval mode, its GAN mode) that judges images of `target`
        (discriminator_name), or None."""
        name = self.discriminator_name(target)
        if name is None:
            return None
        model = build_model(checkpoints.subset(self.tensors, name), f"{self.checkpoint} ({name})")
        return model.to(device), self.meta["config"].get("gan_mode", "lsgan")


def load_run(path: str | os.PathLike) -> Run:
    """The Run of any file load_generator takes: a weights file, a converted file, or a training
    run or checkpoint (a run: its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    checkpoint = checkpoints.checkpoint_directory(path)
    if checkpoint is not None:
        tensors, meta = checkpoints.load_checkpoint(checkpoint)
        return Run(path, checkpoint, tensors, meta, None)
    state = read_state_dict(path)
    card = _embedded_card(path)
    if card is None:
        card = new_card(infer_architecture(state), path)
    return Run(path, None, state, {}, card)


def _built(path: Path, weights: tuple[dict[str, torch.Tensor], dict], kinds: tuple[str, ...], role: str,
           fused: bool) -> tuple[torch.nn.Module, dict]:
    """(model, card) of weights = (state_dict, card) read from `path`, which must be one of `kinds`."""
    state, card = weights
    architecture = Architecture(**card["architecture"])
    if architecture.kind not in kinds:
        raise ValueError(f"{path} holds a {architecture.describe()}, not a {role}")
    return build_model(state, path, architecture, fused), card


def load_generator(path: str | os.PathLike, generator: str | None = None, fused: bool = True,
                   device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, model card) from a weights file, a converted file or a training run
    or checkpoint (``generator`` picks G_AB (default) or G_BA of a two-culture run)."""
    return load_run(path).generator(generator, fused, device)


def read_model(path: str | os.PathLike, generator: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, model card) of any file load_generator takes; the card's architecture is
    read from the file's card, the run's configuration or the keys."""
    return load_run(path).generator_state(generator)


def new_card(architecture: Architecture, source: Path, sha256: str | None = None) -> dict:
    """A card for a model read from `source` (whose SHA-256 is computed unless given)."""
    return {"format": CARD_FORMAT, "version": CARD_VERSION, "architecture": dataclasses.asdict(architecture),
            "description": architecture.describe(),
            "source_file": {"name": source.name, "sha256": sha256 or _sha256(source)},
            "cultures": {}, "licence": ""}


def _embedded_card(path: Path) -> dict | None:
    if path.suffix != ".safetensors":
        return None
    with safe_open(str(path), "pt") as file:
        text = (file.metadata() or {}).get(CARD_FORMAT)
    if text is None:
        return None
    card = json.loads(text)
    if card.get("version") != CARD_VERSION:
        raise ValueError(f"{path}: model card version {card.get('version')}, expected {CARD_VERSION}")
    return card


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def convert(source: str | os.PathLike, destination: str | os.PathLike, cultures: dict | None = None,
            generator: str | None = None) -> tuple[Path, dict]:
    """Writes `destination` (.safetensors, the card in its metadata) and its .json card beside it,
    each atomically, after checking that the weights build and load; returns (path, card)."""
    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise ValueError(f"convert writes .safetensors, got {destination}")
    if destination.resolve() == Path(source).resolve():
        raise ValueError(f"convert would overwrite its input {source}")
    state, card = read_model(source, generator)
    model = build_model(state, source, Architecture(**card["architecture"]), fused=False)
    if cultures:
        card["cultures"] = cultures
    card["parameters"] = sum(p.numel() for p in model.parameters())
    card["tensors"] = len(model.state_dict())
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(destination) as temporary:
        save_file(tensors, str(temporary), metadata={CARD_FORMAT: json.dumps(card)})
    write_text(destination.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return destination, card


def load_discriminator(path: str | os.PathLike, fused: bool = True) -> tuple[torch.nn.Module, dict]:
    """(PatchGAN in eval mode, card) from a CycleGAN ``latest_net_D_A.pth`` or a converted file."""
    run = load_run(path)
    return _built(run.path, run.generator_state(), ("patchgan",), "PatchGAN discriminator", fused)


__all__ = ["Architecture", "Run", "build_model", "convert", "infer_architecture", "load_discriminator",
           "load_generator", "load_run", "read_model"]
