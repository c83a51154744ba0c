"""Projecting photos into a StyleGAN2 generator's latent space, and rendering the codes found.

    from culturegan.transfer.project import project, project_files, render_codes
    projections = project(generator, targets, steps=1000)      # targets (N, 3, R, R) in [-1, 1]
    project_files("base.pkl", ["photos/"], "codes/")            # `culturegan project`
    render_codes("blended.safetensors", "codes/", "toons/")     # `culturegan transfer --latents`

Both write a new (or empty) folder, all files or none (atomic_directory), after every input is
read and checked.

The search is NVlabs' projector (stylegan2-ada-pytorch projector.py, read and followed): the
code starts at the mean w of W_AVG_SAMPLES mapped z (RandomState(123)), w_std is the RMS distance
of those w from their mean; Adam (0.9, 0.999) at 0.1 with a linear ramp-up over the first 5% of
the steps and a cosine ramp-down over the last 25%; w is jittered by w_std * 0.05 * (1 - t /
0.75)^2 at fraction t of the steps (one draw for every layer, in W+ too); every noise_const
map is re-drawn, optimised with w and renormalised to zero mean and unit RMS after each step,
and regularised (weight 1e5) by the squared lag-1 autocorrelations of each map and of its 2x
average-pooled copies down to 8 x 8.
W (one w for every layer, NVlabs') or W+ (one w per layer, ``w_plus=True``) is searched.

Where NVlabs compares VGG16 features, downloaded, this compares what needs no download (each
term a mean over its elements, so the weights do not depend on the resolution):

- pixels: the squared difference of the images in [-1, 1];
- structure: the squared difference at every level of a binomial low-pass pyramid
  (ops.downsample2d with [1, 3, 3, 1], from R/2 down to 4 px), the layout and the large shapes;
- culture: the squared difference of the culture features (culturegan.culture: colour,
  texture and line statistics), per group, the three groups summed;
- perceptual (optional): a TorchScript file the user supplies, images in [0, 255] area-
  downsampled to at most 256 px as NVlabs' projector gives its vgg16.pt (a module whose forward
  takes resize_images and return_lpips gets NVlabs' resize_images=False, return_lpips=True, so
  that NVlabs' vgg16.pt works as it does there); the sum of squared feature differences, NVlabs'
  distance.

Without a pretrained perceptual network the distance is mostly pixels, which average what the
generator cannot reproduce: projections of real photos come out as blurry approximations, close
in colour and layout, and need a pretrained base model to be more. The culture term (weight 1 by
default) keeps the projection's colour, texture and line statistics near the photo's. Projecting
four procedural culture photos into a random 32-px generator (500 steps; two runs, with other
generators and photos, one of them the tests' small_generator(0) with culture_image("photo",
0..3, 32)), it cut their culture distance by 23-80% in W+ (2-60% in W) for at most 0.5 dB of PSNR.

Photos are read with EXIF orientation applied (alpha composited on white), centre-cropped to a
square of their shorter side and resized to the generator's resolution with Lanczos, as NVlabs'
projector does. Photos are searched several at a time (default_batch_size: one batched pass
of the generator a step; NVlabs runs one photo at a time), each with its own random draws
seeded by `seed` and its own loss terms, so its code depends only on the photo, the generator,
the settings and the seed, not on the other photos (up to the float rounding of batched
arithmetic).

The codes are .safetensors files: ``ws`` (num_ws, w_dim), the w per layer (W: num_ws copies of
one w), and ``noise/<buffer>`` per noise_const map, with metadata: the format, ``space`` (W or
W+), the base model's ``num_ws``, ``w_dim`` and ``img_resolution``, its file name and SHA-256,
the photo's name, the steps, the seed and the final distances. ``render_codes`` renders them with
any generator of that num_ws and w_dim (a blend of the base model, say) and refuses the others.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.func import functional_call

from culturegan import ops
from culturegan._files import atomic_directory
from culturegan._progress import progress_bar
from culturegan.culture import CultureFeatureExtractor, GROUPS
from culturegan.culture.features import MIN_SIDE as CULTURE_MIN_SIDE
from culturegan.data.images import ImageReadError, TileGrid, open_rgb, to_tensor
from culturegan.models.stylegan2 import RESAMPLE_FILTER, Generator
from culturegan.transfer.files import list_inputs
from culturegan.transfer.generate import check_image_channels, load_stylegan2, to_pixels

CODE_FORMAT = "culturegan.projection"
CODE_VERSION = "1"
CODE_SUFFIX = ".safetensors"
WS_KEY = "ws"
NOISE_PREFIX = "noise/"
NOISE_BUFFER = "noise_const"
W_AVG_SAMPLES = 10_000  # NVlabs' projector's
W_AVG_SEED = 123  # NVlabs' projector draws its z for the mean w with RandomState(123)
DEFAULT_SEED = 303  # NVlabs' projector's CLI default
FEATURE_SIDE = 256  # NVlabs area-downsamples larger images to 256 px before VGG16
NOISE_PYRAMID_SIDE = 8  # NVlabs' noise regulariser pools each map down to 8 x 8
LOWPASS_MIN_SIDE = 4  # the coarsest level of the structure pyramid
# Photos searched at once: 8 at 256 px, 2 at 512 and 1 (NVlabs' one photo) at 1024, where one photo's
# search keeps about 2.5 GiB for its backward (config f, the culture term on; measured on the CPU)
BATCH_PIXELS = 8 * 256 * 256
GRID_NAME = "grid"
GRID_PHOTOS = 16  # columns of grid.png: the first 16 photos
GRID_GAP = 2
NOISE_MODES = ("projected", "const")  # the noise a code renders with: its own maps, or the generator's
NUMBER_SETTINGS = ("initial_learning_rate", "lr_rampup_length", "lr_rampdown_length", "initial_noise_factor",
                   "noise_ramp_length", "regularize_noise_weight", "pixel_weight", "structure_weight", "culture_weight",
                   "perceptual_weight")


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
    """The search (NVlabs' projector's defaults) and the weights of the distance's terms."""

    steps: int = 1000
    w_plus: bool = False
    seed: int = DEFAULT_SEED
    initial_learning_rate: float = 0.1
    lr_rampup_length: float = 0.05
    lr_rampdown_length: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp_length: float = 0.75
    regularize_noise_weight: float = 1e5
    pixel_weight: float = 1.0
    structure_weight: float = 1.0
    culture_weight: float = 1.0
    perceptual_weight: float = 1.0

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not isinstance(self.w_plus, bool):
            raise ValueError(f"w_plus must be True or False, got {self.w_plus!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")
        for name in NUMBER_SETTINGS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.initial_learning_rate == 0 or min(self.lr_rampup_length, self.lr_rampdown_length,
                                                  self.noise_ramp_length) == 0:
            raise ValueError("the learning rate and the ramp lengths must be > 0")

    def learning_rate(self, step: int) -> float:
        """NVlabs' schedule: linear ramp-up, constant, cosine ramp-down (0 at step 0)."""
        t = step / self.steps
        ramp = 0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / self.lr_rampdown_length) * math.pi)
        return self.initial_learning_rate * ramp * min(1.0, t / self.lr_rampup_length)

    def w_noise_factor(self, step: int) -> float:
        """The jitter of w at `step`, in units of w_std: quadratic decay to 0 at noise_ramp_length."""
        return self.initial_noise_factor * max(0.0, 1.0 - step / self.steps / self.noise_ramp_length) ** 2


@dataclasses.dataclass
class Projection:
    """One photo's code: ws (num_ws, w_dim), the noise maps by buffer name, the image they render
    (3, R, R) in [-1, 1], and the final (weighted) distance terms."""

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]
    image: torch.Tensor
    distances: dict[str, float]


# ---------------------------------------------------------------------------------- distance

def load_perceptual(path: str | os.PathLike, device: str | torch.device = "cpu") -> Callable:
    """images (N, 3, H, W) in [-1, 1] -> the features of the TorchScript module in `path` (see
    the module docstring), or ValueError for a file that is not one (FileNotFoundError: none).
    A TorchScript file is a program, and loading it runs it: unlike model files, which culturegan
    reads without running anything (models/nvlabs_pickle.py), give only files you trust."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual network {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript, but NVlabs' vgg16.pt is one
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError):  # torch's own message blames a corrupt file
        raise ValueError(f"perceptual network {path} is not a TorchScript module (a file torch.jit.save wrote; "
                         "a model or state_dict saved with torch.save is not one)") from None
    for parameter in module.parameters():  # the distance differentiates images, never the network
        parameter.requires_grad_(False)
    arguments = {argument.name for argument in module.forward.schema.arguments}
    options = {"resize_images": False, "return_lpips": True} if {"resize_images", "return_lpips"} <= arguments else {}

    def features(images: torch.Tensor) -> torch.Tensor:
        output = module(_at_most(FEATURE_SIDE, (images + 1) * 127.5), **options)
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            raise ValueError(f"perceptual network {path} returned {type(output).__name__}, not a floating-point "
                             "tensor of features")
        return output

    return features


def _at_most(side: int, images: torch.Tensor) -> torch.Tensor:
    return F.interpolate(images, size=(side, side), mode="area") if images.shape[-1] > side else images


def _lowpass_pyramid(images: torch.Tensor, lowpass: torch.Tensor) -> list[torch.Tensor]:
    """The binomial pyramid's levels below full resolution, from R/2 to LOWPASS_MIN_SIDE."""
    levels = []
    while images.shape[-1] > LOWPASS_MIN_SIDE:
        images = ops.downsample2d(images, lowpass)
        levels.append(images)
    return levels


class ProjectionDistance:
    """The distance of images (N, 3, R, R) to their targets, term by term, weighted, per image:
    each term (N,), each image's a mean over its elements (a sum for the perceptual features)."""

    def __init__(self, target: torch.Tensor, settings: ProjectionSettings, perceptual: Callable | None = None):
        self.target = target
        self.settings = settings
        self.lowpass = ops.setup_filter(RESAMPLE_FILTER, device=target.device)
        self.culture = CultureFeatureExtractor().to(target.device) if settings.culture_weight > 0 else None
        self.perceptual = perceptual if settings.perceptual_weight > 0 else None
        with torch.no_grad():
            self.target_pyramid = _lowpass_pyramid(target, self.lowpass)
            self.target_culture = None if self.culture is None else self.culture(target).groups()
            self.target_features = None if self.perceptual is None else self.perceptual(target)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        settings = self.settings
        terms = {"pixels": settings.pixel_weight * _per_image_mean(images - self.target)}
        if settings.structure_weight > 0:
            levels = zip(_lowpass_pyramid(images, self.lowpass), self.target_pyramid)
            terms["structure"] = settings.structure_weight * sum(_per_image_mean(a - b) for a, b in levels)
        if self.culture is not None:
            groups = self.culture(images).groups()
            terms["culture"] = settings.culture_weight * sum(_per_image_mean(groups[g] - self.target_culture[g])
                                                             for g in GROUPS)
        if self.perceptual is not None:
            difference = self.perceptual(images) - self.target_features
            terms["perceptual"] = settings.perceptual_weight * difference.square().flatten(1).sum(1)
        return terms


def _per_image_mean(difference: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared difference of each image's elements."""
    return difference.square().flatten(1).mean(1)


def noise_regularisation(noise_maps: Iterable[torch.Tensor]) -> torch.Tensor:
    """NVlabs' noise regulariser: the squared mean lag-1 products along x and y of each map and of
    its 2x average-pooled copies down to NOISE_PYRAMID_SIDE, summed; maps (H, W), or (N, 1, H, W)
    for N images (each image's maps regularised alone, the N sums summed)."""
    total = 0.0
    for noise in noise_maps:
        noise = noise.view(-1, 1, *noise.shape[-2:])
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square().sum()
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square().sum()
            if noise.shape[2] <= NOISE_PYRAMID_SIDE:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


# -------------------------------------------------------------------------------- projection

def noise_buffers(generator: Generator) -> dict[str, torch.Tensor]:
    """The synthesis network's noise_const buffers by name (``b8.conv0.noise_const``, ...)."""
    return {name: buffer for name, buffer in generator.synthesis.named_buffers() if name.endswith(NOISE_BUFFER)}


def synthesize(generator: Generator, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Images (N, C, R, R) of ws (N, num_ws, w_dim), with the noise maps `noise` in place of the
    generator's noise_const (None: its own), noise mode 'const'; the generator is not changed and
    gets no gradients."""
    tensors = {name: parameter.detach() for name, parameter in generator.synthesis.named_parameters()}
    return functional_call(generator.synthesis, {**tensors, **(noise or {})}, (ws,), {"noise_mode": "const"})


@torch.no_grad()
def w_statistics(generator: Generator) -> tuple[torch.Tensor, float]:
    """(the mean w (w_dim,), w_std) of W_AVG_SAMPLES mapped z, as NVlabs' projector (its own
    samples, not the w_avg buffer; unconditional generators only)."""
    device = next(generator.parameters()).device
    z = torch.from_numpy(np.random.RandomState(W_AVG_SEED).randn(W_AVG_SAMPLES, generator.z_dim)).to(device)
    w = generator.mapping(z.to(torch.float32), None, skip_w_avg_update=True)[:, 0]
    w_avg = w.mean(dim=0)
    return w_avg, float((w - w_avg).square().sum().div(W_AVG_SAMPLES).sqrt())


def default_batch_size(resolution: int) -> int:
    """Photos searched at once by default at `resolution` (BATCH_PIXELS: 8 at 256 px, 1 at 1024)."""
    return max(1, BATCH_PIXELS // resolution ** 2)


def check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1, got {batch_size!r}")


def project(generator: Generator, target_images: torch.Tensor, steps: int = 1000, w_plus: bool = False,
            perceptual: Callable | None = None, progress: bool = True, batch_size: int | None = None,
            **settings) -> list[Projection]:
    """The codes of target_images (N, 3, R, R) in [-1, 1], R the generator's resolution (see the
    module docstring); `perceptual` is load_perceptual's function or None; `settings` are
    ProjectionSettings' other fields (seed, weights, schedule). Up to `batch_size` photos
    (default_batch_size when None) are searched at once: each has its own code, noise maps,
    random draws and loss terms, so a batch changes only the float rounding of its photos'
    codes, not their search; it costs a batch's memory."""
    settings = ProjectionSettings(steps=steps, w_plus=w_plus, **settings)
    check_projectable(generator)
    batch_size = default_batch_size(generator.img_resolution) if batch_size is None else batch_size
    check_batch_size(batch_size)
    size = (3, generator.img_resolution, generator.img_resolution)
    if not isinstance(target_images, torch.Tensor) or target_images.dim() != 4 or target_images.shape[1:] != size:
        shape = tuple(target_images.shape) if isinstance(target_images, torch.Tensor) else type(target_images).__name__
        raise ValueError(f"target images must be a tensor (N, {', '.join(map(str, size))}) for this generator, "
                         f"got {shape}")
    if settings.culture_weight > 0 and generator.img_resolution < CULTURE_MIN_SIDE:
        raise ValueError(f"the culture term needs images of at least {CULTURE_MIN_SIDE} px, this generator makes "
                         f"{generator.img_resolution} px: set the culture weight to 0")
    device = next(generator.parameters()).device
    w_avg, w_std = w_statistics(generator)
    bar = progress_bar(total=settings.steps * len(target_images), enabled=progress, unit="step", desc="projecting")
    with bar:
        return [projection for start in range(0, len(target_images), batch_size)
                for projection in _project_batch(generator, target_images[start:start + batch_size].to(
                    device, torch.float32), w_avg, w_std, settings, perceptual, bar)]


def check_projectable(generator) -> None:
    if not isinstance(generator, Generator):
        raise ValueError(f"projection needs a StyleGAN2 generator (with a mapping network), got a "
                         f"{type(generator).__name__}")
    if generator.c_dim > 0:
        raise ValueError(f"this generator is conditional on {generator.c_dim} classes; projection takes "
                         "unconditional generators")
    if generator.img_channels != 3:
        raise ValueError(f"this generator makes {generator.img_channels}-channel images; projection takes RGB "
                         "generators (photos and the culture features are RGB)")


def _project_batch(generator: Generator, targets: torch.Tensor, w_avg: torch.Tensor, w_std: float,
                   settings: ProjectionSettings, perceptual: Callable | None, bar) -> list[Projection]:
    """The codes of targets (B, 3, R, R), searched together, each as it would be alone: its own
    random stream seeded by settings.seed, its own terms (their sum is minimised; Adam's steps are
    per element), its noise maps renormalised alone."""
    device, count = targets.device, len(targets)
    randoms = [torch.Generator(device=device).manual_seed(settings.seed) for _ in range(count)]

    def draw(shape) -> torch.Tensor:  # one draw per photo from its own stream, stacked
        return torch.stack([torch.randn(shape, generator=random, device=device) for random in randoms])

    distance = ProjectionDistance(targets, settings, perceptual)
    noise = {name: draw(buffer.shape)[:, None].requires_grad_() for name, buffer in noise_buffers(generator).items()}
    w_opt = w_avg.expand(count, generator.num_ws if settings.w_plus else 1, -1).clone().requires_grad_()
    optimizer = torch.optim.Adam([w_opt, *noise.values()], lr=settings.initial_learning_rate, betas=(0.9, 0.999))
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate(step)
        # One jitter for every layer, in W+ too: independent jitter per layer would shake W+ harder than W.
        jitter = draw(w_avg.shape)[:, None] * (w_std * settings.w_noise_factor(step))
        images = synthesize(generator, (w_opt + jitter).expand(-1, generator.num_ws, -1), noise)
        loss = (sum(distance(images).values()).sum()
                + settings.regularize_noise_weight * noise_regularisation(noise.values()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # NVlabs: every map back to zero mean and unit RMS, each photo's alone
            for buffer in noise.values():
                buffer -= buffer.mean(dim=(1, 2, 3), keepdim=True)
                buffer *= buffer.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        bar.update(count)
    ws = w_opt.detach().expand(-1, generator.num_ws, -1)
    noise = {name: buffer.detach() for name, buffer in noise.items()}
    with torch.no_grad():
        images = synthesize(generator, ws, noise)
        terms = distance(images)
    # off the device: the photos' results are kept until all are written
    return [Projection(ws[i].cpu(), {name: buffer[i, 0].cpu() for name, buffer in noise.items()}, images[i].cpu(),
                       {name: float(value[i]) for name, value in terms.items()}) for i in range(count)]


# ------------------------------------------------------------------------------------- files

def check_new_folder(out: Path) -> None:
    """`out` is new or empty. (Its images are named after the photos, so a folder of earlier results
    cannot be told from a folder of photos, which replacing it would delete.)"""
    if out.is_symlink():
        raise ValueError(f"output {out} is a symbolic link: give the folder itself")
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise ValueError(f"output folder {out} is not empty: choose a new or empty one")


def read_photo(path: Path, resolution: int) -> Image.Image:
    """The photo centre-cropped to a square and resized to resolution (Lanczos), as NVlabs'."""
    try:
        image, _ = open_rgb(path)
    except ImageReadError as error:
        raise ValueError(str(error)) from None
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.LANCZOS)


def list_photos(inputs: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """The image files of `inputs` (files, and folders searched recursively) by the name their
    outputs get: the file name's stem, or, where two photos share one (photo/1.png and
    ukiyoe/1.png), every photo's path below the folder they all lie in, joined by "_"
    (photo_1, ukiyoe_1)."""
    photos = [path for source in inputs for path in list_inputs(source)[1]]
    if not photos:
        raise ValueError("no input photos given")
    names = [path.stem for path in photos]
    if len(set(names)) < len(names):
        common = Path(os.path.commonpath([path.resolve().parent for path in photos]))
        names = ["_".join(path.resolve().relative_to(common).with_suffix("").parts) for path in photos]
    named: dict[str, Path] = {}
    folded: dict[str, Path] = {}  # by casefolded name: one file on case-insensitive file systems
    for name, path in zip(names, photos):
        if name.casefold() in folded:
            raise ValueError(f"photos {folded[name.casefold()]} and {path} would both be written as {name!r} "
                             "(or names differing only in case): rename one")
        if name.casefold() == GRID_NAME:
            raise ValueError(f"photo {path} would be written as {GRID_NAME}.png, the grid's name: rename it")
        named[name] = folded[name.casefold()] = path
    return named


def project_files(checkpoint: str | os.PathLike, inputs: Iterable[str | os.PathLike], out: str | os.PathLike,
                  steps: int = 1000, w_plus: bool = False, perceptual: str | os.PathLike | None = None,
                  seed: int = DEFAULT_SEED, device: str | None = None, progress: bool = True,
                  batch_size: int | None = None, **settings) -> list[Path]:
    """Projects every photo of `inputs` with the generator in `checkpoint` and writes, into the
    folder `out` (all or none), per photo {name}.safetensors (the code) and {name}.png (its
    image), named as list_photos says, and grid.png (the first GRID_PHOTOS targets above their
    projections); returns the code files. Everything is checked, and every photo read, before
    the search starts."""
    settings = ProjectionSettings(steps=steps, w_plus=w_plus, seed=seed, **settings)
    if batch_size is not None:
        check_batch_size(batch_size)
    out = Path(out)
    check_new_folder(out)
    photos = list_photos([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)
    generator, card = load_stylegan2(checkpoint, device, "project takes StyleGAN2 generators")
    check_projectable(generator)
    perceptual = None if perceptual is None else load_perceptual(perceptual, next(generator.parameters()).device)
    targets = [read_photo(path, generator.img_resolution) for path in photos.values()]
    projections = project(generator, torch.stack([to_tensor(target) for target in targets]),
                          perceptual=perceptual, progress=progress, batch_size=batch_size,
                          **dataclasses.asdict(settings))
    grid = TileGrid(2 * min(len(photos), GRID_PHOTOS), min(len(photos), GRID_PHOTOS),
                    (generator.img_resolution, generator.img_resolution, 3), gap=GRID_GAP)
    with atomic_directory(out, only_if_empty=True) as folder:
        for index, ((name, path), target, projection) in enumerate(zip(photos.items(), targets, projections)):
            pixels = to_pixels(projection.image[None])
            save_file(_code_tensors(projection), str(folder / f"{name}{CODE_SUFFIX}"),
                      metadata=_code_metadata(generator, card, path, settings, projection))
            Image.fromarray(pixels).save(folder / f"{name}.png")
            if index < grid.columns:
                grid.paste(index, np.asarray(target))
                grid.paste(grid.columns + index, pixels)
        Image.fromarray(grid.pixels).save(folder / f"{GRID_NAME}.png")
    return [out / f"{name}{CODE_SUFFIX}" for name in photos]


def _code_tensors(projection: Projection) -> dict[str, torch.Tensor]:
    noise = {NOISE_PREFIX + name: buffer.cpu().contiguous() for name, buffer in projection.noise.items()}
    return {WS_KEY: projection.ws.cpu().contiguous(), **noise}


def _code_metadata(generator: Generator, card: dict, photo: Path, settings: ProjectionSettings,
                   projection: Projection) -> dict[str, str]:
    return {"format": CODE_FORMAT, "version": CODE_VERSION, "space": "W+" if settings.w_plus else "W",
            "num_ws": str(generator.num_ws), "w_dim": str(generator.w_dim),
            "img_resolution": str(generator.img_resolution), "base_model": card["source_file"]["name"],
            "base_model_sha256": card["source_file"]["sha256"], "photo": photo.name, "steps": str(settings.steps),
            "seed": str(settings.seed), "distances": json.dumps(projection.distances)}


@dataclasses.dataclass
class Code:
    """A code read back: ws (num_ws, w_dim), noise maps by buffer name, the file's metadata."""

    ws: torch.Tensor
    noise: dict[str, torch.Tensor]
    metadata: dict[str, str]


def read_code(path: str | os.PathLike) -> Code:
    """A code file project_files wrote, or ValueError naming what is wrong with it."""
    path = Path(path)
    try:
        with safe_open(str(path), "pt") as file:
            metadata = file.metadata() or {}
            # the header first: another .safetensors file in the folder is refused unread
            if metadata.get("format") != CODE_FORMAT or WS_KEY not in file.keys():
                raise ValueError(f"{path} is not a projection code (a .safetensors file `culturegan project` wrote)")
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable .safetensors file: {error}") from None
    if metadata.get("version") != CODE_VERSION:
        raise ValueError(f"{path}: projection code version {metadata.get('version')}, expected {CODE_VERSION}")
    for key, tensor in tensors.items():  # NaN or inf would render garbage images without an error
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: {key} must hold finite floating-point numbers ({tensor.dtype})")
    ws = tensors.pop(WS_KEY)
    try:
        declared = (int(metadata["num_ws"]), int(metadata["w_dim"]))
    except (KeyError, ValueError):
        raise ValueError(f"{path}: the metadata lacks the base model's num_ws and w_dim") from None
    if tuple(ws.shape) != declared:
        raise ValueError(f"{path}: ws has shape {tuple(ws.shape)}, but its metadata says (num_ws, w_dim) = {declared}")
    noise = {key[len(NOISE_PREFIX):]: tensor for key, tensor in tensors.items() if key.startswith(NOISE_PREFIX)}
    return Code(ws, noise, metadata)


def check_code(code: Code, generator: Generator, path: Path) -> None:
    """The generator renders the code: same num_ws and w_dim (and noise maps, when the code's are used)."""
    if tuple(code.ws.shape) != (generator.num_ws, generator.w_dim):
        raise ValueError(f"{path} is a code of a generator with num_ws {code.ws.shape[0]} and w_dim "
                         f"{code.ws.shape[1]} ({code.metadata.get('img_resolution')} px); this generator has num_ws "
                         f"{generator.num_ws} and w_dim {generator.w_dim} ({generator.img_resolution} px)")


def _code_noise(code: Code, generator: Generator, path: Path) -> dict[str, torch.Tensor]:
    own = noise_buffers(generator)
    shapes = {name: tuple(buffer.shape) for name, buffer in own.items()}
    if {name: tuple(map_.shape) for name, map_ in code.noise.items()} != shapes:
        raise ValueError(f"{path}'s noise maps do not fit this generator's noise inputs ({len(code.noise)} maps "
                         f"against {len(own)}): render it with noise 'const'")
    return {name: map_.to(own[name].dtype) for name, map_ in code.noise.items()}


def render_codes(checkpoint: str | os.PathLike, latents: str | os.PathLike, out: str | os.PathLike,
                 noise: str = "projected", device: str | None = None, progress: bool = True) -> list[Path]:
    """Renders every code in the folder `latents` with the generator in `checkpoint` into the
    folder `out` (all or none), {stem}.png each; noise 'projected' uses the code's noise maps
    (the projection's image, with the base model), 'const' the generator's own (NVlabs' way);
    every code is read and checked before anything is written."""
    if noise not in NOISE_MODES:
        raise ValueError(f"latent noise {noise!r} is not one of {', '.join(NOISE_MODES)}")
    latents, out = Path(latents), Path(out)
    if not latents.exists():
        raise FileNotFoundError(f"latents folder {latents} does not exist")
    if not latents.is_dir():
        raise ValueError(f"latents {latents} is a file; give the folder `culturegan project` wrote")
    check_new_folder(out)
    paths = sorted(latents.glob(f"*{CODE_SUFFIX}"))
    if not paths:
        raise ValueError(f"{latents} holds no projection codes (*{CODE_SUFFIX})")
    generator, _ = load_stylegan2(checkpoint, device, "transfer --latents takes StyleGAN2 generators")
    check_image_channels(generator, checkpoint)
    codes = [read_code(path) for path in paths]
    device = next(generator.parameters()).device
    for path, code in zip(paths, codes):
        check_code(code, generator, path)
    maps = [_code_noise(code, generator, path) if noise == "projected" else None for path, code in zip(paths, codes)]
    with atomic_directory(out, only_if_empty=True) as folder, torch.no_grad():
        for path, code, code_noise in progress_bar(list(zip(paths, codes, maps)), enabled=progress, unit="image"):
            on_device = None if code_noise is None else {name: map_.to(device) for name, map_ in code_noise.items()}
            image = synthesize(generator, code.ws[None].to(device), on_device)
            Image.fromarray(to_pixels(image)).save(folder / f"{path.stem}.png")
    return [out / f"{path.stem}.png" for path in paths]


__all__ = ["Code", "Projection", "ProjectionDistance", "ProjectionSettings", "check_batch_size", "check_code",
           "default_batch_size", "list_photos", "load_perceptual", "noise_buffers", "noise_regularisation", "project",
           "project_files", "read_code", "read_photo", "render_codes", "synthesize", "w_statistics"]
