"""Fused convolution blocks against the same layers in torch eager and torch.compile, at the
shapes of CycleGAN's generator and PatchGAN discriminator.

Each block fixes its geometry; the benchmark shape is x's (N, C_in, H, W):
  stem          7x7, reflect 3, C_in -> 64, InstanceNorm, ReLU       (generator input, 256x256)
  down          3x3, stride 2, C -> 2C, InstanceNorm, ReLU           (generator encoder)
  residual      3x3, reflect 1, C -> C, InstanceNorm, ReLU           (generator residual blocks, C=256 at 64x64)
  patchgan      4x4, stride 2, C -> 2C, LeakyReLU 0.2                (discriminator)
The convolution is ATen's on the cuda/cpu backends and Triton's implicit GEMM on triton; what
differs from eager is the epilogue and the backward around it.
"""

import dataclasses
import math
from collections.abc import Callable

import _harness
import torch
import torch.nn.functional as F

from culturegan import ops

SLOPE = 0.2
# Convolutions sum C * k * k products in orders that differ between a conv with and without its
# bias and between backends: the sanity check against eager allows 256 ulps of 1.0.
CHECK_EPS = 256
COMPILE_MODE = "max-autotune-no-cudagraphs"  # on GPUs: Inductor's best convolution templates
CPU_SHAPE = (1, 64, 128, 128)
CPU_TARGETS = (_harness.Target("cpu", _harness.TRAINING, "vs_eager", 1.0, shape=CPU_SHAPE, dtype=torch.float32),)
GPU_TARGETS = (
    _harness.Target("cuda", _harness.TRAINING, "vs_eager", 1.3, dtype=torch.bfloat16),
    _harness.Target("cuda", _harness.TRAINING, "vs_compile", 1.0, dtype=torch.bfloat16),
)


@dataclasses.dataclass(frozen=True)
class Block:
    name: str
    kernel: int
    stride: int
    padding: int
    padding_mode: str
    out_channels: Callable[[int], int]
    norm: bool  # InstanceNorm + ReLU, else LeakyReLU
    cpu_cases: tuple = ()
    gpu_cases: tuple = ()

    def make_inputs(self, shape, dtype, device):
        c_in, c_out = shape[1], self.out_channels(shape[1])
        weight = torch.randn(c_out, c_in, self.kernel, self.kernel, device=device) / math.sqrt(c_in * self.kernel**2)
        x = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
        return x, weight.to(dtype), torch.randn(c_out, device=device).to(dtype)

    def eager(self, x, weight, bias):
        if self.padding_mode == "reflect":
            x = F.pad(x, (self.padding,) * 4, mode="reflect")
        z = F.conv2d(x, weight, bias, self.stride, 0 if self.padding_mode == "reflect" else self.padding)
        return F.relu(F.instance_norm(z)) if self.norm else F.leaky_relu(z, SLOPE)

    def fused(self, backend: str):
        def block(x, weight, bias):
            geometry = (self.stride, self.padding, self.padding_mode)
            if self.norm:
                return ops.conv2d_instance_norm_act(x, weight, bias, *geometry, backend=backend)
            return ops.conv2d_bias_leaky_relu(x, weight, bias, *geometry, negative_slope=SLOPE, backend=backend)

        return block

    def bytes_moved(self, shape, dtype, mode):
        """Input and output activations, once each way (weights are small)."""
        x = math.prod(shape)
        y = shape[0] * self.out_channels(shape[1]) * (shape[2] // self.stride) * (shape[3] // self.stride)
        forward = (x + y) * dtype.itemsize
        return forward if mode == _harness.FORWARD else 3 * forward

    def bench(self) -> _harness.OpBench:
        targets = (CPU_TARGETS if self.cpu_cases else ()) + GPU_TARGETS
        return _harness.OpBench(self.name, self.eager, self.fused, self.make_inputs, self.bytes_moved, targets,
                                cpu_cases=self.cpu_cases, gpu_cases=self.gpu_cases, check_eps=CHECK_EPS,
                                gpu_compile_mode=COMPILE_MODE)


BF16, FP32 = torch.bfloat16, torch.float32
BLOCKS = (
    Block("stem7x7_in_relu", 7, 1, 3, "reflect", lambda c: 64, True,
          gpu_cases=(((1, 3, 256, 256), BF16), ((4, 3, 256, 256), BF16), ((16, 3, 256, 256), BF16))),
    Block("down3x3s2_in_relu", 3, 2, 1, "zeros", lambda c: 2 * c, True,
          gpu_cases=(((4, 64, 256, 256), BF16), ((4, 128, 128, 128), BF16), ((16, 128, 128, 128), BF16))),
    Block("residual3x3_in_relu", 3, 1, 1, "reflect", lambda c: c, True, cpu_cases=((CPU_SHAPE, FP32),),
          gpu_cases=(((1, 256, 64, 64), BF16), ((4, 256, 64, 64), BF16), ((16, 256, 64, 64), BF16),
                     ((4, 256, 64, 64), FP32))),
    Block("patchgan4x4s2_lrelu", 4, 2, 1, "zeros", lambda c: 2 * c, False, cpu_cases=((CPU_SHAPE, FP32),),
          gpu_cases=(((4, 64, 128, 128), BF16), ((16, 128, 64, 64), BF16), ((4, 256, 32, 32), BF16))),
)

for _block in BLOCKS:
    globals()[f"test_{_block.name}"] = _harness.make_test(_block.bench())
