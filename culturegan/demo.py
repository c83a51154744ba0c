"""`culturegan demo`: the whole product in one command, on a fresh machine, offline.

1. writes the procedural culture dataset (culturegan.datasets), a training and a held-out split;
2. trains a small culture-aware CycleGAN from content photos to a target culture with
   lambda_culture = 0 (plain CycleGAN) and with the culture loss on, each with several seeds
   (runs differ between seeds, and on some machines between processes: one run proves nothing);
3. transfers the held-out photos with every run and evaluates them (culturegan.evaluation);
4. writes one report that shows the two settings side by side, every number as mean and spread
   over seeds, and checks the demo's targets on the means.

Each run takes about 3 minutes on a 2-core CPU (3 seeds: about 20 minutes in all); ``--seeds``,
``--steps`` and ``--size`` scale it.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

from culturegan.datasets import CONTENT, write_dataset
from culturegan.evaluation import collapse_ratio, evaluate, write_report
from culturegan.evaluation.report import write_text_atomically
from culturegan.evaluation.verdicts import MAX_PERIODIC_RATIO, MIN_COLLAPSE_RATIO
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


# What the demo's own report must show, checked on the means over seeds (and, from
# culturegan.evaluation.verdicts, the collapse ratio and periodic-artifact bounds).
MIN_RETRIEVAL = 0.9  # content retrieval top-1 with the culture loss
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


def _means(runs: list[dict], read) -> float:
    return statistics.fmean(read(run) for run in runs)


def check_targets(with_loss: list[dict], without: list[dict]) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers) for the demo's targets, on the means over seeds of the runs
    with and without the culture loss."""
    def judge_rate(run, side="outputs"):
        return run["recognisability"]["judge"][side]["target_rate"]

    retrieval = _means(with_loss, lambda r: r["content"]["retrieval"]["top1"])
    collapse = _means(with_loss, collapse_ratio)
    rate, rate_off, rate_inputs = (_means(with_loss, judge_rate), _means(without, judge_rate),
                                   _means(with_loss, lambda r: judge_rate(r, "inputs")))
    kid_on, kid_off = (_means(runs, lambda r: r["distance"]["culture"]["kid_outputs"]) for runs in (with_loss, without))
    ssim = _means(with_loss, lambda r: r["content"]["ssim_lowpass"])
    periodic = _means(with_loss, lambda r: r["periodic_artifacts"]["ratio"])
    return [(f"content retrieval top-1 >= {MIN_RETRIEVAL:.0%} with the culture loss", retrieval >= MIN_RETRIEVAL,
             f"{retrieval:.0%} (chance {with_loss[0]['content']['retrieval']['chance_top1']:.0%})"),
            (f"collapse ratio >= {MIN_COLLAPSE_RATIO} with the culture loss", collapse >= MIN_COLLAPSE_RATIO,
             f"{collapse:.2f}"),
            ("classified as the target by the judge features more often with the culture loss than its inputs "
             "and than without it", rate > rate_inputs and rate > rate_off,
             f"{rate:.0%} with, {rate_off:.0%} without, inputs {rate_inputs:.0%}"),
            (f"culture-feature KID at least {KID_REDUCTION:.0%} lower with the culture loss",
             kid_on <= (1 - KID_REDUCTION) * kid_off, f"{kid_on:.3g} with, {kid_off:.3g} without"),
            (f"SSIM of low-pass luminance to the input >= {MIN_SSIM} with the culture loss", ssim >= MIN_SSIM,
             f"{ssim:.3f}"),
            (f"periodic artifacts with the culture loss at most {MAX_PERIODIC_RATIO:g}x real target images'",
             periodic <= MAX_PERIODIC_RATIO, f"{periodic:.2f}x")]


def run(out: str | Path, settings: DemoSettings = DemoSettings(), seeds: int = 3) -> tuple[Path, bool]:
    """Runs the demo into `out`, training each setting with `seeds` seeds (settings.seed,
    settings.seed + 1, ...); returns the report's path and whether every target was met."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out = Path(out)
    started = time.perf_counter()
    print(f"[1/4] writing the procedural culture dataset to {out / 'data'}", flush=True)
    train, test = out / "data" / "train", out / "data" / "test"
    write_dataset(train, settings.train_images, settings.size, seed=settings.seed, progress=True)
    write_dataset(test, settings.test_images, settings.size, seed=settings.seed + 1000, progress=True)
    names = {"without culture loss (lambda_culture = 0)": 0.0,
             f"with culture loss (lambda_culture = {settings.lambda_culture:g})": settings.lambda_culture}
    runs = {name: [] for name in names}
    for step, (name, weight) in enumerate(names.items(), start=2):
        for index in range(seeds):
            seed = settings.seed + index
            print(f"[{step}/4] training {CONTENT} -> {settings.target}, {name}, seed {seed}", flush=True)
            folder = out / "runs" / f"lambda_culture_{weight:g}" / f"seed_{seed}"
            runs[name].append(_train(dataclasses.replace(settings, seed=seed), train, folder, weight))
    print("[4/4] transferring the held-out photos and evaluating", flush=True)
    device = None if settings.device == "auto" else settings.device
    evaluations = {name: [evaluate(path, test, CONTENT, settings.target, reference=train, size=settings.size,
                                   device=device) for path in paths]
                   for name, paths in runs.items()}
    without, with_loss = ([e.results for e in evaluation] for evaluation in evaluations.values())
    checks = check_targets(with_loss, without)
    notes = [f"{'met' if met else 'MISSED'}: {target} ({numbers})" for target, met, numbers in checks]
    notes.append(f"procedural stand-in cultures ({settings.train_images} training and {settings.test_images} "
                 f"held-out images each, {settings.size} px), {settings.steps} steps per run, {seeds} seed(s) per "
                 f"setting, targets checked on the means; {time.perf_counter() - started:.0f} s in all")
    report = write_report(evaluations, out / "report", title=f"culturegan demo: {CONTENT} to {settings.target}",
                          notes=notes)
    write_text_atomically(out / "report" / "targets.json", json.dumps(
        [{"target": t, "met": m, "measured": n} for t, m, n in checks], indent=2) + "\n")
    for note in notes:
        print(note)
    print(f"report: {report}")
    return report, all(met for _, met, _ in checks)
