"""Training configuration: a TOML (or YAML, with PyYAML installed) file plus `key=value`
overrides, checked against TrainConfig's fields: an unknown key or a value of the wrong type is
an error that names it. Every run saves its resolved configuration beside its checkpoints.

Keys of one mode only (the contrastive ones, CONTRASTIVE_KEYS) default to None, which says "not
given": another mode refuses them by name, and mode "contrastive" fills each one left None from
its preset (PRESETS: "cut" unless `preset` says otherwise), then from CONTRASTIVE_DEFAULTS; a key
given explicitly always wins over the preset. `pool_size` left None is 50 (CycleGAN's) in the
pair and multi modes and 0 in the contrastive one (CUT trains without an image pool)."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from pathlib import Path

from culturegan.losses.structure import SCALES as STRUCTURE_SCALES
from culturegan.losses.structure import check_scales
from culturegan.models.cyclegan import UPSAMPLING
from culturegan.models.loading import FIRST_BLOCK

MODES = ("pair", "multi", "contrastive")
WEIGHTS = ("lambda_cycle", "lambda_identity", "lambda_culture", "lambda_structure", "lambda_class", "lambda_reference",
           "r1_gamma")
CONTRASTIVE_KEYS = ("preset", "lambda_nce", "nce_idt", "flip_equivariance", "nce_layers", "nce_patches",
                    "nce_temperature")
# CUT's two settings (Park et al. 2020, taesungp/contrastive-unpaired-translation): CUT adds the
# PatchNCE identity loss on target images; FastCUT drops it, weighs PatchNCE 10x and makes the
# generator's features flip-equivariant instead
PRESETS = {"cut": {"lambda_nce": 1.0, "nce_idt": True, "flip_equivariance": False},
           "fastcut": {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}}
# CUT's nce_layers (of resnet_9blocks): the input, the two downsamplings, residual blocks 2 and 6
CUT_NCE_LAYERS = (0, 4, 8, 12, 16)
CONTRASTIVE_DEFAULTS = {"preset": "cut", "nce_patches": 256, "nce_temperature": 0.07}
POOL_SIZES = {"contrastive": 0}  # pool_size by mode, when not given; CycleGAN's 50 otherwise
FREEZABLE = ("encoder", "blocks", "blocks:K", "decoder", "style")


@dataclasses.dataclass
class TrainConfig:
    # mode "pair": CycleGAN between `source` and `target`; "multi": one AdaIN-conditioned
    # generator for all `cultures` (comma-separated; empty: every culture folder); "contrastive":
    # CUT, one generator from `source` to `target` trained with PatchNCE instead of a cycle
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
    upsample: str = "transpose"  # pair, contrastive: CycleGAN's "transpose" or "bilinear" (CUT's) upsampling
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
    # multi: the generator's reference projection (culture features -> style code, what `culturegan
    # transfer --reference` steers with) is trained on half the images of every step
    # (objectives.MultiCultureObjective), plus this weight times the mean squared distance of each
    # reference's code to its culture's embedding. 1: that distance starts near 1 (embedding entries are
    # N(0, 1), fresh projections near 0), about the adversarial loss, well below the cycle loss (10 x L1),
    # so it anchors references to their culture's code without overruling what the other losses ask of
    # them. 0: no projection, no references (as runs were before), and transfer refuses references
    lambda_reference: float = 1.0
    # contrastive (None: not given; see the module docstring for how the preset fills them)
    preset: str | None = None  # "cut" (default) or "fastcut"
    lambda_nce: float | None = None  # PatchNCE weight (cut 1, fastcut 10)
    nce_idt: bool | None = None  # also PatchNCE between target images and G(target) (cut true, fastcut false)
    flip_equivariance: bool | None = None  # randomly flip the input, flip the query features back (fastcut)
    # indices into the generator's nn.Sequential (the output of model[i]); default CUT's 0,4,8,12,16
    # less those past the residual blocks: 0,4,8 up to 2 blocks, 0,4,8,12 up to 6
    nce_layers: tuple[int, ...] | None = None
    nce_patches: int | None = None  # locations sampled per layer and image (256)
    nce_temperature: float | None = None  # (0.07)
    # optimisation
    steps: int = 10000
    decay_steps: int = 5000  # the last `decay_steps` decay the learning rate linearly to 0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    pool_size: int | None = None  # 50, or 0 in mode "contrastive" (see the module docstring)
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
    # held-out evaluation: every eval_every steps (0 is off) and after the last step, the source ->
    # target generator transfers the first eval_count source images of eval_data (ROOT/<culture>/...,
    # images the run never trains on), measured against that folder's images of every culture as
    # `culturegan evaluate` measures them (without the cycle checks), and metrics.jsonl gets
    # {"step", "eval": {...}} (culturegan.metrics.HEADLINE). Mode "multi" measures source -> target
    eval_every: int = 0
    eval_data: str = ""
    eval_count: int = 16  # images per culture; content retrieval and KID need at least 2
    progress: bool = True  # progress bars (fitting the culture profiles, then the steps) on a terminal
    tensorboard: bool = False  # also log to OUTPUT/tensorboard (needs the tensorboard package)
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops

    def __post_init__(self) -> None:
        self._fill_mode_defaults()

    def _fill_mode_defaults(self) -> None:
        """Sets the keys left None (not given) to their mode's defaults (the module docstring)."""
        if self.pool_size is None:
            self.pool_size = POOL_SIZES.get(self.mode, 50)
        if self.mode != "contrastive":
            return
        if self.preset is None:
            self.preset = CONTRASTIVE_DEFAULTS["preset"]
        defaults = {**CONTRASTIVE_DEFAULTS, **PRESETS.get(self.preset, {}),
                    "nce_layers": tuple(i for i in CUT_NCE_LAYERS if i < FIRST_BLOCK + self.n_blocks)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> TrainConfig:
        self._fill_mode_defaults()
        if not self.data_root:
            raise ValueError("data_root must be set (the dataset folder, one sub-folder per culture)")
        two_cultures = self.mode in ("pair", "contrastive")
        if two_cultures and (not self.source or not self.target):
            raise ValueError(f"mode {self.mode!r} needs source and target (the two culture names)")
        if two_cultures and self.source == self.target:
            raise ValueError(f"source and target are the same culture {self.source!r}")
        self.freeze_parts()
        self._check_weights()
        self._check_contrastive()
        self._check_evaluation()
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
            raise ValueError(f"upsample={self.upsample!r} is for mode 'pair' (and 'contrastive'); the multi-culture "
                             "generator upsamples with transposed convolutions only")
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

    def _check_evaluation(self) -> None:
        """The held-out evaluation's keys (whether eval_data holds the two cultures is checked when
        the trainer starts: culturegan.training.held_out)."""
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0: no held-out evaluation), got {self.eval_every}")
        if self.eval_count < 2:
            raise ValueError(f"eval_count must be >= 2 (content retrieval and KID compare images), got "
                             f"{self.eval_count}")
        if not self.eval_every:
            return
        if not self.eval_data:
            raise ValueError(f"eval_every={self.eval_every} needs eval_data: a held-out dataset folder, one "
                             "sub-folder per culture (ROOT/<culture>/<images>)")
        if not self.source or not self.target or self.source == self.target:
            raise ValueError(f"eval_every in mode {self.mode!r} needs source and target, two different cultures: "
                             "the direction the held-out evaluation measures")

    def _check_contrastive(self) -> None:
        """Contrastive keys: refused by name in another mode; checked in mode "contrastive" (whether
        the generator has every nce_layers index, and nce_patches positions at each, is checked
        when the objective builds it: culturegan.training.objectives.ContrastiveObjective)."""
        if self.mode != "contrastive":
            given = [name for name in CONTRASTIVE_KEYS if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only for mode 'contrastive', this run's mode is {self.mode!r}")
            return
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        if not math.isfinite(self.lambda_nce) or self.lambda_nce < 0:
            raise ValueError(f"lambda_nce must be a finite number >= 0, got {self.lambda_nce!r}")
        if not math.isfinite(self.nce_temperature) or self.nce_temperature <= 0:
            raise ValueError(f"nce_temperature must be a finite number > 0, got {self.nce_temperature!r}")
        if self.nce_patches < 1:
            raise ValueError(f"nce_patches must be >= 1, got {self.nce_patches}")
        if not self.nce_layers or min(self.nce_layers) < 0 or len(set(self.nce_layers)) != len(self.nce_layers):
            raise ValueError(f"nce_layers must be distinct indices >= 0 into the generator's layers, got "
                             f"{self.nce_layers!r}")

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
    kind = _given_type(typing.get_type_hints(TrainConfig)[name])
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


def _given_type(kind):
    """T of a field typed `T | None` (None is its default, "not given": never a value to parse)."""
    arguments = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in arguments:
        return next(argument for argument in arguments if argument is not type(None))
    return kind


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
