"""`culturegan evaluate`: transfer a culture's held-out images with a trained model and measure
how culturally consistent the results are (culturegan.metrics), judged both with the culture
features the culture loss optimises and with judge features it never sees.

The culture classifiers are fitted on a reference set (the training folders; by default the
evaluated folders themselves), every culture folder of it taking part, so "recognisably of the
target culture" means closer to the target than to the source and to every other culture.
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
from culturegan.models.loading import load_run
from culturegan.transfer import Stylizer


@dataclasses.dataclass
class Evaluation:
    """What evaluate() measured: `results` (all numbers, JSON-ready) and the images behind them."""

    results: dict
    inputs: torch.Tensor
    outputs: torch.Tensor
    reconstructions: torch.Tensor | None


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


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, source: str, target: str,
             reference: str | os.PathLike | None = None, size: int = 128, count: int | None = None,
             device: str | None = None, progress: bool = True) -> Evaluation:
    """Transfers data/<source> to `target` with the checkpoint and measures the results against
    data/<target> (and, for the classifiers, every culture of `reference`); `progress`: bars
    while transferring and extracting features, on a terminal (culturegan._progress)."""
    checkpoint = Path(checkpoint)
    run = load_run(checkpoint)
    stylizer = Stylizer(run, target, device=device)
    try:
        back = Stylizer(run, source, device=device)
    except ValueError:  # a single-direction file: no cycle to measure
        back = None
    reference = Path(reference or data)
    cultures = [folder.name for folder in find_cultures(reference)]
    missing = [c for c in (source, target) if c not in cultures]
    if missing:
        raise ValueError(f"culture(s) {missing} not in the reference set {reference} (it has {cultures})")
    inputs = load_images(data, source, size, count)
    outputs = _transfer(stylizer, inputs, progress=progress, desc=f"transferring {source} to {target}")
    real_target = load_images(data, target, size)
    references = {c: load_images(reference, c, size) for c in cultures}
    results = {"checkpoint": str(checkpoint), "data": str(data), "reference": str(reference),
               "model": stylizer.card.get("description", "")}
    reconstructions = _transfer(back, outputs, progress=progress, desc=f"transferring back to {source}")
    # the cycle check transfers perturbed outputs back once per perturbation (a bar each)
    back_again = None if back is None else functools.partial(_transfer, back, progress=progress,
                                                             desc=f"perturbed, back to {source}")
    results.update(measure(inputs, outputs, real_target, references, source, target, back_again, stylizer.device,
                           reconstructions=reconstructions, progress=progress))
    judge = run.discriminator_for(target, stylizer.device)
    if judge is not None:
        discriminator, gan_mode = judge
        with torch.no_grad():
            results["deception"] = {
                "outputs": metrics.deception_rate(discriminator(outputs.to(stylizer.device)), gan_mode),
                "real": metrics.deception_rate(discriminator(real_target.to(stylizer.device)), gan_mode)}
    return Evaluation(results, inputs, outputs, reconstructions)


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


__all__ = ["Evaluation", "evaluate", "load_images", "measure"]
