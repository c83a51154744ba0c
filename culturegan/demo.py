"""`culturegan demo`: the whole product in one command, on a fresh machine, offline.

1. writes the procedural culture dataset (culturegan.datasets), a training and a held-out split;
2. trains a small culture-aware CycleGAN from content photos to a target culture twice, with
   lambda_culture = 0 (plain CycleGAN) and with the culture loss on;
3. transfers the held-out photos with both and evaluates them (culturegan.evaluation);
4. writes one report that shows the two side by side, and checks the demo's targets.

The default budget fits a 2-core CPU in under 10 minutes; ``--steps`` and ``--size`` scale it
up on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from culturegan.datasets import CONTENT, write_dataset
from culturegan.evaluation import evaluate, write_report
from culturegan.training import TrainConfig, Trainer


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    target: str = "ukiyoe"
    size: int = 64  # image side for training and evaluation
    train_images: int = 60  # per culture
    test_images: int = 24
    steps: int = 800
    lambda_culture: float = 1.0
    ngf: int = 16
    n_blocks: int = 3
    ndf: int = 16
    batch_size: int = 2
    device: str = "auto"
    seed: int = 0


# What the demo's own report must show (from the issue that specifies the demo).
TARGET_RATE = 0.8  # transferred images classified as the target culture, with the culture loss
KID_REDUCTION = 0.2  # culture-feature KID with the loss at least 20% below the KID without it
MIN_SSIM = 0.5  # low-pass luminance SSIM of outputs to their inputs


def _train(settings: DemoSettings, data: Path, output: Path, lambda_culture: float) -> Path:
    config = TrainConfig(data_root=str(data), source=CONTENT, target=settings.target, load_size=settings.size + 8,
                         crop_size=settings.size, batch_size=settings.batch_size, workers=0, ngf=settings.ngf,
                         n_blocks=settings.n_blocks, ndf=settings.ndf, lambda_culture=lambda_culture,
                         profile_size=settings.size, steps=settings.steps, decay_steps=settings.steps // 2,
                         pool_size=20, device=settings.device, seed=settings.seed, output=str(output),
                         checkpoint_every=settings.steps, keep_last=1, log_every=max(1, settings.steps // 40),
                         sample_every=max(1, settings.steps // 4))
    Trainer(config).fit()
    return output


def check_targets(with_loss: dict, without: dict) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers) for the demo's three targets."""
    rate = with_loss["recognisability"]["culture"]["outputs"]["target_rate"]
    rate_off = without["recognisability"]["culture"]["outputs"]["target_rate"]
    kid_on, kid_off = (r["distance"]["culture"]["kid_outputs"] for r in (with_loss, without))
    ssim = with_loss["content"]["ssim_lowpass"]
    return [(f"classified as the target >= {TARGET_RATE:.0%} with the culture loss, and more than without",
             rate >= TARGET_RATE and rate > rate_off, f"{rate:.0%} with, {rate_off:.0%} without"),
            (f"culture-feature KID at least {KID_REDUCTION:.0%} lower with the culture loss",
             kid_on <= (1 - KID_REDUCTION) * kid_off, f"{kid_on:.3f} with, {kid_off:.3f} without"),
            (f"SSIM of low-pass luminance to the input >= {MIN_SSIM}", ssim >= MIN_SSIM, f"{ssim:.3f}")]


def run(out: str | Path, settings: DemoSettings = DemoSettings()) -> Path:
    """Runs the demo into `out` and returns the report's path."""
    out = Path(out)
    started = time.perf_counter()
    print(f"[1/4] writing the procedural culture dataset to {out / 'data'}", flush=True)
    train, test = out / "data" / "train", out / "data" / "test"
    write_dataset(train, settings.train_images, settings.size, seed=settings.seed, progress=True)
    write_dataset(test, settings.test_images, settings.size, seed=settings.seed + 1000, progress=True)
    runs = {}
    for step, (name, weight) in enumerate((("without culture loss (lambda_culture = 0)", 0.0),
                                           (f"with culture loss (lambda_culture = {settings.lambda_culture:g})",
                                            settings.lambda_culture)), start=2):
        print(f"[{step}/4] training {CONTENT} -> {settings.target}, {name}", flush=True)
        runs[name] = _train(settings, train, out / "runs" / f"lambda_culture_{weight:g}", weight)
    print("[4/4] transferring the held-out photos and evaluating", flush=True)
    evaluations = {name: evaluate(path, test, CONTENT, settings.target, reference=train, size=settings.size,
                                  device=None if settings.device == "auto" else settings.device)
                   for name, path in runs.items()}
    without, with_loss = (e.results for e in evaluations.values())
    checks = check_targets(with_loss, without)
    notes = [f"{'met' if met else 'MISSED'}: {target} ({numbers})" for target, met, numbers in checks]
    notes.append(f"procedural stand-in cultures ({settings.train_images} training and {settings.test_images} "
                 f"held-out images each, {settings.size} px), {settings.steps} steps per run; "
                 f"{time.perf_counter() - started:.0f} s in all")
    report = write_report(evaluations, out / "report", title=f"culturegan demo: {CONTENT} to {settings.target}",
                          notes=notes)
    (out / "report" / "targets.json").write_text(json.dumps(
        [{"target": t, "met": m, "measured": n} for t, m, n in checks], indent=2) + "\n")
    for note in notes:
        print(note)
    print(f"report: {report}")
    return report
