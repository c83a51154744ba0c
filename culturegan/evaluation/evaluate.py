"""`culturegan evaluate`: transfer a culture's held-out images with a trained model and measure
how culturally consistent the results are (culturegan.metrics), judged both with the culture
features the culture loss optimises and with judge features it never sees.

The culture classifiers are fitted on a reference set (the training folders; by default the
evaluated folders themselves), every culture folder of it taking part, so "recognisably of the
target culture" means closer to the target than to the source and to every other culture.

StyleGAN2 models transfer by projection (culturegan.transfer.latent_transfer): each photo's code
in the base model, rendered by the culture model. Their report adds the projections (the base
model's renderings) and how near they come to the photos, the ceiling of the content measures.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch

from culturegan import metrics
from culturegan._progress import progress_bar
from culturegan.data import find_cultures, load_images
from culturegan.evaluation.verdicts import verdicts
from culturegan.metrics.spectrum import PATCH
from culturegan.models.loading import STYLEGAN2_GAN_MODE, Run, is_snapshot, load_run, snapshot_discriminator
from culturegan.models.stylegan2 import Discriminator as StyleGAN2Discriminator
from culturegan.transfer import Stylizer
from culturegan.transfer.latent_transfer import BLEND_ROLES, LatentTransfer, blend_cultures, default_base, resized


DEFAULT_SIZE = 128  # image-to-image generators; StyleGAN2 models are evaluated at their resolution
MIN_SIZE = PATCH  # the periodic-artifact measure's patch, the largest any measure needs
JUDGE_BATCH = 16  # images a discriminator judges at once


@dataclasses.dataclass
class Evaluation:
    """What evaluate() measured: `results` (all numbers, JSON-ready) and the images behind them:
    the cycle's reconstructions (two-way runs) or the projections into the base model (StyleGAN2)."""

    results: dict
    inputs: torch.Tensor
    outputs: torch.Tensor
    reconstructions: torch.Tensor | None
    projections: torch.Tensor | None = None


@dataclasses.dataclass
class _Transferred:
    """One checkpoint's transfer of the inputs, whichever way it transfers."""

    inputs: torch.Tensor
    outputs: torch.Tensor
    device: torch.device
    description: str
    back: Callable[[torch.Tensor], torch.Tensor] | None = None  # outputs back to the source, for the cycle
    reconstructions: torch.Tensor | None = None  # back(outputs)
    projections: torch.Tensor | None = None  # the base model's renderings of the photos' codes
    projection: dict | None = None  # their measures and settings


def _transfer(stylizer: Stylizer | None, images: torch.Tensor, batch_size: int = 16, progress: bool = False,
              desc: str = "transferring") -> torch.Tensor | None:
    """`images` through the stylizer in batches, back on the CPU; `progress`: a bar labelled `desc`."""
    if stylizer is None:
        return None
    batches = []
    with progress_bar(total=len(images), enabled=progress, desc=desc, unit="image", leave=False) as bar:
        for start in range(0, len(images), batch_size):
            batches.append(stylizer(images[start:start + batch_size]).cpu())
            bar.update(len(batches[-1]))
    return torch.cat(batches)


def _through_generator(run: Run, data: Path, source: str, target: str, size: int | None, count: int | None,
                       device: str | None, progress: bool) -> _Transferred:
    """An image-to-image generator's transfer, and its way back where the run has one."""
    stylizer = Stylizer(run, target, device=device)
    try:
        back = Stylizer(run, source, device=device)
    except ValueError:  # a single-direction file: no cycle to measure
        back = None
    inputs = load_images(data, source, size or DEFAULT_SIZE, count)
    outputs = _transfer(stylizer, inputs, progress=progress, desc=f"transferring {source} to {target}")
    reconstructions = _transfer(back, outputs, progress=progress, desc=f"transferring back to {source}")
    # the cycle check transfers perturbed outputs back once per perturbation (a bar each)
    back_again = None if back is None else functools.partial(_transfer, back, progress=progress,
                                                             desc=f"perturbed, back to {source}")
    return _Transferred(inputs, outputs, stylizer.device, stylizer.card.get("description", ""), back_again,
                        reconstructions)


def _through_latent_space(checkpoint: Path, data: Path, source: str, size: int | None, count: int | None,
                          device: str | None, progress: bool, projection: dict) -> _Transferred:
    """A StyleGAN2 model's transfer: photos projected into the base model, rendered by this one
    (culturegan.transfer.latent_transfer); `projection`: base, steps, w_plus, seed, batch_size."""
    settings = {key: value for key, value in projection.items() if key != "base"}
    latent = LatentTransfer(checkpoint, projection.get("base"), device, progress=progress, source=source, **settings)
    inputs = load_images(data, source, size or latent.resolution, count)
    found = latent.run(inputs)
    measures = {"base": str(latent.base_path), "steps": latent.settings.steps,
                "space": "W+" if latent.settings.w_plus else "W", "seed": latent.settings.seed,
                **metrics.measure_projection(found.projections, inputs)}
    return _Transferred(inputs, found.outputs, latent.device, latent.card.get("description", ""),
                        projections=found.projections, projection=measures)


def check_evaluable(checkpoint: str | os.PathLike, target: str, size: int | None = None,
                    projection: dict | None = None, count: int | None = None,
                    source: str | None = None) -> tuple[Run | None, bool]:
    """(the checkpoint's Run (None for an NVlabs snapshot), whether it transfers through a latent
    space), or the error evaluate() would stop with, before any work: the file, the culture it
    makes (a StyleGAN2 run's or named file's target must be `target`; a blend's, one of its two
    models'), the size and count, the projection settings (only for StyleGAN2 models) and their
    base (for photos of culture `source`)."""
    checkpoint = Path(checkpoint)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE):
        raise ValueError(f"size must be an integer >= {MIN_SIZE} (the periodic-artifact patch), got {size!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be an integer >= 1, got {count!r}")
    run = None if is_snapshot(checkpoint) else load_run(checkpoint)
    latent = run is None or run.makes_images_from_noise
    if not latent:
        if projection:
            raise ValueError(f"{checkpoint} transfers images itself: projection settings apply to StyleGAN2 models")
        return run, latent
    makes = _cultures_made(run)
    if makes and target not in makes:
        named = " or ".join(map(repr, sorted(makes)))
        raise ValueError(f"{checkpoint} makes {named} images: evaluate it with target {named}, not {target!r}")
    if (projection or {}).get("base") is None:
        default_base(checkpoint, source)  # a fine-tuned run's init_from, a blend's model, must still be there
    return run, latent


def _cultures_made(run: Run | None) -> set[str]:
    """The cultures a StyleGAN2 model makes, as far as it names them: a run's or file's target; a
    blend's, either of its two models' (it renders one's layout in the other's manner)."""
    if run is None:
        return set()
    blend = run.card.get("blend") if run.checkpoint is None else None
    if blend is not None:  # unknown (any target) unless both models name their cultures
        named = [blend_cultures(blend, role) for role in BLEND_ROLES]
        return set().union(*named) if all(named) else set()
    target = next(iter(run.directions.values())).get("target")
    return {target} if target is not None else set()


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, source: str, target: str,
             reference: str | os.PathLike | None = None, size: int | None = None, count: int | None = None,
             device: str | None = None, progress: bool = True, projection: dict | None = None) -> Evaluation:
    """Transfers data/<source> to `target` with the checkpoint and measures the results against
    data/<target> (and, for the classifiers, every culture of `reference`); `progress`: bars
    while transferring and extracting features, on a terminal (culturegan._progress).

    Image-to-image generators transfer the images at `size` (default 128). StyleGAN2 models (a
    stylegan2 run, an NVlabs snapshot, a converted or blended file) transfer by projection
    (LatentTransfer): `projection` holds its base (default: the run's init_from; a blend's model
    that makes `source` images; else the model itself), steps (default 1000), w_plus, seed and
    batch_size; `size` defaults to the model's resolution."""
    checkpoint = Path(checkpoint)
    run, latent = check_evaluable(checkpoint, target, size, projection, count, source)
    reference = Path(reference or data)
    cultures = [folder.name for folder in find_cultures(reference)]
    missing = [c for c in (source, target) if c not in cultures]
    if missing:
        raise ValueError(f"culture(s) {missing} not in the reference set {reference} (it has {cultures})")
    # the deception rate's discriminator, before the transfer: a snapshot's D that cannot be built
    # stops the evaluation before any work
    judge = _discriminator(checkpoint, run, target)
    if latent:
        done = _through_latent_space(checkpoint, Path(data), source, size, count, device, progress, projection or {})
    else:
        done = _through_generator(run, Path(data), source, target, size, count, device, progress)
    size = done.inputs.shape[-1]
    real_target = load_images(data, target, size)
    references = {c: load_images(reference, c, size) for c in cultures}
    results = {"checkpoint": str(checkpoint), "data": str(data), "reference": str(reference),
               "model": done.description}
    results.update(measure(done.inputs, done.outputs, real_target, references, source, target, done.back,
                           done.device, reconstructions=done.reconstructions, progress=progress))
    if done.projection is not None:
        results["projection"] = done.projection
        results["verdicts"] = verdicts(results)  # with the projection's own
    if judge is not None:
        discriminator, gan_mode = judge
        discriminator.to(done.device)
        results["deception"] = {"outputs": metrics.deception_rate(_logits(discriminator, done.outputs), gan_mode),
                                "real": metrics.deception_rate(_logits(discriminator, real_target), gan_mode)}
    return Evaluation(results, done.inputs, done.outputs, done.reconstructions, done.projections)


def _discriminator(checkpoint: Path, run: Run | None, target: str) -> tuple[torch.nn.Module, str] | None:
    """(discriminator on the CPU, its GAN mode) that judges `target` images for the deception
    rate: a run's (Run.discriminator_for), an NVlabs snapshot's D, or None."""
    if run is not None:
        return run.discriminator_for(target)
    discriminator = snapshot_discriminator(checkpoint)
    return None if discriminator is None else (discriminator, STYLEGAN2_GAN_MODE)


@torch.no_grad()
def _logits(discriminator: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The discriminator's logits of images, on the CPU, judged in batches (judge_batches).
    NVlabs' D judges images at its resolution and takes a class label (None: unconditional)."""
    device = next(discriminator.parameters()).device
    nvlabs = isinstance(discriminator, StyleGAN2Discriminator)
    group = discriminator.b4.mbstd.group_size if nvlabs and discriminator.b4.mbstd is not None else None

    def judge(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device)
        return discriminator(resized(batch, discriminator.img_resolution), None) if nvlabs else discriminator(batch)

    return torch.cat([judge(images[start:stop]).float().cpu() for start, stop in judge_batches(len(images), group)])


def judge_batches(count: int, group: int | None) -> list[tuple[int, int]]:
    """(start, stop) of batches of about JUDGE_BATCH images that a minibatch-std layer of group
    size `group` (None: the whole batch) takes: each a multiple of min(group, its size). A last
    batch that is not one is split into the multiple and the rest (fewer than a group, which
    then forms its own)."""
    size = JUDGE_BATCH if group is None else group * max(1, JUDGE_BATCH // group)
    bounds = []
    for start in range(0, count, size):
        stop = min(start + size, count)
        rest = 0 if group is None or stop - start <= group else (stop - start) % group
        if rest:
            bounds.append((start, stop - rest))
        bounds.append((stop - rest if rest else start, stop))
    return bounds


def measure(inputs: torch.Tensor, outputs: torch.Tensor, real_target: torch.Tensor,
            references: dict[str, torch.Tensor], source: str, target: str,
            back: Callable[[torch.Tensor], torch.Tensor] | None = None,
            device: torch.device | str = "cpu", *, reconstructions: torch.Tensor | None = None,
            progress: bool = False) -> dict:
    """Every metric of transferred images (culturegan.metrics.measure_transfer: the arguments are
    its), and the verdicts a person would give on them."""
    results = metrics.measure_transfer(inputs, outputs, real_target, references, source, target, back, device,
                                       reconstructions=reconstructions, progress=progress)
    results["verdicts"] = verdicts(results)
    return results


__all__ = ["Evaluation", "check_evaluable", "evaluate", "judge_batches", "load_images", "measure"]
