"""Steering a transfer: the style code a multi-culture generator is given (a target culture's, or
a reference's), and how far toward it the output goes (strength).

A reference, an image or a folder of images, sets the code through the generator's reference
projection of its culture features (culturegan.culture.reference_features, which training's
references go through too). Each image is seen as culture profiles see their images (the shorter
side resized to REFERENCE_SIDE, the centre square), so its texture and line statistics are taken
at one scale whatever the file's size. A folder gives the mean of
its images' codes, not the code of their mean features: every AdaIN scale and shift is affine in
the code, so the mean code applies the mean of what each image asks for, while the projection
is non-linear and the code of mean features is what no image asks for.

Strength s in [0, 1] (0: the input, 1: the plain transfer):

- multi-culture generators move along the code, from the inputs' own culture's (the code whose
  output training's identity loss pulls toward the input) to the target's:
  ``G(x, (1 - s) own + s target) + (1 - s) (x - G(x, own))``. A trained generator reproduces its
  input at its own code only approximately; the second term removes that reconstruction error
  at s = 0 and fades it out as s grows, so the output leaves the input continuously and s = 1
  is exactly G(x, target). For a generator that does reproduce its input it is pure code
  interpolation.
- generators without a culture code (two-culture CycleGAN and CUT) blend pixels:
  ``(1 - s) x + s G(x)``.

s = 0 returns the input itself, without running the generator (the formulas give it too, to
float rounding), and needs no source culture.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path

import torch
from torch import nn

from culturegan.culture import CultureFeatureExtractor, reference_features
from culturegan.data import IMAGE_EXTENSIONS, ImageReadError, is_image_file, open_rgb
from culturegan.data.images import to_tensor
from culturegan.models import MultiCultureGenerator
from culturegan.models.loading import Run

@dataclasses.dataclass(frozen=True)
class Steering:
    """What a transfer does to its inputs (see the module docstring)."""

    target: torch.Tensor | None  # (1, style_dim): the target's code; None for a generator without codes
    own: torch.Tensor | None  # (1, style_dim): the inputs' own culture's code; None: blend pixels instead
    strength: float


def check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 <= strength <= 1:
        raise ValueError(f"strength must be a number in [0, 1] (0: the input unchanged, 1: the full transfer), "
                         f"got {strength!r}")
    return float(strength)


def steer(run: Run, model: nn.Module, target_index: int | None, reference: str | os.PathLike | None,
             strength: float, source_culture: str | None) -> Steering:
    """The Steering of `model` (read from `run`) toward culture `target_index` or `reference`,
    at `strength`, from `source_culture` (the inputs' culture; multi-culture generators)."""
    strength = check_strength(strength)
    if not isinstance(model, MultiCultureGenerator):
        for option, value in (("reference", reference), ("source_culture", source_culture)):
            if value is not None:
                raise ValueError(_no_codes(run, option))
        return Steering(None, None, strength)
    between = 0 < strength < 1  # at 0 (the input itself) and 1 (the plain transfer) the own code plays no part
    if between and source_culture is None:
        raise ValueError(f"strength {strength} on a multi-culture generator interpolates from the inputs' own "
                         f"culture's code: give source_culture (the culture the inputs are in{_one_of(run)})")
    with torch.no_grad():
        target = _target_code(run, model, target_index, reference)
        own = None if source_culture is None else _culture_code(model, _culture_index(run, source_culture))
    return Steering(target, own if between else None, strength)


def _target_code(run: Run, model: MultiCultureGenerator, target_index: int | None,
                 reference: str | os.PathLike | None) -> torch.Tensor:
    if reference is not None:
        return reference_code(model, reference, run.path)
    if target_index is None:
        raise ValueError(f"{run.path} holds a multi-culture generator that does not name its cultures: steer it "
                         "with a reference, or name them with `culturegan convert`")
    return _culture_code(model, target_index)


def _culture_code(model: MultiCultureGenerator, index: int) -> torch.Tensor:
    return model.style_code(cultures=torch.tensor([index], device=model.culture_embedding.weight.device))


def _culture_names(run: Run) -> list[str] | None:
    """A multi-culture generator's culture names, in index order (None: the file names none)."""
    return next(iter(run.directions.values())).get("all")


def _culture_index(run: Run, culture: str) -> int:
    cultures = _culture_names(run)
    if cultures is None:
        raise ValueError(f"{run.path} does not name its cultures, so source_culture {culture!r} means nothing to "
                         "it: name them with `culturegan convert`")
    if culture not in cultures:
        raise ValueError(f"source_culture must be one of {cultures}, got {culture!r}")
    return cultures.index(culture)


def _one_of(run: Run) -> str:
    cultures = _culture_names(run)
    return f", one of {cultures}" if cultures else ""


def _no_codes(run: Run, option: str) -> str:
    runs = {"pair": "a two-culture (CycleGAN) run", "contrastive": "a contrastive (CUT) run"}
    mode = run.meta.get("config", {}).get("mode")
    kind = runs[mode] if mode in runs else f"a {run.card['description']}"  # a file: its card says
    return (f"{option} applies to multi-culture generators only (culturegan train mode 'multi'; a reference also "
            f"needs one built with a reference projection): {run.path} is {kind}, whose generator has no culture "
            "code to set")


def reference_files(reference: str | os.PathLike) -> list[Path]:
    """The reference's image files: the file itself, or a folder's images (recursively)."""
    path = Path(reference)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if is_image_file(p))
        if not files:
            raise ValueError(f"reference folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"reference {path} does not exist")


@torch.no_grad()
def reference_code(model: MultiCultureGenerator, reference: str | os.PathLike, source: Path) -> torch.Tensor:
    """(1, style_dim): the mean code of the reference's images (see the module docstring);
    `source` (the model's file) names the model in errors."""
    if model.reference_projection is None:
        raise ValueError(f"{source}: this multi-culture generator was built without a reference projection "
                         "(feature_dim), so no reference can steer it (culturegan train gives mode 'multi' one "
                         "unless lambda_reference=0; multi runs trained before it did have none): give "
                         "target_culture instead")
    device = model.culture_embedding.weight.device
    extractor = CultureFeatureExtractor().to(device)
    expected, given = model.reference_projection[0].in_features, extractor.feature_dim()
    if expected != given:
        raise ValueError(f"{source}: the reference projection takes {expected} culture features, culturegan's "
                         f"culture features (CultureFeatures.all()) have {given}")
    codes = [model.style_code(reference_features=reference_features(_reference_image(path).to(device), extractor))
             for path in reference_files(reference)]
    return torch.cat(codes).mean(0, keepdim=True)


def _reference_image(path: Path) -> torch.Tensor:
    try:
        image, _ = open_rgb(path)
    except ImageReadError as error:
        raise ImageReadError(f"reference {error}") from error
    return to_tensor(image)[None]
