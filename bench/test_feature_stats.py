"""feature_stats (AdaIN / instance-norm statistics) against torch eager and torch.compile.

The op returns (mean, std); the harness times callables returning one tensor (checked against
eager, and given one gradient in fwd+bwd), so every provider returns torch.stack((mean, std)),
a [2, N, C] tensor: a copy of 2*N*C elements, negligible beside the N*C*H*W read.
"""

import math

import _harness
import torch

from culturegan import ops

EPS = 1e-5  # instance normalisation's, the op's default (biased variance)
CPU_TARGET_SHAPE = (8, 64, 128, 128)


def eager(x: torch.Tensor) -> torch.Tensor:
    return torch.stack((x.mean((2, 3)), torch.sqrt(x.var((2, 3), unbiased=False) + EPS)))


def fused(backend: str):
    def feature_stats(x: torch.Tensor) -> torch.Tensor:
        return torch.stack(ops.feature_stats(x, False, EPS, backend=backend))

    return feature_stats


def make_inputs(shape, dtype, device):
    return (torch.randn(shape, dtype=dtype, device=device),)


def bytes_moved(shape, dtype, mode):
    # Forward reads x and writes mean and std; backward reads x and the two output gradients
    # (and mean, std) and writes grad_x.
    elements, stats = math.prod(shape), 2 * shape[0] * shape[1]
    forward = (elements + stats) * dtype.itemsize
    return forward if mode == _harness.FORWARD else forward + (2 * elements + 2 * stats) * dtype.itemsize


TARGETS = (
    _harness.Target("cpu", _harness.FORWARD, "vs_eager", 2.0, shape=CPU_TARGET_SHAPE, dtype=torch.float32),
)
CPU_CASES = (
    (CPU_TARGET_SHAPE, torch.float32),
    ((8, 256, 64, 64), torch.float32),
    (CPU_TARGET_SHAPE, torch.bfloat16),
)

# GPU: few cases, so that gpu_check.sh's benchmarks (which compile every case) fit its time.
GPU_CASES = (
    ((8, 256, 64, 64), torch.float32),
    ((8, 256, 64, 64), torch.bfloat16),
    ((8, 64, 256, 256), torch.float32),
    ((8, 512, 128, 128), torch.float32),
)

BENCH = _harness.OpBench("feature_stats", eager, fused, make_inputs, bytes_moved, TARGETS, cpu_cases=CPU_CASES,
                         gpu_cases=GPU_CASES)
test_feature_stats = _harness.make_test(BENCH)
