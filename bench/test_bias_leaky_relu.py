"""bias_leaky_relu (StyleGAN2's bias_act with act='lrelu') against torch eager and torch.compile."""

import functools
import math

import _harness
import torch
import torch.nn.functional as F

from culturegan import ops

SLOPE, GAIN = 0.2, math.sqrt(2)  # StyleGAN2's lrelu
CPU_TARGET_SHAPE = (8, 64, 128, 128)


def eager(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x + bias.view(1, -1, 1, 1), SLOPE) * GAIN


def fused(backend: str):
    return functools.partial(ops.bias_leaky_relu, negative_slope=SLOPE, gain=GAIN, backend=backend)


def make_inputs(shape, dtype, device):
    return torch.randn(shape, dtype=dtype, device=device), torch.randn(shape[1], dtype=dtype, device=device)


def bytes_moved(shape, dtype, mode):
    # Forward reads x and bias and writes y; backward reads grad and y and writes grad_x.
    elements = math.prod(shape)
    forward = (2 * elements + shape[1]) * dtype.itemsize
    return forward if mode == _harness.FORWARD else forward + 3 * elements * dtype.itemsize


TARGETS = (
    _harness.Target("cpu", _harness.FORWARD, "vs_eager", 2.5, shape=CPU_TARGET_SHAPE, dtype=torch.float32),
    _harness.Target("cpu", _harness.TRAINING, "vs_eager", 2.0, shape=CPU_TARGET_SHAPE, dtype=torch.float32),
    _harness.Target("cuda", _harness.FORWARD, "copy_fraction", 0.85, min_tensor_bytes=64 << 20),
    _harness.Target("cuda", _harness.FORWARD, "vs_compile", 1.0),
    _harness.Target("cuda", _harness.TRAINING, "vs_eager", 2.0),
)

BENCH = _harness.OpBench("bias_leaky_relu", eager, fused, make_inputs, bytes_moved, TARGETS)
test_bias_leaky_relu = _harness.make_test(BENCH)
