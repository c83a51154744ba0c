"""Fused convolution blocks (CycleGAN's conv + InstanceNorm + ReLU, PatchGAN's conv + LeakyReLU)
against the same layers in torch eager and torch.compile.

The shape is x's (N, C, H, W); each block fixes its own geometry: the CycleGAN residual conv
(C -> C, 3x3, reflect padding 1) and the PatchGAN downsampling conv (C -> 2C, 4x4, stride 2).
The convolution is ATen's on every side; what differs is the epilogue and its backward.
"""

import math

import _harness
import torch
import torch.nn.functional as F

from culturegan import ops

SLOPE = 0.2


def make_inputs(out_factor: int, kernel: int):
    def make(shape, dtype, device):
        c_in = shape[1]
        weight = torch.randn(out_factor * c_in, c_in, kernel, kernel, device=device) / math.sqrt(c_in * kernel**2)
        return (torch.randn(shape, device=device).to(dtype), weight.to(dtype),
                torch.randn(out_factor * c_in, device=device).to(dtype))

    return make


def eager_residual_conv(x, weight, bias):
    return F.relu(F.instance_norm(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)))


def fused_residual_conv(backend: str):
    def block(x, weight, bias):
        return ops.conv2d_instance_norm_act(x, weight, bias, 1, 1, "reflect", backend=backend)

    return block


def eager_patchgan_conv(x, weight, bias):
    return F.leaky_relu(F.conv2d(x, weight, bias, 2, 1), SLOPE)


def fused_patchgan_conv(backend: str):
    def block(x, weight, bias):
        return ops.conv2d_bias_leaky_relu(x, weight, bias, 2, 1, negative_slope=SLOPE, backend=backend)

    return block


def bytes_moved(out_factor: int, stride: int):
    """Input and output activations, read and written once each way (the weights are small)."""
    def count(shape, dtype, mode):
        x = math.prod(shape)
        y = x * out_factor // stride**2
        forward = (x + y) * dtype.itemsize
        return forward if mode == _harness.FORWARD else forward + 2 * (x + y) * dtype.itemsize

    return count


CPU_SHAPE = (1, 64, 128, 128)
# Convolutions sum C * k * k products in orders that differ between a conv with and without its
# bias and between backends: the sanity check against eager allows 256 ulps of 1.0.
CHECK_EPS = 256
COMPILE_MODE = "max-autotune-no-cudagraphs"  # on GPUs: Inductor's best convolution templates
GPU_TARGETS = (
    _harness.Target("cuda", _harness.TRAINING, "vs_eager", 1.3, dtype=torch.bfloat16),
    _harness.Target("cuda", _harness.TRAINING, "vs_compile", 1.0, dtype=torch.bfloat16),
)
CPU_TARGETS = (_harness.Target("cpu", _harness.TRAINING, "vs_eager", 1.0, shape=CPU_SHAPE, dtype=torch.float32),)

RESIDUAL = _harness.OpBench(
    "conv3x3_instance_norm_relu", eager_residual_conv, fused_residual_conv, make_inputs(1, 3), bytes_moved(1, 1),
    CPU_TARGETS + GPU_TARGETS, cpu_cases=((CPU_SHAPE, torch.float32),),
    gpu_cases=(((4, 256, 64, 64), torch.bfloat16), ((16, 256, 64, 64), torch.bfloat16),
               ((4, 256, 64, 64), torch.float32)), check_eps=CHECK_EPS, gpu_compile_mode=COMPILE_MODE)
PATCHGAN = _harness.OpBench(
    "conv4x4s2_leaky_relu", eager_patchgan_conv, fused_patchgan_conv, make_inputs(2, 4), bytes_moved(2, 2),
    CPU_TARGETS + GPU_TARGETS, cpu_cases=((CPU_SHAPE, torch.float32),),
    gpu_cases=(((4, 64, 128, 128), torch.bfloat16), ((16, 128, 64, 64), torch.bfloat16)), check_eps=CHECK_EPS, gpu_compile_mode=COMPILE_MODE)

test_residual_conv = _harness.make_test(RESIDUAL)
test_patchgan_conv = _harness.make_test(PATCHGAN)
