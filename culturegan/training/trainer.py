"""The culture-aware CycleGAN training loop: source culture A <-> target culture B.

Two generators (A->B, B->A) and two PatchGAN discriminators, all on culturegan's fused blocks,
trained with the adversarial, cycle, identity and culture losses (culturegan.losses) against
culture profiles fitted on the training folders; Adam(2e-4, 0.5, 0.999), a constant then
linearly decaying learning rate, image pools, optional AMP and R1. One device, or many with
torchrun (data parallel: each rank its share of every batch, gradients averaged with one
all-reduce per optimiser step; rank 0 logs and checkpoints). Resuming restores
everything, so an interrupted run ends with the parameters of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from culturegan.culture import CultureProfile
from culturegan.data import Augment, CultureImages
from culturegan.losses import CultureLoss, CultureLossWeights, cycle_loss, discriminator_loss, generator_loss
from culturegan.losses import identity_loss, r1_penalty
from culturegan.models import NLayerDiscriminator, ResnetGenerator
from culturegan.training import state as checkpoints
from culturegan.training.config import TrainConfig

MODELS = ("G_AB", "G_BA", "D_A", "D_B")
OPTIMIZERS = ("optim_G", "optim_D")


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss; the last good state was saved."""


class Trainer:
    def __init__(self, config: TrainConfig, resume: bool = False):
        self.config = config.validate()
        self.rank, self.world = _distributed_setup(config)
        self.device = _device(config.device, self.rank)
        torch.manual_seed(config.seed)
        self.rng = random.Random(config.seed)
        self.output = Path(config.output)
        self.checkpoints = self.output / "checkpoints"
        self._build_data()
        self._build_models()
        self.step, self.bad_steps = 0, 0
        if resume:
            latest = checkpoints.latest_checkpoint(self.checkpoints)
            if latest is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.checkpoints}")
            self.load(latest)
        if self.rank == 0:
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "config.json").write_text(config.to_json() + "\n")

    # ------------------------------------------------------------------------------ setup

    def _build_data(self) -> None:
        c = self.config
        augment = Augment(load_size=c.load_size, crop_size=c.crop_size)
        manifest = c.manifest or None
        self.data = {side: CultureImages(c.data_root, [name], manifest, augment, seed=c.seed + i)
                     for i, (side, name) in enumerate((("A", c.source), ("B", c.target)))}
        self.profiles = {side: CultureProfile.fit_folder(c.data_root, name, size=c.profile_size, manifest=manifest)
                         for side, name in (("A", c.source), ("B", c.target))}

    def _build_models(self) -> None:
        c = self.config
        memory = torch.channels_last if c.channels_last else torch.contiguous_format
        self.models = {name: model.to(self.device, memory_format=memory) for name, model in (
            ("G_AB", ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks, fused=True)),
            ("G_BA", ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks, fused=True)),
            ("D_A", NLayerDiscriminator(ndf=c.ndf, fused=True)),
            ("D_B", NLayerDiscriminator(ndf=c.ndf, fused=True)))}
        if self.world > 1:  # every rank starts from rank 0's weights
            for model in self.models.values():
                for tensor in model.state_dict().values():
                    torch.distributed.broadcast(tensor, 0)
        betas = (c.beta1, c.beta2)
        self.optimizers = {
            "optim_G": torch.optim.Adam([*self.models["G_AB"].parameters(), *self.models["G_BA"].parameters()],
                                        lr=c.lr, betas=betas),
            "optim_D": torch.optim.Adam([*self.models["D_A"].parameters(), *self.models["D_B"].parameters()],
                                        lr=c.lr, betas=betas)}
        constant = c.steps - c.decay_steps
        factor = (lambda s: 1.0 if s < constant else max(0.0, (c.steps - s) / max(1, c.decay_steps)))
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, factor) for name, opt in self.optimizers.items()}
        self.pools = {side: checkpoints.ImagePool(c.pool_size, self.rng) for side in ("A", "B")}
        weights = CultureLossWeights(c.lambda_culture, *c.culture_weights)
        self.culture_loss = CultureLoss(weights).to(self.device)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.amp == "fp16")

    def _loader(self, side: str) -> DataLoader:
        c = self.config
        stream = checkpoints.SampleStream(len(self.data[side]), c.seed + (side == "B"), self.step * c.batch_size,
                                          self.rank, self.world)
        return DataLoader(self.data[side], batch_size=c.batch_size, sampler=stream, num_workers=c.workers,
                          pin_memory=self.device.type == "cuda", persistent_workers=c.workers > 0)

    # -------------------------------------------------------------------------- training

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float] | None:
        """One generator and one discriminator update; None when a loss was not finite (skipped)."""
        c, m = self.config, self.models
        for name in ("D_A", "D_B"):
            self.models[name].requires_grad_(False)
        with self._autocast():
            fake_b, fake_a = m["G_AB"](real_a), m["G_BA"](real_b)
            losses = {"G_adv": generator_loss(m["D_B"](fake_b), c.gan_mode) + generator_loss(m["D_A"](fake_a),
                                                                                             c.gan_mode),
                      "cycle": cycle_loss(m["G_BA"](fake_b), real_a, c.lambda_cycle)
                      + cycle_loss(m["G_AB"](fake_a), real_b, c.lambda_cycle)}
            if c.lambda_identity > 0:
                weight = c.lambda_identity * c.lambda_cycle
                losses["identity"] = (identity_loss(m["G_AB"](real_b), real_b, weight)
                                      + identity_loss(m["G_BA"](real_a), real_a, weight))
        losses["culture"] = (self.culture_loss(fake_b.float(), self.profiles["B"])
                             + self.culture_loss(fake_a.float(), self.profiles["A"]))
        loss_g = sum(losses.values())
        if not self._finite(loss_g):
            return None
        self.optimizers["optim_G"].zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self._average_gradients("optim_G")
        self.scaler.step(self.optimizers["optim_G"])
        for name in ("D_A", "D_B"):
            self.models[name].requires_grad_(True)
        with self._autocast():
            loss_d = (discriminator_loss(m["D_A"](real_a), m["D_A"](self.pools["A"].query(fake_a)), c.gan_mode)
                      + discriminator_loss(m["D_B"](real_b), m["D_B"](self.pools["B"].query(fake_b)), c.gan_mode))
        if c.r1_gamma > 0:
            loss_d = loss_d + r1_penalty(m["D_A"], real_a, c.r1_gamma) + r1_penalty(m["D_B"], real_b, c.r1_gamma)
        if not self._finite(loss_d):
            return None
        self.optimizers["optim_D"].zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self._average_gradients("optim_D")
        self.scaler.step(self.optimizers["optim_D"])
        self.scaler.update()
        for scheduler in self.schedulers.values():
            scheduler.step()
        self.bad_steps = 0
        return {**{k: float(v.detach()) for k, v in losses.items()}, "G": float(loss_g.detach()),
                "D": float(loss_d.detach())}

    def _average_gradients(self, optimizer: str) -> None:
        """Data parallelism: the mean of the ranks' gradients, one all-reduce per optimiser step.
        (DistributedDataParallel's hooks expect each module to run once per backward; CycleGAN
        runs each generator three times, so the gradients are averaged here instead.)"""
        if self.world == 1:
            return
        parameters = [p for group in self.optimizers[optimizer].param_groups for p in group["params"]]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
        flat = torch._utils._flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= self.world
        for p, synced in zip(parameters, torch._utils._unflatten_dense_tensors(flat, grads)):
            p.grad = synced

    def _finite(self, loss: torch.Tensor) -> bool:
        if torch.isfinite(loss).all():
            return True
        self.bad_steps += 1
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        warnings.warn(f"step {self.step + 1}: non-finite loss, step skipped ({self.bad_steps} in a row)",
                      RuntimeWarning, stacklevel=3)
        if self.bad_steps >= self.config.max_bad_steps:
            path = self.save() if self.rank == 0 else None
            raise TrainingDiverged(f"{self.bad_steps} consecutive steps with a non-finite loss; the last good "
                                   f"state is saved in {path}")
        return False

    def fit(self, until: int | None = None) -> None:
        """Trains to config.steps (or `until`), logging to metrics.jsonl and checkpointing."""
        c = self.config
        last = min(c.steps, until or c.steps)
        memory = torch.channels_last if c.channels_last else torch.contiguous_format
        batches = zip(self._loader("A"), self._loader("B"))
        started, images = time.perf_counter(), 0
        while self.step < last:
            batch_a, batch_b = next(batches)
            real_a, real_b = (b["image"].to(self.device, non_blocking=True, memory_format=memory)
                              for b in (batch_a, batch_b))
            metrics = self.train_step(real_a, real_b)
            self.step += 1
            images += real_a.shape[0] * self.world
            if self.rank == 0 and metrics is not None and (self.step % c.log_every == 0 or self.step == last):
                rate = images / max(1e-9, time.perf_counter() - started)
                self._log({"step": self.step, **metrics, "images_per_s": rate,
                           "lr": self.schedulers["optim_G"].get_last_lr()[0]})
            if self.rank == 0 and (self.step % c.checkpoint_every == 0 or self.step == last):
                self.save()

    def _log(self, record: dict) -> None:
        with open(self.output / "metrics.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
        print(shown, flush=True)

    # ------------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        tensors, meta = {}, {"config": dataclasses.asdict(self.config), "optimizers": {}, "schedulers": {},
                             "python_rng": _jsonable(self.rng.getstate()), "scaler": self.scaler.state_dict(),
                             "bad_steps": self.bad_steps}
        for name, model in self.models.items():
            tensors.update({f"{name}.{k}": v for k, v in model.state_dict().items()})
        for name, optimizer in self.optimizers.items():
            state = optimizer.state_dict()
            for index, values in state["state"].items():
                for key, value in values.items():
                    tensors[f"{name}.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
            meta["optimizers"][name] = state["param_groups"]
        meta["schedulers"] = {name: s.state_dict() for name, s in self.schedulers.items()}
        for side, pool in self.pools.items():
            if pool.state() is not None:
                tensors[f"pool.{side}"] = pool.state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return checkpoints.save_checkpoint(self.checkpoints, self.step, tensors, meta, self.config.keep_last)

    def load(self, path: Path) -> None:
        tensors, meta = checkpoints.load_checkpoint(path)
        for name, model in self.models.items():
            checkpoints.load_module(model, tensors, name, path)
        for name, optimizer in self.optimizers.items():
            saved = checkpoints.subset(tensors, name)
            state: dict = {}
            for key, value in saved.items():
                index, field = key.split(".", 1)
                state.setdefault(int(index), {})[field] = value.to(self.device) if field != "step" else value
            optimizer.load_state_dict({"state": state, "param_groups": meta["optimizers"][name]})
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(meta["schedulers"][name])
        for side, pool in self.pools.items():
            pool.restore(tensors.get(f"pool.{side}"), self.device)
        self.rng.setstate(_tuple(meta["python_rng"]))
        self.scaler.load_state_dict(meta["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.step, self.bad_steps = meta["step"], meta["bad_steps"]


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuple(value):
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


def _device(name: str, rank: int) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but no CUDA device is available")
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def _distributed_setup(config: TrainConfig) -> tuple[int, int]:
    """(rank, world size): torchrun's environment starts the process group (NCCL on GPUs, gloo
    on CPUs); a plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        use_cuda = config.device != "cpu" and torch.cuda.is_available()
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return torch.distributed.get_rank(), world
