"""`culturegan demo`: the whole product in one command, on a fresh machine, offline.

1. writes the procedural culture dataset (culturegan.datasets), a training and a held-out split;
2. trains a small culture-aware CycleGAN from content photos to a target culture with
   lambda_culture = 0 (the same CycleGAN, structure loss included, without the culture loss) and
   with the culture loss on, each with several seeds
   (runs differ between seeds, and on some machines between processes: one run proves nothing);
3. transfers the held-out photos with every run and evaluates them (culturegan.evaluation);
4. writes one report that shows the two settings side by side, every number as mean and spread
   over seeds, and checks the demo's targets on the means.

On a CPU the runs train side by side in worker processes (each with its share of the cores:
small convolutions use one core well and two poorly), on a GPU one after another. On a 2-core
CPU the whole demo (3 seeds) takes 4 to 13 minutes (VMs differ); ``--seeds``, ``--steps`` and
``--size`` scale it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch

from culturegan._files import write_text
from culturegan._progress import progress_bar
from culturegan.datasets import CONTENT, write_dataset
from culturegan.evaluation import collapse_ratio, evaluate, write_report
from culturegan.evaluation.verdicts import MAX_PERIODIC_RATIO, MAX_RECOGNISED_P, MIN_COLLAPSE_RATIO, target_count
from culturegan.metrics import more_often_p
from culturegan.training import TrainConfig, Trainer

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    target: str = "ukiyoe"
    size: int = 64  # image side for training and evaluation
    train_images: int = 60  # per culture
    test_images: int = 24
    steps: int = 400
    lambda_culture: float = 1.0
    # the line group only: on this stand-in the colour and texture groups made the outputs alike
    # (README, "The culture loss without grids"); every group is measured by the evaluation
    culture_weights: tuple[float, float, float] = (0.0, 0.0, 1.0)
    lambda_structure: float = 20.0  # in both settings: only the culture loss differs between them
    ngf: int = 16
    n_blocks: int = 3
    upsample: str = "bilinear"  # no transposed-convolution checkerboard (culturegan.models.cyclegan)
    ndf: int = 16
    # 64-pixel images: 2 layers judge 34-pixel patches (half the image, as 70-pixel patches are
    # a quarter of CycleGAN's 256-pixel images); 3 would judge the whole layout
    d_layers: int = 2
    batch_size: int = 2
    device: str = "auto"
    seed: int = 0
    workers: int = 0  # training runs side by side on a CPU; 0: as many as the cores allow


# What the demo's own report must show, checked on the means over seeds (and, from
# culturegan.evaluation.verdicts, the collapse ratio and periodic-artifact bounds).
MIN_RETRIEVAL = 0.9  # content retrieval top-1 with the culture loss
KID_REDUCTION = 0.2  # culture-feature KID with the loss at least 20% below the KID without it
MIN_SSIM = 0.5  # low-pass luminance SSIM of outputs to their inputs


def _config(settings: DemoSettings, data: Path, output: Path, lambda_culture: float) -> TrainConfig:
    return TrainConfig(data_root=str(data), source=CONTENT, target=settings.target, load_size=settings.size + 8,
                       crop_size=settings.size, batch_size=settings.batch_size, workers=0, ngf=settings.ngf,
                       n_blocks=settings.n_blocks, upsample=settings.upsample, ndf=settings.ndf,
                       d_layers=settings.d_layers,
                       lambda_culture=lambda_culture, culture_weights=settings.culture_weights,
                       lambda_structure=settings.lambda_structure,
                       profile_size=settings.size, steps=settings.steps, decay_steps=settings.steps // 2,
                       pool_size=20, device=settings.device, seed=settings.seed, output=str(output),
                       checkpoint_every=settings.steps, keep_last=1, log_every=max(1, settings.steps // 40),
                       sample_every=max(1, settings.steps // 4), progress=False)


def _train(config: TrainConfig, threads: int | None) -> float:
    """Trains one run (in a worker process: with `threads` threads, its log in OUTPUT/train.log);
    returns the seconds it took."""
    started = time.perf_counter()
    with contextlib.ExitStack() as worker:
        if threads is not None:
            torch.set_num_threads(threads)
            worker.enter_context(_logging_to(Path(config.output) / "train.log"))
        Trainer(config).fit()
    return time.perf_counter() - started


@contextlib.contextmanager
def _logging_to(path: Path):
    """culturegan's messages (INFO and up) go to `path` meanwhile. A worker process starts with
    no logging set up, whatever its parent set, and runs several trainings one after another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(message)s"))
    package = logging.getLogger("culturegan")
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()


def _parallel_runs(settings: DemoSettings, count: int) -> tuple[int, int]:
    """(worker processes, threads each) for `count` training runs: one process on a GPU; on a
    CPU, runs side by side with one thread each on up to 3 cores, two each above."""
    cuda = settings.device == "cuda" or (settings.device == "auto" and torch.cuda.is_available())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cuda or count == 1:
        return 1, cores
    threads = 1 if cores < 4 else 2
    workers = settings.workers or max(1, cores // threads)
    return min(workers, count), max(1, cores // min(workers, count))


def _train_all(configs: dict[str, TrainConfig], settings: DemoSettings) -> None:
    """Trains every run, side by side where _parallel_runs says so, and says when each is done."""
    workers, threads = _parallel_runs(settings, len(configs))
    with progress_bar(total=len(configs), desc="training", unit="run") as bar:
        if workers == 1:
            for label, config in configs.items():
                logger.info("  training %s", label)
                _train(config, None)
                bar.update()
            return
        logger.info("  %d runs, %d at a time with %d thread(s) each (logs: RUN/train.log)", len(configs), workers,
                    threads)
        context = multiprocessing.get_context("spawn")  # no forked copies of torch's thread pools
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_train, config, threads): label for label, config in configs.items()}
            for future in concurrent.futures.as_completed(futures):
                logger.info("  trained %s in %.0f s", futures[future], future.result())
                bar.update()


def _evaluate_all(runs: dict[str, list[Path]], train: Path, test: Path, settings: DemoSettings) -> dict[str, list]:
    """Every run's evaluation on the held-out photos (classifiers fitted on the training data),
    per setting."""
    device = None if settings.device == "auto" else settings.device
    evaluations = {name: [] for name in runs}
    with progress_bar(total=sum(map(len, runs.values())), desc="evaluating", unit="run") as bar:
        for name, paths in runs.items():
            for path in paths:
                evaluations[name].append(evaluate(path, test, CONTENT, settings.target, reference=train,
                                                  size=settings.size, device=device))
                bar.update()
    return evaluations


def _means(runs: list[dict], read) -> float:
    return statistics.fmean(read(run) for run in runs)


def check_targets(with_loss: list[dict], without: list[dict]) -> list[tuple[str, bool, str]]:
    """(target, met, the numbers) for the demo's targets, on the means over seeds of the runs
    with and without the culture loss."""
    retrieval = _means(with_loss, lambda r: r["content"]["retrieval"]["top1"])
    collapse = _means(with_loss, collapse_ratio)
    kid_on, kid_off = (_means(runs, lambda r: r["distance"]["culture"]["kid_outputs"]) for runs in (with_loss, without))
    ssim = _means(with_loss, lambda r: r["content"]["ssim_lowpass"])
    periodic, periodic_off = (_means(runs, lambda r: r["periodic_artifacts"]["ratio"]) for runs in (with_loss, without))
    return [(f"content retrieval top-1 >= {MIN_RETRIEVAL:.0%} with the culture loss", retrieval >= MIN_RETRIEVAL,
             f"{retrieval:.0%} (chance {with_loss[0]['content']['retrieval']['chance_top1']:.0%})"),
            (f"collapse ratio >= {MIN_COLLAPSE_RATIO} with the culture loss", collapse >= MIN_COLLAPSE_RATIO,
             f"{collapse:.2f}"),
            _judge_target(with_loss, without),
            (f"culture-feature KID at least {KID_REDUCTION:.0%} lower with the culture loss",
             kid_on <= (1 - KID_REDUCTION) * kid_off, f"{kid_on:.3g} with, {kid_off:.3g} without"),
            (f"SSIM of low-pass luminance to the input >= {MIN_SSIM} with the culture loss", ssim >= MIN_SSIM,
             f"{ssim:.3f}"),
            (f"periodic artifacts with the culture loss at most {MAX_PERIODIC_RATIO:g}x real target images' and "
             "no more than without it", periodic <= MAX_PERIODIC_RATIO and periodic <= periodic_off,
             f"{periodic:.2f}x with, {periodic_off:.2f}x without")]


def _judge_target(with_loss: list[dict], without: list[dict]) -> tuple[str, bool, str]:
    """More outputs classified as the target by the judge features with the culture loss than
    its inputs and than without it, by more than chance, on the mean count over seeds: each
    seed transfers the same held-out images, so its outputs are one sample of them, the one the
    per-run verdict tests (pooling seeds would count each photo as several). The mean is
    rounded down with the loss and up without it: a fraction of an image is no evidence."""
    target = with_loss[0]["target"]

    def counts(runs, side="outputs"):
        return [target_count(run["recognisability"]["judge"][side], target) for run in runs]

    on, off, inputs = counts(with_loss), counts(without), counts(with_loss, "inputs")[0]
    images = inputs[1]
    mean_on, mean_off = (statistics.fmean(hits for hits, _ in found) for found in (on, off))
    hits_on, hits_off = math.floor(mean_on), math.ceil(mean_off)
    p_off, p_inputs = more_often_p(hits_on, images, hits_off, images), more_often_p(hits_on, images, *inputs)
    return (f"classified as the target by the judge features more often with the culture loss than its inputs "
            f"and than without it (one-sided Fisher p < {MAX_RECOGNISED_P:g} on the mean count over seeds)",
            max(p_off, p_inputs) < MAX_RECOGNISED_P,
            f"{mean_on:.3g} of {images} with (seeds: {', '.join(str(h) for h, _ in on)}), {mean_off:.3g} without "
            f"(p = {p_off:.2g}), inputs {inputs[0]} (p = {p_inputs:.2g})")


def run(out: str | Path, settings: DemoSettings = DemoSettings(), seeds: int = 3) -> tuple[Path, bool]:
    """Runs the demo into `out`, training each setting with `seeds` seeds (settings.seed,
    settings.seed + 1, ...); returns the report's path and whether every target was met."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    out = Path(out)
    started = time.perf_counter()
    logger.info("[1/3] writing the procedural culture dataset to %s", out / "data")
    train, test = out / "data" / "train", out / "data" / "test"
    write_dataset(train, settings.train_images, settings.size, seed=settings.seed, progress=True)
    write_dataset(test, settings.test_images, settings.size, seed=settings.seed + 1000, progress=True)
    names = {"without culture loss (lambda_culture = 0)": 0.0,
             f"with culture loss (lambda_culture = {settings.lambda_culture:g})": settings.lambda_culture}
    runs = {name: [out / "runs" / f"lambda_culture_{weight:g}" / f"seed_{settings.seed + index}"
                   for index in range(seeds)] for name, weight in names.items()}
    configs = {f"{name}, seed {settings.seed + index}":
               _config(dataclasses.replace(settings, seed=settings.seed + index), train, folder, weight)
               for name, weight in names.items() for index, folder in enumerate(runs[name])}
    logger.info("[2/3] training %s -> %s: %d runs (%d seed(s) per setting)", CONTENT, settings.target, len(configs),
                seeds)
    _train_all(configs, settings)
    logger.info("[3/3] transferring the held-out photos and evaluating")
    evaluations = _evaluate_all(runs, train, test, settings)
    without, with_loss = ([e.results for e in evaluation] for evaluation in evaluations.values())
    checks = check_targets(with_loss, without)
    notes = [f"{'met' if met else 'MISSED'}: {target} ({numbers})" for target, met, numbers in checks]
    notes.append(f"procedural stand-in cultures ({settings.train_images} training and {settings.test_images} "
                 f"held-out images each, {settings.size} px), {settings.steps} steps per run, {seeds} seed(s) per "
                 f"setting, targets checked on the means; {time.perf_counter() - started:.0f} s in all")
    report = write_report(evaluations, out / "report", title=f"culturegan demo: {CONTENT} to {settings.target}",
                          notes=notes)
    write_text(out / "report" / "targets.json", json.dumps(
        [{"target": t, "met": m, "measured": n} for t, m, n in checks], indent=2) + "\n")
    return report, all(met for _, met, _ in checks)
