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
from torch.utils.data import DataLoader

from culturegan import metrics
from culturegan.culture import GROUPS, CultureFeatureExtractor
from culturegan.data import centre_cropped, find_cultures
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


def load_images(root, culture: str, size: int, count: int | None = None) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1]: a culture folder's images, shorter side resized to `size`
    and centre-cropped, in file order (the first `count`)."""
    images = centre_cropped(root, culture, size)
    total = len(images) if count is None else min(count, len(images))
    batches = DataLoader(torch.utils.data.Subset(images, range(total)), batch_size=16)
    return torch.cat([batch["image"] for batch in batches])


def _transfer(stylizer: Stylizer | None, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor | None:
    if stylizer is None:
        return None
    return torch.cat([stylizer(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)])


class _Features:
    """Culture features (the loss's groups) and judge features of image batches, on one device."""

    def __init__(self, device: torch.device):
        self.extractor = CultureFeatureExtractor().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = [images[i:i + 32].to(self.device) for i in range(0, len(images), 32)]
        culture = [self.extractor(p) for p in parts]
        judge = [metrics.judge_features(p) for p in parts]
        groups = {g: torch.cat([getattr(c, g) for c in culture]).cpu() for g in GROUPS}
        groups.update({g: torch.cat([j[g] for j in judge]).cpu() for g in metrics.JUDGE_GROUPS})
        groups["culture"] = torch.cat([groups[g] for g in GROUPS], 1)
        groups["judge"] = torch.cat([groups[g] for g in metrics.JUDGE_GROUPS], 1)
        return groups


def evaluate(checkpoint: str | os.PathLike, data: str | os.PathLike, source: str, target: str,
             reference: str | os.PathLike | None = None, size: int = 128, count: int | None = None,
             device: str | None = None) -> Evaluation:
    """Transfers data/<source> to `target` with the checkpoint and measures the results against
    data/<target> (and, for the classifiers, every culture of `reference`)."""
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
    outputs = _transfer(stylizer, inputs)
    real_target = load_images(data, target, size)
    references = {c: load_images(reference, c, size) for c in cultures}
    results = {"checkpoint": str(checkpoint), "data": str(data), "reference": str(reference),
               "model": stylizer.card.get("description", "")}
    reconstructions = _transfer(back, outputs)
    results.update(measure(inputs, outputs, real_target, references, source, target,
                           None if back is None else functools.partial(_transfer, back), stylizer.device,
                           reconstructions=reconstructions))
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
            device: torch.device | str = "cpu", *, reconstructions: torch.Tensor | None = None) -> dict:
    """Every metric of transferred images, JSON-ready: `outputs` are `inputs` (source images)
    transferred to `target`; `real_target` are held-out images of the target culture;
    `references` the images of every culture the classifiers and feature units are fitted on;
    `back` (optional) transfers target images back to the source, for the cycle measures, and
    `reconstructions` is back(outputs) when the caller has it already."""
    missing = [c for c in (source, target) if c not in references]
    if missing:
        raise ValueError(f"culture(s) {missing} not among the reference cultures {list(references)}")
    features = _Features(torch.device(device))
    reference_features = {c: features(images) for c, images in references.items()}
    output_features, input_features, target_features = features(outputs), features(inputs), features(real_target)
    results = {"source": source, "target": target, "images": len(inputs), "size": inputs.shape[-1],
               "cultures": list(references)}
    results["recognisability"] = _recognisability(reference_features, input_features, output_features,
                                                  target_features, source, target)
    # one unit per feature group for every run evaluated against this reference: comparable across runs
    scales = {group: metrics.within_culture_scale({c: f[group] for c, f in reference_features.items()})
              for group in (*GROUPS, "culture", *metrics.JUDGE_GROUPS, "judge")}
    results["distance"] = {group: {
        "kid_outputs": metrics.kid(output_features[group], target_features[group], scale),
        "kid_inputs": metrics.kid(input_features[group], target_features[group], scale),
        "frechet_outputs": metrics.frechet_distance(output_features[group], target_features[group], scale),
    } for group, scale in scales.items()}
    results["content"] = _content(outputs, inputs, output_features, input_features, scales)
    results["periodic_artifacts"] = metrics.periodic_artifact_ratio(outputs, real_target)
    results["cycle"] = None if back is None else metrics.hidden_signal(back, outputs, inputs, reconstructions)
    results["diversity"] = metrics.diversity(output_features["culture"], target_features["culture"],
                                             scales["culture"])
    results["verdicts"] = verdicts(results)
    return results


def _recognisability(reference_features: dict, input_features: dict, output_features: dict, target_features: dict,
                     source: str, target: str) -> dict:
    """Per feature kind (culture, judge): how the outputs and the inputs are classified, and how
    well the classifier fitted on the reference recognises held-out source and target images."""
    found = {}
    for kind in ("culture", "judge"):
        classifier = metrics.NearestCentroid.fit({c: f[kind] for c, f in reference_features.items()})
        matrix = metrics.confusion(classifier, {source: input_features[kind], target: target_features[kind]})
        rows = [classifier.cultures.index(c) for c in (source, target)]
        found[kind] = {"outputs": metrics.recognisability(classifier, output_features[kind], source, target),
                       "inputs": metrics.recognisability(classifier, input_features[kind], source, target),
                       "real_accuracy": float(matrix[rows, rows].sum() / matrix[rows].sum())}
    return found


def _content(outputs: torch.Tensor, inputs: torch.Tensor, output_features: dict, input_features: dict,
             scales: dict) -> dict:
    """Content preservation and input dependence: SSIM, edge F1, content retrieval, per-output
    flags, and the collapse ratio in structure, culture features and judge features."""
    dependence = metrics.input_dependence(outputs, inputs)
    ratios = {"structure": dependence.pop("collapse_ratio"),
              **{kind: metrics.collapse_ratio(output_features[kind] / scales[kind], input_features[kind] / scales[kind])
                 for kind in ("culture", "judge")}}
    return {"ssim_lowpass": float(metrics.ssim_lowpass(outputs, inputs).mean()),
            "edge_f1": float(metrics.edge_f1(outputs, inputs).mean()), **dependence, "collapse_ratio": ratios}


__all__ = ["Evaluation", "evaluate", "load_images", "measure"]
