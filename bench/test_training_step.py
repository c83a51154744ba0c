"""Full CycleGAN training steps: two ResNet generators (resnet_9blocks), two PatchGAN
discriminators, the adversarial, cycle and identity losses, both Adam updates. culturegan's
training step (culturegan.training.objectives.CycleObjective on fused blocks, each backend)
against the same architecture and losses written in plain torch the way
pytorch-CycleGAN-and-pix2pix runs them, eager and under torch.compile. The time ratio is the
images/s ratio (the same batch); on CUDA the table also gives each provider's peak memory.

  cyclegan_training_step             with the culture loss, on both sides
  cyclegan_training_step_no_culture  without it, on both sides: the plain step is then
                                     pytorch-CycleGAN-and-pix2pix's own (below)

The plain step is that repository's: its networks as plain torch modules; six generator calls
(G_AB(real_A), G_BA(fake_B), G_BA(real_B), G_AB(fake_A) and the two identity calls); LSGAN
losses, cycle and identity L1 with lambdas 10 and 0.5 (x 10); torch.optim.Adam with its
defaults but CycleGAN's lr and betas. Like every baseline it is timed in NCHW (the reference's
layout) and in channels_last, and reported in the faster. Neither side keeps an image pool (the
reference's pool of 50 only swaps images) nor computes culturegan's line-structure loss.

culturegan's step differs from the plain one in three ways, all exact: the fused blocks; one
call for each network's independent applications (three generator calls instead of six, one
discriminator call for real and fake), which per-image networks allow (objectives._batched);
and the trainer's fused Adam. README gives the share of each.

Each provider trains its own copy of the same initial weights, so their losses drift apart
step by step: the harness's output check against eager is off here. The table's mode reads
"fwd": the timed call is the whole step (forward, backward and both updates).
"""

import dataclasses
import functools
import random

import _harness
import torch

from culturegan import ops
from culturegan.culture import CultureProfile, extract
from culturegan.losses import (
    CultureLoss,
    CultureLossWeights,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
)
from culturegan.models import NLayerDiscriminator, ResnetGenerator
from culturegan.training import TrainConfig
from culturegan.training.objectives import CycleObjective
from culturegan.training.trainer import adam


class TrainingStep:
    """A CycleGAN step on its own models and optimisers; returns the generators' loss. `backend`
    None is the plain torch step, a backend name culturegan's."""

    def __init__(self, device, dtype, memory_format, culture: bool, backend: str | None):
        fused = backend is not None
        torch.manual_seed(0)
        network = {"G": ResnetGenerator, "D": NLayerDiscriminator}
        self.models = {name: network[name[0]](fused=fused).to(device, memory_format=memory_format)
                       for name in ("G_AB", "G_BA", "D_A", "D_B")}
        m = self.models
        # culturegan's step uses its trainer's Adam (fused); the plain step torch's default one
        optimizer = (lambda ps: adam([{"params": ps, "lr": 2e-4}], (0.5, 0.999))) if fused else (
            lambda ps: torch.optim.Adam(ps, 2e-4, betas=(0.5, 0.999)))
        self.optim_G = optimizer([*m["G_AB"].parameters(), *m["G_BA"].parameters()])
        self.optim_D = optimizer([*m["D_A"].parameters(), *m["D_B"].parameters()])
        self.config = TrainConfig(data_root="unused", source="A", target="B", pool_size=0,
                                  lambda_culture=float(culture), lambda_structure=0.0).validate()
        self.culture = CultureLoss(CultureLossWeights(self.config.lambda_culture,
                                                      *self.config.culture_weights)).to(device)
        self.profile = CultureProfile.fit("target", extract(torch.rand(4, 3, 64, 64, device=device) * 2 - 1))
        self.objective = None
        if fused:  # culturegan's own training step
            self.objective = CycleObjective(self.config, self.culture, random.Random(0),
                                            profiles={"A": self.profile, "B": self.profile})
        self.autocast = dtype if dtype != torch.float32 else None
        self.backend = backend

    def _plain_generator_losses(self, real_a, real_b):
        m, c = self.models, self.config
        fake_b, fake_a = m["G_AB"](real_a), m["G_BA"](real_b)
        identity_weight = c.lambda_identity * c.lambda_cycle
        losses = {"G_adv": generator_loss(m["D_B"](fake_b)) + generator_loss(m["D_A"](fake_a)),
                  "cycle": cycle_loss(m["G_BA"](fake_b), real_a, c.lambda_cycle)
                  + cycle_loss(m["G_AB"](fake_a), real_b, c.lambda_cycle),
                  "identity": identity_loss(m["G_AB"](real_b), real_b, identity_weight)
                  + identity_loss(m["G_BA"](real_a), real_a, identity_weight)}
        if c.lambda_culture:
            losses["culture"] = self.culture(fake_b.float(), self.profile) + self.culture(fake_a.float(), self.profile)
        return losses, {"A": fake_a, "B": fake_b}

    def _plain_discriminator_loss(self, batch, fakes):
        m = self.models
        return sum(discriminator_loss(m[f"D_{side}"](batch[side]["image"]), m[f"D_{side}"](fakes[side].detach()))
                   for side in ("A", "B"))

    def __call__(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        batch = {"A": {"image": real_a}, "B": {"image": real_b}}
        o = self.objective
        with ops.use_backend(self.backend or "auto"), torch.autocast(real_a.device.type, self.autocast,
                                                                      enabled=self.autocast is not None):
            self.models["D_A"].requires_grad_(False)
            self.models["D_B"].requires_grad_(False)
            losses, fakes = (o.generator_losses(self.models, batch) if o else
                             self._plain_generator_losses(real_a, real_b))
            loss_g = sum(losses.values())
            self.optim_G.zero_grad(set_to_none=True)
            loss_g.backward()
            self.optim_G.step()
            self.models["D_A"].requires_grad_(True)
            self.models["D_B"].requires_grad_(True)
            loss_d = o.discriminator_loss(self.models, batch, fakes) if o else self._plain_discriminator_loss(batch,
                                                                                                             fakes)
            self.optim_D.zero_grad(set_to_none=True)
            loss_d.backward()
            self.optim_D.step()
        return loss_g.detach()


@functools.cache
def _step(device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format, culture: bool,
          backend: str | None) -> TrainingStep:
    return TrainingStep(device, dtype, memory_format, culture, backend)


def make_inputs(shape, dtype, device):
    # The images stay float32 (the models' weights are float32); dtype selects autocast's.
    return tuple(torch.rand(shape, device=device).mul(2).sub(1).to(dtype).contiguous(memory_format=torch.channels_last)
                 for _ in range(2))


def bytes_moved(shape, dtype, mode):
    return 0  # a training step's traffic is not one number


TARGETS = (
    _harness.Target("cuda", _harness.FORWARD, "vs_eager", 1.5),
    _harness.Target("cuda", _harness.FORWARD, "memory_vs_eager", 0.8),
    _harness.Target("cpu", _harness.FORWARD, "vs_eager", 1.2),
)


@dataclasses.dataclass(frozen=True)
class StepBench:
    name: str
    culture: bool  # the culture loss, on both sides

    def eager(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        step = _step(real_a.device, real_a.dtype, _harness.memory_format(real_a), self.culture, None)
        return step(real_a.float(), real_b.float())

    def fused(self, backend: str):
        def step(real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
            return _step(real_a.device, real_a.dtype, torch.channels_last, self.culture, backend)(real_a.float(),
                                                                                                 real_b.float())

        return step

    def bench(self) -> _harness.OpBench:
        return _harness.OpBench(
            self.name, self.eager, self.fused, make_inputs, bytes_moved, TARGETS,
            cpu_cases=(((1, 3, 64, 64), torch.float32),),
            gpu_cases=(((1, 3, 256, 256), torch.bfloat16), ((4, 3, 256, 256), torch.bfloat16)),
            modes=(_harness.FORWARD,), check_against_eager=False)


test_training_step = _harness.make_test(StepBench("cyclegan_training_step", True).bench())
test_training_step_no_culture = _harness.make_test(StepBench("cyclegan_training_step_no_culture", False).bench())
