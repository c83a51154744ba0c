"""Whole CycleGAN networks, discriminator(generator(x)), eager against culturegan.nn.fuse() and
torch.compile: ResnetGenerator (resnet_9blocks) and the basic PatchGAN discriminator, with the
default widths (ngf = ndf = 64).

Every provider runs the same weights: eager is the plain torch model (in the layout of its
input: the harness times NCHW and channels_last), compile is torch.compile of it, and each
backend is a fuse()d copy of the channels_last model whose fused blocks use that backend.
"""

import copy
import functools

import _harness
import torch

from culturegan.models import NLayerDiscriminator, ResnetGenerator
from culturegan.nn import FusedRun, fuse


class GeneratorThenDiscriminator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.generator, self.discriminator = ResnetGenerator(), NLayerDiscriminator()

    def forward(self, x):
        return self.discriminator(self.generator(x))


@functools.cache
def _plain(device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format) -> torch.nn.Module:
    torch.manual_seed(0)
    return GeneratorThenDiscriminator().to(device=device, dtype=dtype, memory_format=memory_format)


@functools.cache
def _fused(device: torch.device, dtype: torch.dtype, backend: str) -> torch.nn.Module:
    model = copy.deepcopy(_plain(device, dtype, torch.channels_last))
    fuse(model)
    for module in model.modules():
        if isinstance(module, FusedRun):
            module.block.backend = backend
    return model


def eager(x: torch.Tensor) -> torch.Tensor:
    return _plain(x.device, x.dtype, _harness.memory_format(x))(x)


def fused(backend: str):
    def network(x: torch.Tensor) -> torch.Tensor:
        return _fused(x.device, x.dtype, backend)(x)

    return network


def make_inputs(shape, dtype, device):
    return (torch.randn(shape, device=device).to(dtype).contiguous(memory_format=torch.channels_last),)


def bytes_moved(shape, dtype, mode):
    return 0  # a network's traffic is not one number: no bandwidth column


TARGETS = (
    _harness.Target("cuda", _harness.TRAINING, "vs_eager", 1.3, dtype=torch.bfloat16),
    _harness.Target("cuda", _harness.TRAINING, "memory_vs_eager", 0.8, dtype=torch.bfloat16),
    _harness.Target("cpu", _harness.TRAINING, "vs_eager", 1.0, dtype=torch.float32),
)
NETWORKS = _harness.OpBench(
    "cyclegan_G_then_D", eager, fused, make_inputs, bytes_moved, TARGETS,
    cpu_cases=(((1, 3, 64, 64), torch.float32),),
    gpu_cases=(((4, 3, 256, 256), torch.bfloat16), ((1, 3, 256, 256), torch.float32)), check_eps=4096)

test_networks = _harness.make_test(NETWORKS)
