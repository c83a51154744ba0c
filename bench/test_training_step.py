"""One full culture-aware CycleGAN training step: two ResNet generators (resnet_9blocks), two
PatchGAN discriminators, the adversarial, cycle, identity and culture losses, both Adam
updates. culturegan's fused blocks (each backend) against the same architecture in plain torch
eager and under torch.compile. The time ratio is the images/s ratio (the same batch); on CUDA
the table also gives each provider's peak memory.

Each provider trains its own copy of the same initial weights, so their losses drift apart
step by step: the harness's output check against eager is off here. The table's mode reads
"fwd": the timed call is the whole step (forward, backward and both updates).
"""

import functools

import _harness
import torch

from culturegan import ops
from culturegan.culture import CultureProfile, extract
from culturegan.losses import CultureLoss, cycle_loss, discriminator_loss, generator_loss, identity_loss
from culturegan.models import NLayerDiscriminator, ResnetGenerator


class TrainingStep:
    """A CycleGAN step on its own models and optimisers; returns the generators' loss."""

    def __init__(self, device, dtype, fused: bool, backend: str | None):
        torch.manual_seed(0)
        self.G_AB, self.G_BA = (ResnetGenerator(fused=fused).to(device, memory_format=torch.channels_last)
                                for _ in range(2))
        self.D_A, self.D_B = (NLayerDiscriminator(fused=fused).to(device, memory_format=torch.channels_last)
                              for _ in range(2))
        self.optim_G = torch.optim.Adam([*self.G_AB.parameters(), *self.G_BA.parameters()], 2e-4, betas=(0.5, 0.999))
        self.optim_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], 2e-4, betas=(0.5, 0.999))
        self.profile = CultureProfile.fit("target", extract(torch.rand(4, 3, 64, 64, device=device) * 2 - 1))
        self.culture = CultureLoss().to(device)
        self.autocast = dtype if dtype != torch.float32 else None
        self.backend = backend

    def __call__(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        with ops.use_backend(self.backend or "auto"), torch.autocast(real_a.device.type, self.autocast,
                                                                      enabled=self.autocast is not None):
            fake_b, fake_a = self.G_AB(real_a), self.G_BA(real_b)
            loss_g = (generator_loss(self.D_B(fake_b)) + generator_loss(self.D_A(fake_a))
                      + cycle_loss(self.G_BA(fake_b), real_a) + cycle_loss(self.G_AB(fake_a), real_b)
                      + identity_loss(self.G_AB(real_b), real_b) + identity_loss(self.G_BA(real_a), real_a)
                      + self.culture(fake_b.float(), self.profile))
            self.optim_G.zero_grad(set_to_none=True)
            loss_g.backward()
            self.optim_G.step()
            loss_d = (discriminator_loss(self.D_A(real_a), self.D_A(fake_a.detach()))
                      + discriminator_loss(self.D_B(real_b), self.D_B(fake_b.detach())))
            self.optim_D.zero_grad(set_to_none=True)
            loss_d.backward()
            self.optim_D.step()
        return loss_g.detach()


@functools.cache
def _step(device: torch.device, dtype: torch.dtype, fused: bool, backend: str | None) -> TrainingStep:
    return TrainingStep(device, dtype, fused, backend)


def eager(real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
    return _step(real_a.device, real_a.dtype, False, None)(real_a.float(), real_b.float())


def fused(backend: str):
    def step(real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        return _step(real_a.device, real_a.dtype, True, backend)(real_a.float(), real_b.float())

    return step


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
TRAINING_STEP = _harness.OpBench(
    "cyclegan_training_step", eager, fused, make_inputs, bytes_moved, TARGETS,
    cpu_cases=(((1, 3, 64, 64), torch.float32),),
    gpu_cases=(((1, 3, 256, 256), torch.bfloat16), ((4, 3, 256, 256), torch.bfloat16)),
    modes=(_harness.FORWARD,), check_against_eager=False)

test_training_step = _harness.make_test(TRAINING_STEP)
