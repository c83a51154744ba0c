"""Every metric of one set of transferred images at once (measure_transfer), against held-out
images of the target culture and classifiers fitted on reference images of every culture: the
measuring core that `culturegan evaluate` (culturegan.evaluation, which adds the verdicts) and
the trainer's periodic evaluation (eval_every) share. `headline` picks the numbers a training
run logs at each evaluation.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import torch

from culturegan._progress import progress_bar
from culturegan.culture import GROUPS, CultureFeatureExtractor
from culturegan.metrics.judge import JUDGE_GROUPS, judge_features
from culturegan.metrics.scores import (NearestCentroid, confusion, diversity, edge_f1, frechet_distance, kid,
                                       psnr, recognisability, ssim_lowpass, within_culture_scale)
from culturegan.metrics.spectrum import periodic_artifact_ratio
from culturegan.metrics.steganography import hidden_signal
from culturegan.metrics.structure import collapse_ratio, input_dependence

# The numbers a training run logs at each held-out evaluation (metrics.jsonl's "eval" records),
# each named by its path in measure_transfer's results: whether the outputs show their inputs and
# stay as varied (in structure, culture and judge features), their distance to the target culture
# by the loss's features and by features it never sees, the judge's verdict on them, and the
# content and periodic-artifact checks.
HEADLINE = ("content.retrieval.top1", "content.collapse_ratio.structure", "content.collapse_ratio.culture",
            "content.collapse_ratio.judge", "distance.culture.kid_outputs", "distance.judge.kid_outputs",
            "recognisability.judge.outputs.target_rate", "content.ssim_lowpass", "periodic_artifacts.ratio")
JUDGE_MEASURES = tuple(path for path in HEADLINE if "judge" in path.split("."))  # those JUDGE_VERSION changes


class _Features:
    """Culture features (the loss's groups) and judge features of image batches, on one device,
    counted on a progress bar."""

    def __init__(self, device: torch.device, bar):
        self.extractor = CultureFeatureExtractor().to(device)
        self.device = device
        self.bar = bar

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        culture, judge = [], []
        for start in range(0, len(images), 32):
            part = images[start:start + 32].to(self.device)
            culture.append(self.extractor(part))
            judge.append(judge_features(part))
            self.bar.update(len(part))
        groups = {g: torch.cat([getattr(c, g) for c in culture]).cpu() for g in GROUPS}
        groups.update({g: torch.cat([j[g] for j in judge]).cpu() for g in JUDGE_GROUPS})
        groups["culture"] = torch.cat([groups[g] for g in GROUPS], 1)
        groups["judge"] = torch.cat([groups[g] for g in JUDGE_GROUPS], 1)
        return groups


def measure_transfer(inputs: torch.Tensor, outputs: torch.Tensor, real_target: torch.Tensor,
                     references: dict[str, torch.Tensor], source: str, target: str,
                     back: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     device: torch.device | str = "cpu", *, reconstructions: torch.Tensor | None = None,
                     progress: bool = False, frechet: bool = True) -> dict:
    """Every metric of transferred images, JSON-ready: `outputs` are `inputs` (source images)
    transferred to `target`; `real_target` are held-out images of the target culture;
    `references` the images of every culture the classifiers and feature units are fitted on;
    `back` (optional) transfers target images back to the source, for the cycle measures, and
    `reconstructions` is back(outputs) when the caller has it already; `progress`: a bar while
    the features are extracted, on a terminal. `frechet=False` leaves out the Fréchet distances:
    two eigendecompositions of a covariance per feature group, three quarters of the time on
    small sets, where the KIDs are the better estimate anyway."""
    missing = [c for c in (source, target) if c not in references]
    if missing:
        raise ValueError(f"culture(s) {missing} not among the reference cultures {list(references)}")
    every = [*references.values(), outputs, inputs, real_target]
    with progress_bar(total=sum(map(len, every)), enabled=progress, desc="features", unit="image", leave=False) as bar:
        features = _Features(torch.device(device), bar)
        reference_features = {c: features(images) for c, images in references.items()}
        output_features, input_features, target_features = features(outputs), features(inputs), features(real_target)
    results = {"source": source, "target": target, "images": len(inputs), "size": inputs.shape[-1],
               "cultures": list(references)}
    results["recognisability"] = _recognisability(reference_features, input_features, output_features,
                                                  target_features, source, target)
    # one unit per feature group for every run evaluated against this reference: comparable across runs
    scales = {group: within_culture_scale({c: f[group] for c, f in reference_features.items()})
              for group in (*GROUPS, "culture", *JUDGE_GROUPS, "judge")}
    results["distance"] = {group: {
        "kid_outputs": kid(output_features[group], target_features[group], scale),
        "kid_inputs": kid(input_features[group], target_features[group], scale),
        **({"frechet_outputs": frechet_distance(output_features[group], target_features[group], scale)}
           if frechet else {}),
    } for group, scale in scales.items()}
    results["content"] = _content(outputs, inputs, output_features, input_features, scales)
    results["periodic_artifacts"] = periodic_artifact_ratio(outputs, real_target)
    results["cycle"] = None if back is None else hidden_signal(back, outputs, inputs, reconstructions)
    results["diversity"] = diversity(output_features["culture"], target_features["culture"], scales["culture"])
    return results


def measure_projection(projections: torch.Tensor, inputs: torch.Tensor) -> dict:
    """How near photos' projections into a StyleGAN2 model come to the photos (N, 3, H, W) in
    [-1, 1]: PSNR (mean, min), low-pass SSIM and content retrieval. A transfer through the latent
    space shows its photo no better than the projection does: this is the ceiling of its content
    measures."""
    values = psnr(projections, inputs)
    return {"psnr_db": float(values.mean()), "psnr_db_min": float(values.min()),
            "ssim_lowpass": float(ssim_lowpass(projections, inputs).mean()),
            "retrieval_top1": input_dependence(projections, inputs)["retrieval"]["top1"]}


def headline(results: dict) -> dict[str, float]:
    """The HEADLINE numbers of measure_transfer's results, by path."""
    return {path: float(functools.reduce(operator.getitem, path.split("."), results)) for path in HEADLINE}


def _recognisability(reference_features: dict, input_features: dict, output_features: dict, target_features: dict,
                     source: str, target: str) -> dict:
    """Per feature kind (culture, judge): how the outputs and the inputs are classified, and how
    well the classifier fitted on the reference recognises held-out source and target images."""
    found = {}
    for kind in ("culture", "judge"):
        classifier = NearestCentroid.fit({c: f[kind] for c, f in reference_features.items()})
        matrix = confusion(classifier, {source: input_features[kind], target: target_features[kind]})
        rows = [classifier.cultures.index(c) for c in (source, target)]
        found[kind] = {"outputs": recognisability(classifier, output_features[kind], source, target),
                       "inputs": recognisability(classifier, input_features[kind], source, target),
                       "real_accuracy": float(matrix[rows, rows].sum() / matrix[rows].sum())}
    return found


def _content(outputs: torch.Tensor, inputs: torch.Tensor, output_features: dict, input_features: dict,
             scales: dict) -> dict:
    """Content preservation and input dependence: SSIM, edge F1, content retrieval, per-output
    flags, and the collapse ratio in structure, culture features and judge features."""
    dependence = input_dependence(outputs, inputs)
    ratios = {"structure": dependence.pop("collapse_ratio"),
              **{kind: collapse_ratio(output_features[kind] / scales[kind], input_features[kind] / scales[kind])
                 for kind in ("culture", "judge")}}
    return {"ssim_lowpass": float(ssim_lowpass(outputs, inputs).mean()),
            "edge_f1": float(edge_f1(outputs, inputs).mean()), **dependence, "collapse_ratio": ratios}
