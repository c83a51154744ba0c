"""Transfer through a StyleGAN2 latent space, toonify's way: each photo is projected into a base
model (culturegan.transfer.project: NVlabs' projector search with an offline distance) and its
code is rendered by the culture model, a copy of the base fine-tuned on the culture (`mode =
"stylegan2"`) or a `culturegan blend` of the two. `culturegan evaluate` transfers this way for
StyleGAN2 runs and files, as `culturegan project` then `culturegan transfer --latents` do.

    transfer = LatentTransfer("runs/ukiyoe", steps=1000)       # base: the run's init_from
    result = transfer.run(photos)                               # (N, 3, H, W) in [-1, 1]
    result.outputs, result.projections                          # the culture's, the base's renderings

The base is the model the culture model was fine-tuned from: by default a stylegan2 run's
init_from; for a `culturegan blend` file, the one of its two models that makes the photos'
culture (else its structure model, whose W space the blend shares).
A run trained from scratch, or another model file without `base`, is its own base: the output
is then the image of the culture model nearest the photo. An output can show its photo
no better than the projection does, so the projections (the base model's renderings of the
codes) are returned with the outputs: a failed projection can be told from a culture model that
lost the content.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from culturegan.models import checkpoints, loading
from culturegan.models.stylegan2 import Generator
from culturegan.transfer.generate import load_stylegan2
from culturegan.transfer.project import (NOISE_MODES, Projection, ProjectionSettings, check_batch_size,
                                         check_projectable, default_batch_size, project, synthesize)

REFUSAL = ("latent transfer takes StyleGAN2 generators (a stylegan2 run, an NVlabs snapshot, a converted or "
           "blended file)")


@dataclasses.dataclass
class LatentResult:
    """Photos (N, 3, H, W) transferred: the culture model's renderings of their codes, the base
    model's (the projections), both at the photos' size in [-1, 1], and each projection's final
    distance terms."""

    outputs: torch.Tensor
    projections: torch.Tensor
    distances: list[dict[str, float]]


def default_base(checkpoint: str | os.PathLike, source: str | None = None) -> Path:
    """The model photos (of culture `source`, when known) are projected into for `checkpoint`: a
    stylegan2 run's init_from, a blended file's source model (_blend_base), or the checkpoint
    itself (a run from scratch, another model file)."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    directory = checkpoints.checkpoint_directory(path)
    if directory is None:  # a model file
        return _blend_base(path, source)
    # the run's state.json only: its tensors are read once, by whoever loads the model
    meta = checkpoints.read_meta(directory)
    init_from = meta.get("config", {}).get("init_from", "")
    if not init_from:
        return path
    # where it was when the run trained, else as the config gives it (relative: to here, as after
    # moving the project along with the run)
    places = list(dict.fromkeys(Path(p) for p in (meta.get("init_from_path", ""), init_from) if p))
    found = next((place for place in places if place.exists()), None)
    if found is None:
        raise FileNotFoundError(f"{path} was fine-tuned from {' or '.join(map(str, places))}, which does not exist "
                                "(here): give the base model to project photos into")
    return found


BLEND_ROLES = ("structure", "rendering")


def model_sha256(place: Path) -> str | None:
    """The SHA-256 of the weights at `place` (a checkpoint: its state file; a model file: the
    file), as a blend records its models; None when there are none."""
    weights = place / checkpoints.TENSORS_FILE if place.is_dir() else place
    return loading.file_sha256(weights) if weights.is_file() else None


def blend_cultures(blend: dict, role: str) -> set[str]:
    """The cultures a blend's `role` model makes, as its card named them (empty: not named)."""
    cultures = blend[role].get("cultures", {})
    return set(cultures["all"]) if "all" in cultures else {cultures["target"]} if "target" in cultures else set()


def _blend_base(path: Path, source: str | None) -> Path:
    """A blended file's base: of its two models (fine-tunes of one base, as blend requires, so a
    code found in either renders with the blend), the one whose culture is `source`, else the
    structure model, whose mapping the blend shares; each where `culturegan blend` found it.
    Projected into the blend itself, a photo would come back as its own reconstruction, not a
    transfer. Any other model file is its own base."""
    blend = (loading.embedded_card(path) or {}).get("blend")
    if blend is None:
        return path
    roles = [role for role in BLEND_ROLES if source is not None and blend_cultures(blend, role) == {source}]
    role = (roles or ["structure"])[0]
    model, recorded = blend[role], blend[role].get("path")
    if recorded is None:  # a blend written before blend recorded its models' places
        problem = "whose place it does not record"
    elif not Path(recorded).exists():
        problem = f"which is no longer at {recorded}"
    elif model_sha256(Path(recorded)) == model.get("path_sha256"):
        return Path(recorded)
    else:
        problem = f"and {recorded} is no longer it (another SHA-256)"
    raise FileNotFoundError(f"{path} is a layer-swapped blend: photos are projected into its {role} model "
                            f"{model['name']} (SHA-256 {model['sha256']}), {problem}; give that model as the "
                            "base (evaluate's --base, LatentTransfer's base)")


class LatentTransfer:
    """A culture model and its base, loaded once; run() transfers photos.

    Args:
        checkpoint: the culture model (a stylegan2 run or checkpoint: its G_ema; a snapshot; a
            converted or blended StyleGAN2 file).
        base: the model to project into (default_base(checkpoint, source) when None); it must
            have the culture model's num_ws, w_dim and resolution.
        device: "cuda", "cpu" or None (CUDA when available).
        noise: "projected" renders with each code's own noise maps (the base's fit to the photo),
            "const" with the culture model's noise_const, as render_codes.
        progress: a bar over the projection steps.
        batch_size: photos searched (and rendered) at once (None: project's default for the
            resolution).
        source: the photos' culture, which picks a blend's base (default_base).
        settings: ProjectionSettings' fields (steps, w_plus, seed, the distance's weights).
    """

    def __init__(self, checkpoint: str | os.PathLike, base: str | os.PathLike | None = None,
                 device: str | None = None, noise: str = "projected", progress: bool = False,
                 batch_size: int | None = None, source: str | None = None, **settings):
        self.settings = ProjectionSettings(**settings)
        if batch_size is not None:
            check_batch_size(batch_size)
        if noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, got {noise!r}")
        self.model, self.card = load_stylegan2(checkpoint, device, REFUSAL)
        self.base_path = Path(base) if base is not None else default_base(checkpoint, source)
        self.base = self.model if self.base_path == Path(checkpoint) else load_stylegan2(
            self.base_path, str(self.device), f"the base model: {REFUSAL}")[0]
        check_projectable(self.base)
        check_projectable(self.model)
        _check_same_latent_space(self.base, self.model, self.base_path, checkpoint)
        self.noise, self.progress = noise, progress
        self.batch_size = default_batch_size(self.resolution) if batch_size is None else batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def resolution(self) -> int:
        return self.model.img_resolution

    def run(self, photos: torch.Tensor) -> LatentResult:
        """Photos (N, 3, H, W) in [-1, 1], square, resized to the models' resolution for the search
        and back to H for the results."""
        if not isinstance(photos, torch.Tensor) or photos.dim() != 4 or photos.shape[1] != 3:
            raise ValueError(f"photos must be a tensor (N, 3, H, W), got {getattr(photos, 'shape', type(photos))}")
        if photos.shape[-1] != photos.shape[-2]:
            raise ValueError(f"photos must be square (the models' images are), got {tuple(photos.shape[-2:])}")
        side = photos.shape[-1]
        targets = resized(photos.to(self.device, torch.float32), self.resolution)
        found = project(self.base, targets, progress=self.progress, batch_size=self.batch_size,
                        **dataclasses.asdict(self.settings))
        outputs = torch.cat([self._render(found[start:start + self.batch_size])
                             for start in range(0, len(found), self.batch_size)])
        projections = torch.stack([projection.image for projection in found]).float()
        return LatentResult(resized(outputs, side).clamp(-1, 1), resized(projections, side).clamp(-1, 1),
                            [projection.distances for projection in found])

    @torch.no_grad()
    def _render(self, projections: list[Projection]) -> torch.Tensor:
        """The culture model's images of the projections' codes (and noise maps, unless 'const')."""
        ws = torch.stack([projection.ws for projection in projections]).to(self.device)
        noise = None if self.noise == "const" else {
            name: torch.stack([projection.noise[name] for projection in projections])[:, None].to(self.device)
            for name in projections[0].noise}
        return synthesize(self.model, ws, noise).float().cpu()

    def __call__(self, photos: torch.Tensor) -> torch.Tensor:
        """The outputs of run(photos)."""
        return self.run(photos).outputs


def _check_same_latent_space(base: Generator, model: Generator, base_path: Path, checkpoint) -> None:
    """A code of `base` means something to `model` only when both have one num_ws, w_dim and
    resolution (the model fine-tuned from the base, or a blend of it)."""
    shapes = [(g.num_ws, g.w_dim, g.img_resolution) for g in (base, model)]
    if shapes[0] != shapes[1]:
        raise ValueError(f"the base model {base_path} (num_ws, w_dim, resolution {shapes[0]}) and {checkpoint} "
                         f"({shapes[1]}) do not share a latent space: give the model it was fine-tuned or blended from")


def resized(images: torch.Tensor, side: int) -> torch.Tensor:
    """Square images (N, C, H, H) at side x side (bicubic, antialiased when shrinking); as they are at H."""
    if images.shape[-1] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bicubic", antialias=True, align_corners=False)


__all__ = ["BLEND_ROLES", "LatentResult", "LatentTransfer", "blend_cultures", "default_base", "model_sha256",
           "resized"]
