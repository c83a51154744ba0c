"""Training configuration: a TOML (or YAML, with PyYAML installed) file plus `key=value`
overrides, checked against TrainConfig's fields: an unknown key or a value of the wrong type is
an error that names it. Every run saves its resolved configuration beside its checkpoints.

Keys of one mode only (MODE_KEYS: the contrastive ones, the stylegan2 ones), and keys of some
modes (SOME_MODES_DEFAULTS: the cycle, identity and multi-culture keys, and the line-structure
loss's, which mode stylegan2 lacks), default to None, which says "not given": another mode refuses
them by name. Mode "contrastive" fills each one left
None from its preset (PRESETS: "cut" unless `preset` says otherwise), then from
CONTRASTIVE_DEFAULTS; a key given explicitly always wins over the preset. Mode "stylegan2" fills
them from STYLEGAN2_DEFAULTS and NVlabs' rules that depend on other keys (_fill_stylegan2_defaults).

Some shared keys default by mode too (None: not given): `pool_size` is 50 (CycleGAN's) in the pair
and multi modes and 0 in the others (CUT and StyleGAN2 train without an image pool); `lr`,
`beta1`, `beta2`, `decay_steps` and `r1_gamma` are CycleGAN's (2e-4, 0.5, 0.999, 5000, 0) except
in mode "stylegan2", which takes NVlabs' --cfg=auto (lr 0.0025, or 0.002 from 1024 px; betas 0 and
0.99; a constant rate; R1 0.0002 * resolution^2 / the global batch), except mapping_layers: 8, their
paper configurations' (auto takes 2)."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import tomllib
import types
import typing
from pathlib import Path

from culturegan.losses.structure import SCALES as STRUCTURE_SCALES
from culturegan.losses.structure import check_scales
from culturegan.models.cyclegan import UPSAMPLING
from culturegan.models.loading import FIRST_BLOCK
from culturegan.training import distributed
from culturegan.training.ada import PRESETS as AUGMENT_PIPE_PRESETS

MODES = ("pair", "multi", "contrastive", "stylegan2")
WEIGHTS = ("lambda_cycle", "lambda_identity", "lambda_culture", "lambda_structure", "lambda_class", "lambda_reference",
           "r1_gamma")
CONTRASTIVE_KEYS = ("preset", "lambda_nce", "nce_idt", "flip_equivariance", "nce_layers", "nce_patches",
                    "nce_temperature")
# CUT's two settings (Park et al. 2020, taesungp/contrastive-unpaired-translation): CUT adds the
# PatchNCE identity loss on target images; FastCUT drops it, weighs PatchNCE 10x and makes the
# generator's features flip-equivariant instead
PRESETS = {"cut": {"lambda_nce": 1.0, "nce_idt": True, "flip_equivariance": False},
           "fastcut": {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}}
# CUT's nce_layers: the input, the first and second downsampling convolutions, and the first and
# fifth residual blocks. CUT's own indices, 0,4,8,12,16, count its antialiased downsamplings (four
# layers each: convolution, norm, ReLU, blur); these are the same layers of CycleGAN's generator
# (three each), whose residual block k is layer FIRST_BLOCK + k
CUT_NCE_LAYERS = (0, 4, 7, FIRST_BLOCK, FIRST_BLOCK + 4)
CONTRASTIVE_DEFAULTS = {"preset": "cut", "nce_patches": 256, "nce_temperature": 0.07}
# mode "stylegan2": StyleGAN2-ADA fine-tuning (or training from scratch) on one culture folder,
# `target` (culturegan.training.stylegan2 has the math and NVlabs' sources of every default)
STYLEGAN2_KEYS = ("resolution", "z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "r1_interval",
                  "pl_weight", "pl_interval", "style_mixing", "ema_kimg", "ema_rampup", "freeze_d", "augment",
                  "augment_p", "ada_target", "ada_interval", "ada_kimg")
MODE_KEYS = {"contrastive": CONTRASTIVE_KEYS, "stylegan2": STYLEGAN2_KEYS}
# keys of some modes (None: not given): {mode: its default} for each. CycleGAN's cycle and
# identity weights; the multi-culture networks' and losses' keys; the culture-aware
# discriminator (multi's always; an option of pair and contrastive); the line-structure loss,
# which mode stylegan2 has no input image for. Given in another mode, each is an error that names it
IMAGE_TRANSLATION = ("pair", "multi", "contrastive")
SOME_MODES_DEFAULTS = {"lambda_cycle": dict.fromkeys(("pair", "multi"), 10.0),
                       "lambda_identity": dict.fromkeys(("pair", "multi"), 0.5),
                       "lambda_class": {"multi": 1.0}, "lambda_reference": {"multi": 1.0}, "style_dim": {"multi": 64},
                       "discriminator_features": {"multi": True, "pair": False, "contrastive": False},
                       "lambda_structure": dict.fromkeys(IMAGE_TRANSLATION, 10.0),
                       "structure_scales": dict.fromkeys(IMAGE_TRANSLATION, STRUCTURE_SCALES)}
# every key that not every mode takes -> the modes that take it
KEY_MODES = {**{name: (mode,) for mode, keys in MODE_KEYS.items() for name in keys},
             **{name: tuple(defaults) for name, defaults in SOME_MODES_DEFAULTS.items()}}
# the network's size from scratch (with init_from it is the imported network's): NVlabs' defaults
STYLEGAN2_SIZE_KEYS = ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max")
STYLEGAN2_SIZES = {"z_dim": 512, "w_dim": 512, "mapping_layers": 8, "channel_max": 512}
STYLEGAN2_DEFAULTS = {"r1_interval": 16, "pl_weight": 2.0, "pl_interval": 4, "style_mixing": 0.9, "freeze_d": 0,
                      "augment": "bgc", "ada_target": 0.6, "ada_interval": 4}
AUGMENT_PRESETS = ("none",) + tuple(AUGMENT_PIPE_PRESETS)
# shared keys whose default depends on the mode (None: not given): CycleGAN's, or NVlabs' in mode stylegan2
SHARED_DEFAULTS = {"pool_size": 50, "lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "decay_steps": 5000, "r1_gamma": 0.0}
MODE_SHARED_DEFAULTS = {"contrastive": {"pool_size": 0},
                        "stylegan2": {"pool_size": 0, "lr": 0.0025, "beta1": 0.0, "beta2": 0.99, "decay_steps": 0}}
FREEZABLE = ("encoder", "blocks", "blocks:K", "decoder", "style")


@dataclasses.dataclass
class TrainConfig:
    # mode "pair": CycleGAN between `source` and `target`; "multi": one AdaIN-conditioned
    # generator for all `cultures` (comma-separated; empty: every culture folder); "contrastive":
    # CUT, one generator from `source` to `target` trained with PatchNCE instead of a cycle;
    # "stylegan2": StyleGAN2-ADA learns to draw the culture `target` from noise (always with NVlabs'
    # logistic loss: gan_mode, the cycle, identity and structure weights and the CycleGAN network keys
    # do not apply; images are resized and cropped to `resolution`, not load_size and crop_size)
    mode: str = "pair"
    # data: ROOT/<culture>/<images>
    data_root: str = ""
    source: str = ""
    target: str = ""
    cultures: str = ""
    manifest: str = ""  # a `culturegan data clean` manifest ("" to use every image)
    load_size: int = 286
    crop_size: int = 256
    # per process: under torchrun the global batch is batch_size * WORLD_SIZE (read when the config
    # is made, for the defaults that follow it: make it in the processes torchrun starts)
    batch_size: int = 1
    workers: int = 4
    # models (CycleGAN's resnet_9blocks and basic PatchGAN by default)
    ngf: int = 64
    n_blocks: int = 9
    upsample: str = "transpose"  # pair, contrastive: CycleGAN's "transpose" or "bilinear" (CUT's) upsampling
    ndf: int = 64
    d_layers: int = 3  # PatchGAN depth (CycleGAN's n_layers_D): 3 judges 70-pixel patches, 2 34, 1 16
    style_dim: int | None = None  # multi: the culture style code's length (64)
    # the discriminator adds a learned projection of the culture features of the image it judges
    # (the culture loss's), a judge of the whole image's culture statistics beside the PatchGAN's
    # local one: always in multi (with its culture classes; default true), an option of pair and
    # contrastive (default false: CycleGAN's and CUT's plain PatchGAN)
    discriminator_features: bool | None = None
    # transfer learning: a culturegan checkpoint (run or step directory) or a generator weights
    # file (.safetensors/.pth) for G_AB (pair) or G (multi); G_BA from `init_from_reverse`.
    # stylegan2: an NVlabs snapshot (.pkl: G, G_ema and D) or a converted StyleGAN2 generator file
    init_from: str = ""
    init_from_reverse: str = ""
    init_discriminators: bool = False  # also take the discriminators from an init_from checkpoint
    freeze: str = ""  # generator parts kept fixed, comma-separated: encoder, blocks or blocks:K, decoder, style
    pretrained_lr: float = 1.0  # learning-rate factor of the trainable pretrained generator layers
    # losses
    gan_mode: str = "lsgan"
    # pair and multi (None: not given; the module docstring): 10, and 0.5 times lambda_cycle
    lambda_cycle: float | None = None
    lambda_identity: float | None = None
    lambda_culture: float = 1.0
    culture_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour, texture, line
    # the output keeps the input's line structure at these downsampling factors (0 is off)
    lambda_structure: float | None = None  # 10 (not in mode stylegan2, which has no input image)
    structure_scales: tuple[int, ...] | None = None  # 1, 2, 4
    profile_size: int = 128  # images are resized to this to fit the culture profiles
    r1_gamma: float | None = None  # R1 penalty on real images; 0 is off (the module docstring has the default)
    lambda_class: float | None = None  # multi: the discriminator's auxiliary culture classification (1)
    # multi: the generator's reference projection (culture features -> style code, what `culturegan
    # transfer --reference` steers with) is trained on half the images of every step
    # (objectives.MultiCultureObjective), plus this weight times the mean squared distance of each
    # reference's code to its culture's embedding. 1: that distance starts near 1 (embedding entries are
    # N(0, 1), fresh projections near 0), about the adversarial loss, well below the cycle loss (10 x L1),
    # so it anchors references to their culture's code without overruling what the other losses ask of
    # them. 0: no projection, no references (as runs were before), and transfer refuses references
    lambda_reference: float | None = None  # (1)
    # contrastive (None: not given; see the module docstring for how the preset fills them)
    preset: str | None = None  # "cut" (default) or "fastcut"
    lambda_nce: float | None = None  # PatchNCE weight (cut 1, fastcut 10)
    nce_idt: bool | None = None  # also PatchNCE between target images and G(target) (cut true, fastcut false)
    flip_equivariance: bool | None = None  # randomly flip the input, flip the query features back (fastcut)
    # indices into the generator's nn.Sequential (the output of model[i]); default CUT's layers
    # (CUT_NCE_LAYERS: 0,4,7,10,14) less those past the residual blocks: 0,4,7,10 up to 4 blocks
    nce_layers: tuple[int, ...] | None = None
    nce_patches: int | None = None  # locations sampled per layer and image (256)
    nce_temperature: float | None = None  # (0.07)
    # stylegan2 (None: not given; the defaults are NVlabs', see the module docstring). The network:
    resolution: int | None = None  # images' side, a power of 2 (the imported network's, with init_from)
    z_dim: int | None = None  # the size keys come from init_from's network, or from scratch: z and w 512,
    w_dim: int | None = None  # 8 mapping layers, channels min(channel_base / r, channel_max) at resolution r
    mapping_layers: int | None = None  # with channel_base 32768 from 512 px up, else 16384 (NVlabs' auto),
    channel_base: int | None = None  # and channel_max 512
    channel_max: int | None = None
    # lazy regularisation: R1 (r1_gamma) every r1_interval steps, path length every pl_interval steps
    # (pl_weight 0: off), each in its own optimiser step, scaled by its interval
    r1_interval: int | None = None  # 16
    pl_weight: float | None = None  # 2
    pl_interval: int | None = None  # 4
    style_mixing: float | None = None  # the probability that a batch mixes two ws at a random cutoff (0.9)
    ema_kimg: float | None = None  # G_ema's half-life in thousands of images (10 per 32 of the global batch)
    ema_rampup: float | None = None  # the half-life is at most this times the images seen (0.05 from scratch; 0:
    # no ramp, the default with init_from)
    freeze_d: int | None = None  # Freeze-D: the first N discriminator layers from the image side are fixed (0)
    # ADA: every discriminator input goes through `augment` ("bgc", or "none") with probability p; p is
    # tuned every ada_interval steps towards E[sign(D(real))] = ada_target (0.6), at most 1 per ada_kimg
    # thousand images (500 from scratch, 100 with init_from, as NVlabs), unless augment_p fixes it
    augment: str | None = None
    augment_p: float | None = None
    ada_target: float | None = None
    ada_interval: int | None = None
    ada_kimg: float | None = None
    # optimisation
    steps: int = 10000
    decay_steps: int | None = None  # the last `decay_steps` decay the learning rate linearly to 0 (5000)
    lr: float | None = None  # (these four: see the module docstring)
    beta1: float | None = None
    beta2: float | None = None
    pool_size: int | None = None
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
        if self.mode == "stylegan2":
            self._fill_stylegan2_defaults()
        own = {name: defaults[self.mode] for name, defaults in SOME_MODES_DEFAULTS.items() if self.mode in defaults}
        for name, value in {**SHARED_DEFAULTS, **MODE_SHARED_DEFAULTS.get(self.mode, {}), **own}.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.mode != "contrastive":
            return
        if self.preset is None:
            self.preset = CONTRASTIVE_DEFAULTS["preset"]
        defaults = {**CONTRASTIVE_DEFAULTS, **PRESETS.get(self.preset, {}),
                    "nce_layers": tuple(i for i in CUT_NCE_LAYERS if i < FIRST_BLOCK + self.n_blocks)}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def _fill_stylegan2_defaults(self) -> None:
        """NVlabs' defaults (train.py, --cfg=auto): the network's size from scratch only (with init_from
        it is the imported network's); the ADA keys only where p is tuned (augment_p fixes it)."""
        fine_tuning = bool(self.init_from)
        self.augment = "bgc" if self.augment is None else self.augment
        batch = self.batch_size * distributed.world_size()  # NVlabs' --batch: over all processes
        defaults = {**STYLEGAN2_DEFAULTS, "ema_kimg": 10 * batch / 32,
                    "ema_rampup": 0.0 if fine_tuning else 0.05, "ada_kimg": 100.0 if fine_tuning else 500.0}
        if self.augment == "none" or self.augment_p is not None:
            defaults = {k: v for k, v in defaults.items() if not k.startswith("ada_")}
        if not fine_tuning and self.resolution is not None:
            defaults.update(STYLEGAN2_SIZES, channel_base=32768 if self.resolution >= 512 else 16384)
        if self.r1_gamma is None and self.resolution is not None:
            self.r1_gamma = 0.0002 * self.resolution ** 2 / batch
        if self.lr is None and self.resolution is not None and self.resolution >= 1024:
            self.lr = 0.002
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)

    def validate(self) -> TrainConfig:
        if self.mode not in MODES:  # first: every mode-specific check below depends on it
            raise ValueError(f"invalid setting(s): mode={self.mode!r} (one of {', '.join(map(repr, MODES))})")
        self._fill_mode_defaults()
        if not self.data_root:
            raise ValueError("data_root must be set (the dataset folder, one sub-folder per culture)")
        self._refuse_other_modes_keys()
        two_cultures = self.mode in ("pair", "contrastive")
        if two_cultures and (not self.source or not self.target):
            raise ValueError(f"mode {self.mode!r} needs source and target (the two culture names)")
        if two_cultures and self.source == self.target:
            raise ValueError(f"source and target are the same culture {self.source!r}")
        self.freeze_parts()
        self._check_weights()
        self._check_contrastive()
        self._check_stylegan2()
        self._check_evaluation()
        self._check_compile()
        checks = {"pretrained_lr": self.pretrained_lr >= 0,
                  "sample_every": self.sample_every >= 0, "sample_count": self.sample_count >= 1,
                  "init_from_reverse": not self.init_from_reverse or (self.init_from and self.mode == "pair"),
                  "init_discriminators": not self.init_discriminators or bool(self.init_from),
                  "style_dim": self.style_dim is None or self.style_dim >= 1, "d_layers": self.d_layers >= 1,
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
        if self.structure_scales is not None:
            check_scales(self.structure_scales, self.crop_size)
        return self

    def _check_weights(self) -> None:
        for name in WEIGHTS:
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        weights = self.culture_weights
        if not isinstance(weights, (tuple, list)) or len(weights) != 3 \
                or any(isinstance(w, bool) or not isinstance(w, numbers.Real) for w in weights) \
                or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ValueError(f"culture_weights must be 3 finite numbers >= 0 (colour, texture, line), got "
                             f"{weights!r}")

    def _check_compile(self) -> None:
        """torch.compile's autograd has no double backward ("does not currently support double
        backward", at the first R1 or path-length step): refused here, before any training."""
        if not self.compile:
            return
        if self.mode == "stylegan2":
            raise ValueError("compile=true: not for mode 'stylegan2' (its generator runs by parts, mapping then "
                             "synthesis, outside a compiled forward; R1 and the path length take gradients of "
                             "gradients, which torch.compile does not support)")
        if self.r1_gamma:
            raise ValueError(f"compile=true with r1_gamma={self.r1_gamma}: R1 takes gradients of gradients, which "
                             "torch.compile does not support; set compile=false, or r1_gamma=0")

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
        """The contrastive keys, in mode "contrastive" (whether the generator has every nce_layers
        index, and nce_patches positions at each, is checked when the objective builds it:
        culturegan.training.objectives.ContrastiveObjective)."""
        if self.mode != "contrastive":
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

    def _refuse_other_modes_keys(self) -> None:
        """The keys given (not None) that the run's mode has no use for, named with the modes that
        take them (those of one group of modes together)."""
        refused: dict[tuple[str, ...], list[str]] = {}
        for name, modes in KEY_MODES.items():
            if self.mode not in modes and getattr(self, name) is not None:
                refused.setdefault(modes, []).append(name)
        for modes, names in refused.items():
            raise ValueError(f"{', '.join(names)}: only for mode{'s' if len(modes) > 1 else ''} "
                             f"{', '.join(map(repr, modes))}, this run's mode is {self.mode!r}")

    def _check_stylegan2(self) -> None:
        """The stylegan2 keys, in mode "stylegan2" (freeze_d against the discriminator's depth, and
        resolution against an imported network's, are checked when the objective builds them:
        culturegan.training.objectives.StyleGAN2Objective)."""
        if self.mode != "stylegan2":
            return
        if self.source or not self.target:
            raise ValueError("mode 'stylegan2' learns one culture, `target` (the culture folder's name), from noise; "
                             f"it takes no source (got source={self.source!r}, target={self.target!r})")
        if self.resolution is None or self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ValueError(f"mode 'stylegan2' needs resolution, the images' side: a power of 2 >= 4, got "
                             f"{self.resolution!r}")
        if self.init_from:
            given = [name for name in STYLEGAN2_SIZE_KEYS if getattr(self, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: with init_from the network's size is the imported network's; "
                                 "leave them out")
        for name, given in (("freeze", self.freeze), ("eval_every", self.eval_every)):
            if given:
                raise ValueError(f"{name}: not for mode 'stylegan2' (Freeze-D is freeze_d; the held-out evaluation "
                                 "transfers source images, which a StyleGAN2 generator does not take)")
        if self.augment not in AUGMENT_PRESETS:
            raise ValueError(f"augment {self.augment!r} is not one of {', '.join(AUGMENT_PRESETS)}")
        ada = [name for name in ("ada_target", "ada_interval", "ada_kimg") if getattr(self, name) is not None]
        if ada and (self.augment == "none" or self.augment_p is not None):
            raise ValueError(f"{', '.join(ada)}: ADA tunes p, but " + ("augment is 'none'" if self.augment == "none"
                                                                          else "augment_p fixes it"))
        if self.augment_p is not None and (self.augment == "none" or not 0 <= self.augment_p <= 1):
            raise ValueError(f"augment_p must be in [0, 1] with augment {', '.join(AUGMENT_PIPE_PRESETS)}, got "
                             f"augment_p={self.augment_p!r}, augment={self.augment!r}")
        if self.ada_target is not None and not 0 < self.ada_target < 1:
            raise ValueError(f"ada_target must be in (0, 1), the wanted mean sign of D(real), got {self.ada_target!r}")
        self._check_stylegan2_ranges()

    def _check_stylegan2_ranges(self) -> None:
        checks = {"z_dim": (1, math.inf), "w_dim": (1, math.inf), "mapping_layers": (1, math.inf),
                  "channel_base": (1, math.inf), "channel_max": (1, math.inf), "r1_interval": (1, math.inf),
                  "pl_interval": (1, math.inf), "ada_interval": (1, math.inf), "freeze_d": (0, math.inf),
                  "pl_weight": (0, math.inf), "style_mixing": (0, 1), "ema_rampup": (0, math.inf)}
        for name, (low, high) in checks.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                bound = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        for name in ("ema_kimg", "ada_kimg"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

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
