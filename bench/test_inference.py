"""Inference throughput of the CycleGAN resnet_9blocks generator: culturegan's fused blocks
(each backend) against the same architecture in plain torch eager and under torch.compile,
under no_grad (bfloat16 cases run under autocast, as `culturegan transfer --dtype bf16` does).
The time ratio is the images/s ratio.

Two benchmarks: whole images (256^2 and 512^2), and one large image in overlapping tiles
(4096^2 in 512-pixel tiles on GPU; 256^2 in 128-pixel tiles on the CPU). The tiled fused path
is culturegan.transfer's: a statistics pass on the image downscaled to 1 megapixel, then the
tiles normalised with those statistics. The eager and compiled baselines tile the plain
generator, each tile normalised on its own statistics (what tiling a torch model gives without
culturegan; less work, and visible seams), so the tiled comparison favours the baselines.
"""

import functools

import _harness
import torch

from culturegan import ops
from culturegan.models import ResnetGenerator
from culturegan.transfer.tiling import run_tiled, run_tiled_like_whole

STATS_PIXELS = 1024 * 1024


@functools.cache
def _generator(device: torch.device, memory_format: torch.memory_format, fused: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return ResnetGenerator(fused=fused).to(device, memory_format=memory_format).eval()


def _plain_generator(x: torch.Tensor) -> torch.nn.Module:
    """The plain torch generator in x's layout (the harness times the baselines in NCHW and channels_last)."""
    return _generator(x.device, _harness.memory_format(x), False)


def _fused_generator(x: torch.Tensor) -> torch.nn.Module:
    return _generator(x.device, torch.channels_last, True)


def _autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, torch.bfloat16, enabled=x.dtype == torch.bfloat16)


def _tile(x: torch.Tensor) -> int:
    return 512 if x.shape[-1] >= 2048 else x.shape[-1] // 2


@torch.no_grad()
def eager(x: torch.Tensor) -> torch.Tensor:
    with _autocast(x):
        return _plain_generator(x)(x.float())


def fused(backend: str):
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        with ops.use_backend(backend), _autocast(x):
            return _fused_generator(x)(x.float())

    return run


@torch.no_grad()
def eager_tiled(x: torch.Tensor) -> torch.Tensor:
    with _autocast(x):
        return run_tiled(_plain_generator(x), x.float(), _tile(x), 64)


def fused_tiled(backend: str):
    @torch.no_grad()
    def run(x: torch.Tensor) -> torch.Tensor:
        generator = _fused_generator(x)
        with ops.use_backend(backend), _autocast(x):
            return run_tiled_like_whole(generator, generator, x.float(), _tile(x), 64, STATS_PIXELS)

    return run


def make_inputs(shape, dtype, device):
    return (torch.rand(shape, device=device).mul(2).sub(1).to(dtype).contiguous(memory_format=torch.channels_last),)


def bytes_moved(shape, dtype, mode):
    return 0  # a whole network's traffic is not one number


TARGETS = (_harness.Target("cuda", _harness.FORWARD, "vs_eager", 1.2),)
INFERENCE = _harness.OpBench(
    "cyclegan_inference", eager, fused, make_inputs, bytes_moved, TARGETS,
    cpu_cases=(((1, 3, 256, 256), torch.float32),),
    gpu_cases=tuple(((n, 3, s, s), dtype) for n, s in ((1, 256), (8, 256), (1, 512))
                    for dtype in (torch.float32, torch.bfloat16)),
    modes=(_harness.FORWARD,), check_eps=1024, gpu_compile_mode="max-autotune-no-cudagraphs")
TILED = _harness.OpBench(
    "cyclegan_inference_tiled", eager_tiled, fused_tiled, make_inputs, bytes_moved, (),
    cpu_cases=(((1, 3, 256, 256), torch.float32),),
    gpu_cases=(((1, 3, 4096, 4096), torch.bfloat16), ((1, 3, 4096, 4096), torch.float32)),
    modes=(_harness.FORWARD,), check_against_eager=False)

test_inference = _harness.make_test(INFERENCE)
test_inference_tiled = _harness.make_test(TILED)
