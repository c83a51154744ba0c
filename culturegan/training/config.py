"""Training configuration: a TOML (or YAML, with PyYAML installed) file plus `key=value`
overrides, checked against TrainConfig's fields: an unknown key or a value of the wrong type is
an error that names it. Every run saves its resolved configuration beside its checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path

from culturegan.losses.structure import SCALES as STRUCTURE_SCALES
from culturegan.losses.structure import check_scales
from culturegan.models.cyclegan import UPSAMPLING

MODES = ("pair", "multi")
WEIGHTS = ("lambda_cycle", "lambda_identity", "lambda_culture", "lambda_structure", "lambda_class", "r1_gamma")
FREEZABLE = ("encoder", "blocks", "blocks:K", "decoder", "style")


@dataclasses.dataclass
class TrainConfig:
    # mode "pair": CycleGAN between `source` and `target`; "multi": one AdaIN-conditioned
    # generator for all `cultures` (comma-separated; empty: every culture folder)
    mode: str = "pair"
    # data: ROOT/<culture>/<images>
    data_root: str = ""
    source: str = ""
    target: str = ""
    cultures: str = ""
    manifest: str = ""  # a `culturegan data clean` manifest ("" to use every image)
    load_size: int = 286
    crop_size: int = 256
    batch_size: int = 1
    workers: int = 4
    # models (CycleGAN's resnet_9blocks and basic PatchGAN by default)
    ngf: int = 64
    n_blocks: int = 9
    upsample: str = "transpose"  # pair: the generators' upsampling, CycleGAN's "transpose" or "bilinear" (CUT's)
    ndf: int = 64
    d_layers: int = 3  # PatchGAN depth (CycleGAN's n_layers_D): 3 judges 70-pixel patches, 2 34, 1 16
    style_dim: int = 64  # multi: the culture style code's length
    discriminator_features: bool = True  # multi: the discriminator's projection head sees culture features
    # transfer learning: a culturegan checkpoint (run or step directory) or a generator weights
    # file (.safetensors/.pth) for G_AB (pair) or G (multi); G_BA from `init_from_reverse`
    init_from: str = ""
    init_from_reverse: str = ""
    init_discriminators: bool = False  # also take the discriminators from an init_from checkpoint
    freeze: str = ""  # generator parts kept fixed, comma-separated: encoder, blocks or blocks:K, decoder, style
    pretrained_lr: float = 1.0  # learning-rate factor of the trainable pretrained generator layers
    # losses
    gan_mode: str = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # times lambda_cycle
    lambda_culture: float = 1.0
    culture_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour, texture, line
    # the output keeps the input's line structure at these downsampling factors (0 is off)
    lambda_structure: float = 10.0
    structure_scales: tuple[int, ...] = STRUCTURE_SCALES
    profile_size: int = 128  # images are resized to this to fit the culture profiles
    r1_gamma: float = 0.0  # R1 penalty on real images; 0 is off
    lambda_class: float = 1.0  # multi: the discriminator's auxiliary culture classification
    # optimisation
    steps: int = 10000
    decay_steps: int = 5000  # the last `decay_steps` decay the learning rate linearly to 0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pool_size: int = 50
    amp: str = "none"  # "none", "bf16" or "fp16" (with a gradient scaler)
    channels_last: bool = True
    compile: bool = False  # torch.compile the networks
    device: str = "auto"  # "auto", "cpu" or "cuda"
    seed: int = 0
    # output
    output: str = "runs/culturegan"
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 50
    sample_every: int = 500  # sample grids (input, output, reconstruction); 0 is off
    sample_count: int = 4
    progress: bool = True  # a progress bar, when standard error is a terminal
    tensorboard: bool = False  # also log to OUTPUT/tensorboard (needs the tensorboard package)
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops

    def validate(self) -> TrainConfig:
        if not self.data_root:
            raise ValueError("data_root must be set (the dataset folder, one sub-folder per culture)")
        if self.mode == "pair" and (not self.source or not self.target):
            raise ValueError("mode 'pair' needs source and target (the two culture names)")
        if self.mode == "pair" and self.source == self.target:
            raise ValueError(f"source and target are the same culture {self.source!r}")
        self.freeze_parts()
        self._check_weights()
        checks = {"mode": self.mode in MODES, "pretrained_lr": self.pretrained_lr >= 0,
                  "sample_every": self.sample_every >= 0, "sample_count": self.sample_count >= 1,
                  "init_from_reverse": not self.init_from_reverse or (self.init_from and self.mode == "pair"),
                  "init_discriminators": not self.init_discriminators or bool(self.init_from),
                  "style_dim": self.style_dim >= 1, "d_layers": self.d_layers >= 1,
                  "upsample": self.upsample in UPSAMPLING,
                  "gan_mode": self.gan_mode in ("lsgan", "vanilla", "hinge"),
                  "amp": self.amp in ("none", "bf16", "fp16"), "device": self.device in ("auto", "cpu", "cuda"),
                  "crop_size": 16 <= self.crop_size <= self.load_size, "batch_size": self.batch_size >= 1,
                  "steps": self.steps >= 1, "decay_steps": 0 <= self.decay_steps <= self.steps,
                  "checkpoint_every": self.checkpoint_every >= 1, "keep_last": self.keep_last >= 1,
                  "log_every": self.log_every >= 1, "max_bad_steps": self.max_bad_steps >= 1,
                  "workers": self.workers >= 0, "pool_size": self.pool_size >= 0,
                  "lr": math.isfinite(self.lr) and self.lr > 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid setting(s): " + ", ".join(f"{name}={getattr(self, name)!r}" for name in bad))
        if self.mode == "multi" and self.upsample != "transpose":
            raise ValueError(f"upsample={self.upsample!r} is for mode 'pair'; the multi-culture generator upsamples "
                             "with transposed convolutions only")
        check_scales(self.structure_scales, self.crop_size)
        return self

    def _check_weights(self) -> None:
        for name in WEIGHTS:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if any(not math.isfinite(w) or w < 0 for w in self.culture_weights):
            raise ValueError(f"culture_weights must be 3 finite numbers >= 0 (colour, texture, line), got "
                             f"{self.culture_weights!r}")

    def culture_list(self) -> list[str]:
        return [name.strip() for name in self.cultures.split(",") if name.strip()]

    def freeze_parts(self) -> list[str]:
        """The `freeze` entries, checked: encoder, blocks, blocks:K, decoder or style."""
        parts = [part.strip() for part in self.freeze.split(",") if part.strip()]
        for part in parts:
            name, _, count = part.partition(":")
            if name not in ("encoder", "blocks", "decoder", "style") or (count and (name != "blocks"
                                                                                 or not count.isdigit())):
                raise ValueError(f"freeze: unknown generator part {part!r}; expected some of {', '.join(FREEZABLE)}")
        return parts

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(name: str, value):
    """value as the type of field `name` (from a file, or a string from the command line)."""
    kind = typing.get_type_hints(TrainConfig)[name]
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise TypeError(value)
            return value
        if typing.get_origin(kind) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            arguments = typing.get_args(kind)
            if arguments[-1] is Ellipsis:  # tuple[T, ...]: any length
                arguments = (arguments[0],) * len(items)
            if len(items) != len(arguments):
                raise ValueError(value)
            return tuple(_item(t, v) for t, v in zip(arguments, items))
        if kind in (int, float) and isinstance(value, bool):
            raise TypeError(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {name!r} takes {_describe(kind)}, got {value!r}") from None


def _item(kind: type, value):
    """One element of a tuple setting: an int must be a whole number, a bool is not a number."""
    if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return kind(value.strip() if isinstance(value, str) else value)


def _describe(kind) -> str:
    if typing.get_origin(kind) is not tuple:
        return f"a {getattr(kind, '__name__', str(kind))}"
    arguments = typing.get_args(kind)
    if arguments[-1] is Ellipsis:
        return f"a comma-separated list of {arguments[0].__name__}"
    return f"{len(arguments)} comma-separated {arguments[0].__name__} values"


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """TrainConfig from a TOML/YAML file (optional) and `key=value` overrides, validated."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ValueError(f"{path}: YAML configs need PyYAML (pip install pyyaml), or use TOML") from None
            values = yaml.safe_load(text) or {}
        else:
            try:
                values = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"{path}: not valid TOML ({error})") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config is a table of key = value")
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep:
            raise ValueError(f"override {override!r} is not key=value")
        values[key.strip()] = value.strip()
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(FIELDS)}")
    return TrainConfig(**{name: _coerce(name, value) for name, value in values.items()}).validate()
