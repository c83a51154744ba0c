"""Generators and discriminators from files, with their architecture read off the keys.

``load_generator(path)`` takes a pytorch-CycleGAN-and-pix2pix file (``latest_net_G.pth``,
``latest_net_G_A.pth``; any number of residual blocks, instance or batch norm, with or without
dropout), a file ``culturegan convert`` wrote (safetensors + JSON model card), or a culturegan
training run or checkpoint, and returns the model and its card. ``load_run(path)`` reads such a
file once and says which generator serves which direction, between which cultures (the
transfer and evaluation code asks it). ``convert`` writes our format.
No flags describe the architecture: ``infer_generator`` reads it from the keys and shapes, and
a file it cannot map gets an error listing what it found and what did not fit.

StyleGAN2 (culturegan.models.stylegan2, NVlabs' layout): ``load_generator`` and
``load_discriminator`` also take an NVlabs stylegan2-ada-pytorch snapshot (``.pkl``: G_ema, or G,
and D, rebuilt from the constructor arguments the snapshot records; read by
culturegan.models.nvlabs_pickle, which never runs the code a snapshot carries), a converted file,
or a plain state_dict of our StyleGAN2 networks, whose architecture is read off the keys with
NVlabs' defaults for what keys cannot show (float32, no conv_clamp, minibatch-std groups of 4,
mapping learning-rate multiplier 0.01). Tensors that do not fit the architecture exactly are
refused, naming the missing and unexpected ones (NVlabs' resume silently skips them).
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
from culturegan.models import checkpoints, stylegan2
from culturegan.models.culture import MultiCultureGenerator
from culturegan.models.cyclegan import NLayerDiscriminator, ResnetGenerator
from culturegan.models.nvlabs_pickle import file_kind, read_snapshot
from culturegan.models.weights import fit_weights, read_state_dict

CARD_FORMAT = "culturegan.model"
CARD_VERSION = 1
FIRST_BLOCK = 10  # ResnetGenerator: model.0-9 are the stem and the two downsampling triples
GENERATORS = ("resnet_generator", "multi_generator")  # the image-to-image kinds, which Run.generator returns
STYLEGAN2_GENERATOR, STYLEGAN2_DISCRIMINATOR = "stylegan2_generator", "stylegan2_discriminator"
STYLEGAN2_CLASSES = {"Generator": STYLEGAN2_GENERATOR, "Discriminator": STYLEGAN2_DISCRIMINATOR}  # NVlabs' names
STYLEGAN2_GAN_MODE = "vanilla"  # NVlabs' non-saturating logistic loss: a StyleGAN2 D calls images real above 0
STYLEGAN2_NETWORKS = {STYLEGAN2_GENERATOR: stylegan2.Generator, STYLEGAN2_DISCRIMINATOR: stylegan2.Discriminator}
SNAPSHOT_SUFFIX = ".pkl"  # NVlabs' name for snapshots; they are recognised by their contents (file_kind)
STYLEGAN3_KEYS = ("synthesis.input.freqs", "synthesis.input.affine.weight")  # its Fourier-feature input


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

    def stacked_layers(self) -> int:
        """How many blocks or layers the network stacks (see build_model)."""
        return self.depth if isinstance(self.depth, int) else 0

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


@dataclasses.dataclass(frozen=True)
class StyleGAN2Architecture:
    """What build() needs for a StyleGAN2 network: kind "stylegan2_generator" or
    "stylegan2_discriminator", and NVlabs' constructor arguments (JSON values)."""

    kind: str
    init_kwargs: dict

    def build(self, fused: bool = True) -> torch.nn.Module:
        """The network (it always runs on culturegan's fused ops: `fused` is for the other kinds)."""
        network = STYLEGAN2_NETWORKS.get(self.kind)
        if network is None:
            raise ValueError(f"unknown architecture kind {self.kind!r}")
        try:
            return network(**self.init_kwargs)
        except TypeError as error:  # an argument NVlabs' constructor does not take
            raise ValueError(f"StyleGAN2 {network.__name__} arguments {sorted(self.init_kwargs)} do not fit its "
                             f"constructor: {error}") from None

    def stacked_layers(self) -> int:
        """How many layers the mapping network stacks (see build_model): a generator's always, a
        discriminator's when it is conditional; NVlabs' default is 8."""
        kwargs = self.init_kwargs
        if self.kind == STYLEGAN2_DISCRIMINATOR and not kwargs.get("c_dim"):
            return 0
        mapping = kwargs.get("mapping_kwargs") or {}
        layers = mapping.get("num_layers", 8) if isinstance(mapping, dict) else 0
        return layers if isinstance(layers, int) else 0

    def describe(self) -> str:
        kwargs = self.init_kwargs
        resolution, classes = kwargs.get("img_resolution"), kwargs.get("c_dim")
        shape = f"{resolution}x{resolution}, {kwargs.get('img_channels')} channels" + (
            f", {classes} classes" if classes else "")
        if self.kind == STYLEGAN2_GENERATOR:
            layers = (kwargs.get("mapping_kwargs") or {}).get("num_layers", 8)
            return (f"StyleGAN2 generator ({shape}, z {kwargs.get('z_dim')}, w {kwargs.get('w_dim')}, {layers} mapping "
                    "layers)")
        return f"StyleGAN2 discriminator ({shape})"


def architecture_from_card(fields: dict) -> Architecture | StyleGAN2Architecture:
    """The architecture a model card's "architecture" entry describes."""
    if fields.get("kind") in STYLEGAN2_CLASSES.values():
        return StyleGAN2Architecture(**fields)
    return Architecture(**fields)


def recorded_architecture(model: torch.nn.Module) -> dict | None:
    """The card's "architecture" entry of a StyleGAN2 network as it was built: its constructor
    arguments, with what its keys do not show (conv_clamp, the float16 blocks, the minibatch-std
    groups); None for the other networks, whose keys show all (infer_architecture)."""
    kind = next((kind for kind, network in STYLEGAN2_NETWORKS.items() if type(model) is network), None)
    return None if kind is None else dataclasses.asdict(StyleGAN2Architecture(kind, model.init_kwargs))


def infer_architecture(state: dict[str, torch.Tensor]) -> Architecture | StyleGAN2Architecture:
    """The architecture a state_dict belongs to, from its keys and shapes (see the module docstring)."""
    _refuse_stylegan3(state, "these tensors are")
    if "synthesis.b4.const" in state:
        return _infer_stylegan2_generator(state)
    if "b4.out.weight" in state and "b4.conv.weight" in state:
        return _infer_stylegan2_discriminator(state)
    if "culture_embedding.weight" in state and "encoder.0.0.weight" in state:
        return _infer_multi(state)
    if "model.1.weight" in state and any(".conv_block." in k for k in state) or "model.26.weight" in state:
        return _infer_resnet(state)
    if "model.0.weight" in state and state["model.0.weight"].dim() == 4 and state["model.0.weight"].shape[-1] == 4:
        return _infer_patchgan(state)
    raise ValueError(f"cannot tell the architecture of these {len(state)} tensors (first keys: "
                     f"{sorted(state)[:6]}): expected a CycleGAN ResNet generator (model.1.weight, "
                     "model.N.conv_block...), a PatchGAN discriminator (model.0.weight 4x4), a culturegan "
                     "multi-culture generator, or a StyleGAN2 generator (synthesis.b4.const) or discriminator "
                     "(b4.conv.weight, b4.out.weight)")


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


def _infer_stylegan2_generator(state) -> StyleGAN2Architecture:
    resolutions = _block_resolutions(state, "synthesis.b")
    top = resolutions[-1]
    if any(f"synthesis.b{r}.torgb.weight" not in state for r in resolutions):
        raise ValueError("a StyleGAN2 generator without a torgb layer in every block: only the 'skip' architecture "
                         "is supported")
    mapping, features = _mapping_kwargs(state)
    embedding = state.get("mapping.embed.weight")
    synthesis = _channel_kwargs({r: int(state[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in resolutions})
    if "synthesis.b4.conv1.noise_const" not in state:
        synthesis["use_noise"] = False
    return StyleGAN2Architecture(STYLEGAN2_GENERATOR, dict(
        z_dim=int(state["mapping.fc0.weight"].shape[1]) - features, c_dim=0 if embedding is None else
        int(embedding.shape[1]), w_dim=int(state[f"mapping.fc{mapping['num_layers'] - 1}.weight"].shape[0]),
        img_resolution=top, img_channels=int(state[f"synthesis.b{top}.torgb.weight"].shape[0]),
        mapping_kwargs=mapping, synthesis_kwargs=synthesis))


def _infer_stylegan2_discriminator(state) -> StyleGAN2Architecture:
    resolutions = _block_resolutions(state, "b")
    top = resolutions[-1]
    if f"b{top}.fromrgb.weight" not in state or any(f"b{r}.skip.weight" not in state for r in resolutions[1:]):
        raise ValueError("a StyleGAN2 discriminator without fromrgb at the top and skip layers in every block: only "
                         "the 'resnet' architecture is supported")
    epilogue = state["b4.conv.weight"]
    channels = {r: int(state[f"b{r}.conv0.weight"].shape[0]) for r in resolutions[1:]}
    channels[4] = int(epilogue.shape[0])
    kwargs = dict(c_dim=0, img_resolution=top, img_channels=int(state[f"b{top}.fromrgb.weight"].shape[1]),
                  **_channel_kwargs(channels))
    if epilogue.shape[1] != channels[4] + 1:  # the minibatch-std features NVlabs appends (1 by default)
        kwargs["epilogue_kwargs"] = {"mbstd_num_channels": int(epilogue.shape[1]) - channels[4]}
    if "mapping.embed.weight" in state:  # conditional: the labels are mapped to cmap_dim features
        kwargs["mapping_kwargs"], _ = _mapping_kwargs(state)
        kwargs.update(c_dim=int(state["mapping.embed.weight"].shape[1]),
                      cmap_dim=int(state["b4.out.weight"].shape[0]))
    return StyleGAN2Architecture(STYLEGAN2_DISCRIMINATOR, kwargs)


def _block_resolutions(state, prefix: str) -> list[int]:
    """The resolutions of the blocks named prefix{r}., which must be 4, 8, ... in full."""
    resolutions = sorted({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    expected = [2 ** i for i in range(2, 2 + len(resolutions))]
    if resolutions != expected:
        raise ValueError(f"StyleGAN2 blocks {prefix}{{r}} at resolutions {resolutions}; expected {expected}")
    return resolutions


def _mapping_kwargs(state) -> tuple[dict, int]:
    """(the mapping network's kwargs its keys show, its label embedding's width)."""
    layers = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    if layers != list(range(len(layers))) or not layers:
        raise ValueError(f"StyleGAN2 mapping layers fc{layers}: expected fc0, fc1, ... in full")
    kwargs = {"num_layers": len(layers)}
    output = int(state[f"mapping.fc{len(layers) - 1}.weight"].shape[0])
    hidden = int(state["mapping.fc0.weight"].shape[0])
    if len(layers) > 1 and hidden != output:
        kwargs["layer_features"] = hidden
    embedding = state.get("mapping.embed.weight")
    features = 0 if embedding is None else int(embedding.shape[0])
    if embedding is not None and features != output:
        kwargs["embed_features"] = features
    return kwargs, features


def _channel_kwargs(channels: dict[int, int]) -> dict:
    """channel_base and channel_max that give these widths by NVlabs' C(r) = min(channel_base // r,
    channel_max): channel_max the widest, channel_base the smallest that every block allows (one
    below channel_max needs channel_base // r == C(r), one at it channel_base // r >= C(r))."""
    widest = max(channels.values())
    lowest = max(width * r for r, width in channels.items())
    highest = min(((width + 1) * r - 1 for r, width in channels.items() if width < widest), default=lowest)
    if lowest > highest:
        raise ValueError(f"StyleGAN2 channel widths {dict(sorted(channels.items()))} do not follow NVlabs' "
                         "min(channel_base // resolution, channel_max)")
    return {"channel_base": lowest, "channel_max": widest}


def _refuse_stylegan3(state, holder: str) -> None:
    """A StyleGAN3 generator (same snapshot format, other networks) is named as such, not refused
    with a list of arguments and tensors that do not fit."""
    if any(key in state for key in STYLEGAN3_KEYS):
        raise ValueError(f"{holder} a StyleGAN3 generator (synthesis.input, its Fourier-feature input), which "
                         "culturegan does not build: it builds stylegan2-ada-pytorch's networks (StyleGAN3's "
                         "discriminator is StyleGAN2's, and loads)")


# ------------------------------------------------------------------------------ loading

def build_model(state: dict[str, torch.Tensor], source,
                architecture: Architecture | StyleGAN2Architecture | None = None,
                fused: bool = True) -> torch.nn.Module:
    """The model `state` belongs to (`architecture`, or the one read off the keys) with its
    weights, in eval mode; a mismatch names `source` and what was inferred.

    A card's or a snapshot's recorded arguments could describe a network far larger than the
    file's tensors, so the model is first built on the meta device (no memory) and compared with
    them by names and shapes, and before that its depth, which even a meta build takes time and
    memory for, is compared with their number (every layer has a tensor)."""
    architecture = architecture or infer_architecture(state)
    where = f"{source} (inferred: {architecture.describe()})"
    if architecture.stacked_layers() > len(state):
        raise ValueError(f"{where}: the architecture stacks {architecture.stacked_layers()} layers, but the file "
                         f"holds only {len(state)} tensors")
    with torch.device("meta"):
        fitted = fit_weights(architecture.build(fused), state, where)
    model = architecture.build(fused)
    model.load_state_dict(fitted)
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
        if config.get("mode") == "stylegan2":  # from noise to the culture: G_ema (NVlabs' to sample), then G
            return {"G_ema": {"target": config["target"]}, "G": {"target": config["target"]}}
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
        card = new_card(self._architecture(name, state), self.checkpoint / checkpoints.TENSORS_FILE, self._state_digest)
        card.update(cultures=directions[name], trained_steps=self.meta["step"])
        return state, card

    def _architecture(self, name: str, state: dict[str, torch.Tensor]) -> Architecture | StyleGAN2Architecture:
        """Network `name`'s architecture as the run recorded it (its StyleGAN2 networks', since
        2026-11-30), else read off its keys."""
        recorded = self.meta.get("architectures", {}).get(name)
        return infer_architecture(state) if recorded is None else architecture_from_card(recorded)

    @functools.cached_property
    def _state_digest(self) -> str:
        """The checkpoint's state file's SHA-256 (every generator's card names it)."""
        return file_sha256(self.checkpoint / checkpoints.TENSORS_FILE)

    def generator(self, name: str | None = None, fused: bool = True,
                  device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
        """(model in eval mode on `device`, card) of generator `name` (see generator_state)."""
        model, card = _built(self.path, self.generator_state(name), GENERATORS, "generator that transfers images",
                             fused)
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

    @property
    def makes_images_from_noise(self) -> bool:
        """Whether the default generator is a StyleGAN2 one (a stylegan2 run, a converted or
        blended file), which maps latent codes to images rather than transferring images."""
        if self.checkpoint is None:
            return self.card.get("architecture", {}).get("kind") == STYLEGAN2_GENERATOR
        return self.meta["config"].get("mode") == "stylegan2"

    def discriminator_name(self, target: str) -> str | None:
        """The name of the discriminator, in this run's checkpoint, that judges images of `target`
        (D_B the run's target, D_A its source; a contrastive or stylegan2 run's D its target only);
        None for other files and runs."""
        config = self.meta.get("config", {})
        if self.checkpoint is None or config.get("mode") == "multi":
            return None
        if config.get("mode") in ("contrastive", "stylegan2"):
            name = "D" if target == config["target"] else None
        else:
            name = "D_B" if target == config["target"] else "D_A"
        # a culture-aware discriminator (TrainConfig.discriminator_features) judges with the culture
        # features of the run's extractor, which this file does not rebuild: none, as in multi mode
        culture_aware = name is not None and "classifier.weight" in checkpoints.subset(self.tensors, name)
        return None if culture_aware else name

    def discriminator_for(self, target: str,
                          device: torch.device | str = "cpu") -> tuple[torch.nn.Module, str] | None:
        """(discriminator in eval mode, its GAN mode) that judges images of `target`
        (discriminator_name), or None."""
        name = self.discriminator_name(target)
        if name is None:
            return None
        state = checkpoints.subset(self.tensors, name)
        model = build_model(state, f"{self.checkpoint} ({name})", self._architecture(name, state))
        # a stylegan2 run's D is trained with the logistic loss, whatever gan_mode its config holds
        stylegan2_run = self.meta["config"].get("mode") == "stylegan2"
        return model.to(device), STYLEGAN2_GAN_MODE if stylegan2_run else self.meta["config"].get("gan_mode", "lsgan")


def load_run(path: str | os.PathLike) -> Run:
    """The Run of any file load_generator takes: a weights file, a converted file, or a training
    run or checkpoint (a run: its latest checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if is_snapshot(path):
        raise ValueError(f"{path} is an NVlabs StyleGAN2 snapshot, which makes images from noise (`culturegan "
                         "generate` renders it), not a generator that transfers images")
    checkpoint = checkpoints.checkpoint_directory(path)
    if checkpoint is not None:
        tensors, meta = checkpoints.load_checkpoint(checkpoint)
        return Run(path, checkpoint, tensors, meta, None)
    state = read_state_dict(path)
    card = embedded_card(path)
    if card is None:
        card = new_card(infer_architecture(state), path)
    return Run(path, None, state, {}, card)


def _built(path: Path, weights: tuple[dict[str, torch.Tensor], dict], kinds: tuple[str, ...], role: str,
           fused: bool) -> tuple[torch.nn.Module, dict]:
    """(model, card) of weights = (state_dict, card) read from `path`, which must be one of `kinds`."""
    state, card = weights
    architecture = architecture_from_card(card["architecture"])
    if architecture.kind not in kinds:
        raise ValueError(f"{path} holds a {architecture.describe()}, not a {role}")
    return build_model(state, path, architecture, fused), card


def load_generator(path: str | os.PathLike, generator: str | None = None, fused: bool = True,
                   device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, model card) from a weights file, a converted file, a training run or
    checkpoint (``generator`` picks G_AB (default) or G_BA of a two-culture run) or an NVlabs
    StyleGAN2 snapshot (``generator`` picks G_ema (default) or G)."""
    model, card = _built(Path(path), read_model(path, generator), GENERATORS + (STYLEGAN2_GENERATOR,), "generator",
                         fused)
    return model.to(device), card


def read_model(path: str | os.PathLike, generator: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, model card) of any file load_generator takes; the card's architecture is
    read from the file's card, the run's configuration, the snapshot's records or the keys.
    ``generator`` names the network: G_AB or G_BA of a two-culture run; G_ema (default), G or D
    of an NVlabs snapshot."""
    if is_snapshot(Path(path)):
        return _snapshot_network(Path(path), generator or "G_ema")
    return load_run(path).generator_state(generator)


def is_snapshot(path: Path) -> bool:
    """Whether `path` is a plain pickle, as NVlabs' snapshots are, however it is named (torch.save's
    files are not); a file named .pkl that is no pickle at all is refused, saying so."""
    if not path.is_file():
        return False
    kind = file_kind(path)
    if kind == "other" and path.suffix.lower() == SNAPSHOT_SUFFIX:
        raise ValueError(f"{path} is not a pickle (it does not start with pickle's protocol header, as NVlabs' "
                         "snapshots do): a damaged download, or another kind of file named .pkl")
    return kind == "pickle"


def _snapshot_network(path: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, card) of network `name` of an NVlabs snapshot."""
    state, architecture = _snapshot_parts(path, name, read_snapshot(path))
    card = new_card(architecture, path)
    card["source_file"]["network"] = name
    return state, card


def _snapshot_parts(path: Path, name: str, networks: dict) -> tuple[dict[str, torch.Tensor], StyleGAN2Architecture]:
    """(state_dict, architecture from its recorded arguments) of network `name` of the snapshot
    `path`, whose read_snapshot is `networks`."""
    network = networks.get(name)
    if network is None:
        raise ValueError(f"{path} has no network {name!r}; it holds {', '.join(networks)}")
    _refuse_stylegan3(network.state_dict, f"{path} ({name}) is")
    kind = STYLEGAN2_CLASSES.get(network.class_name)
    if kind is None:
        raise ValueError(f"{path} ({name}) is NVlabs' {network.class_name}; culturegan builds their "
                         f"{' and '.join(STYLEGAN2_CLASSES)}")
    return network.state_dict, StyleGAN2Architecture(kind, network.init_kwargs)


def new_card(architecture: Architecture | StyleGAN2Architecture, source: Path, sha256: str | None = None) -> dict:
    """A card for a model read from `source` (whose SHA-256 is computed unless given)."""
    return {"format": CARD_FORMAT, "version": CARD_VERSION, "architecture": dataclasses.asdict(architecture),
            "description": architecture.describe(),
            "source_file": {"name": source.name, "sha256": sha256 or file_sha256(source)},
            "cultures": {}, "licence": ""}


def embedded_card(path: Path) -> dict | None:
    """The model card in a converted or blended .safetensors file (its metadata only: no tensor is
    read); None for other files."""
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


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes (a model card's source_file)."""
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
    model = build_model(state, source, architecture_from_card(card["architecture"]), fused=False)
    if cultures:
        card["cultures"] = cultures
    return save_model(model, card, destination), card


def save_model(model: torch.nn.Module, card: dict, destination: str | os.PathLike) -> Path:
    """Writes `model`'s state_dict to `destination` (.safetensors, `card` in its metadata) and the
    card beside it as .json, each atomically; counts its parameters and tensors into `card`
    first. The one way culturegan writes a model file (convert, blend); returns the path."""
    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise ValueError(f"models are written as .safetensors, got {destination}")
    card["parameters"] = sum(p.numel() for p in model.parameters())
    card["tensors"] = len(model.state_dict())
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(destination) as temporary:
        save_file(tensors, str(temporary), metadata={CARD_FORMAT: json.dumps(card)})
    write_text(destination.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    return destination


def load_discriminator(path: str | os.PathLike, fused: bool = True) -> tuple[torch.nn.Module, dict]:
    """(discriminator in eval mode, card) from a CycleGAN ``latest_net_D_A.pth``, an NVlabs
    StyleGAN2 snapshot (its D), a StyleGAN2 discriminator's state_dict or a converted file."""
    path = Path(path)
    state, card = read_model(path, "D" if is_snapshot(path) else None)
    return _built(path, (state, card), ("patchgan", STYLEGAN2_DISCRIMINATOR), "discriminator", fused)


def snapshot_discriminator(path: str | os.PathLike, fused: bool = True) -> torch.nn.Module | None:
    """An NVlabs snapshot's D in eval mode (built from its recorded arguments), or None when the
    snapshot holds no D. Reads the pickle once and makes no card (no hash of the file)."""
    path = Path(path)
    networks = read_snapshot(path)
    if "D" not in networks:
        return None
    state, architecture = _snapshot_parts(path, "D", networks)
    return build_model(state, f"{path} (D)", architecture, fused)


__all__ = ["Architecture", "Run", "StyleGAN2Architecture", "architecture_from_card", "build_model", "convert",
           "infer_architecture", "is_snapshot", "load_discriminator", "load_generator", "load_run", "read_model",
           "recorded_architecture", "save_model", "snapshot_discriminator"]
