"""upfirdn2d at StyleGAN2's resampling steps against NVlabs' reference path (zero insertion, padding,
a depthwise conv2d, striding: ops.upfirdn2d_reference, as their _upfirdn2d_ref) in torch eager
and torch.compile. All three use the 4x4 [1, 3, 3, 1] filter:
  upsample2d     up 2, pad [2, 1], gain 4       synthesis: the skip image, a feature map
  downsample2d   down 2, pad [1, 1]             discriminator: the resnet skip, before conv1
  filter2d       pad [2, 1]                     a blur at the same size
Each runs on inputs made contiguous and again on channels_last ones (the plain torch baselines are
timed in both layouts either way, the faster reported).
"""

import dataclasses
import functools
from collections.abc import Callable

import _harness
import torch

from culturegan import ops

FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16
LAYOUT_NAMES = {torch.contiguous_format: "nchw", torch.channels_last: "channels_last"}
TARGETS = (
    _harness.Target("cpu", _harness.FORWARD, "vs_eager", 1.5),
    _harness.Target("cpu", _harness.TRAINING, "vs_eager", 1.5),
    _harness.Target("cuda", _harness.FORWARD, "vs_eager", 1.5),
    _harness.Target("cuda", _harness.TRAINING, "vs_eager", 1.5),
    _harness.Target("cuda", _harness.FORWARD, "vs_compile", 1.0),
    _harness.Target("cuda", _harness.TRAINING, "vs_compile", 1.0),
)


@functools.cache
def binomial_filter(device: torch.device) -> torch.Tensor:
    return ops.setup_filter([1, 3, 3, 1], device=device)


@dataclasses.dataclass(frozen=True)
class Resampling:
    name: str
    public: Callable  # ops.upsample2d, ops.downsample2d or ops.filter2d
    up: int
    down: int
    padding: tuple[int, int, int, int]  # what the public function pads with the 4x4 filter
    gain: float
    cpu_shapes: tuple = ()
    gpu_shapes: tuple = ()

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        return ops.upfirdn2d_reference(x, binomial_filter(x.device), self.up, self.down, self.padding, False,
                                       self.gain)

    def fused(self, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: self.public(x, binomial_filter(x.device), backend=backend)

    def bytes_moved(self, shape, dtype, mode) -> int:
        """x and y once each (and grad y, grad x in the backward)."""
        n, c, h, w = shape
        forward = (n * c * h * w + n * c * (h * self.up // self.down) * (w * self.up // self.down)) * dtype.itemsize
        return forward if mode == _harness.FORWARD else 2 * forward

    def bench(self, layout: torch.memory_format) -> _harness.OpBench:
        def make_inputs(shape, dtype, device):
            return (torch.randn(shape, device=device).to(dtype).contiguous(memory_format=layout),)

        cpu_cases = tuple((shape, FP32) for shape in self.cpu_shapes)
        gpu_cases = tuple((shape, dtype) for shape in self.gpu_shapes for dtype in (FP32, BF16, FP16))
        return _harness.OpBench(f"{self.name}_{LAYOUT_NAMES[layout]}", self.eager, self.fused, make_inputs,
                                self.bytes_moved, TARGETS, cpu_cases=cpu_cases, gpu_cases=gpu_cases)


RESAMPLINGS = (
    # 256 px config-f synthesis (b64's input, 512 channels at batch 32), the 1024 px model's 512
    # block (64 channels) and its skip image (3 channels).
    Resampling("upsample2d", ops.upsample2d, 2, 1, (2, 1, 2, 1), 4.0, cpu_shapes=((4, 128, 32, 32),),
               gpu_shapes=((32, 512, 32, 32), (4, 64, 256, 256), (4, 3, 512, 512))),
    # The discriminator's resnet skips: 256 px at batch 32, 1024 px at batch 4.
    Resampling("downsample2d", ops.downsample2d, 1, 2, (1, 1, 1, 1), 1.0, cpu_shapes=((4, 64, 128, 128),),
               gpu_shapes=((32, 256, 64, 64), (4, 32, 1024, 1024))),
    # A blur of 256 px features at batch 32, and of the 1024 px model's 512 block.
    Resampling("filter2d", ops.filter2d, 1, 1, (2, 1, 2, 1), 1.0, cpu_shapes=((4, 64, 128, 128),),
               gpu_shapes=((32, 256, 64, 64), (4, 64, 512, 512))),
)

for _resampling in RESAMPLINGS:
    for _layout in LAYOUT_NAMES:
        _bench = _resampling.bench(_layout)
        globals()[f"test_{_bench.name}"] = _harness.make_test(_bench)
