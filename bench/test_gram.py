"""gram, culture_stats and gram_loss (Gatys style statistics and style loss) against torch eager
and torch.compile.

Every provider computes the same thing with the ops' defaults (normalize="hw", center=False,
biased variance, eps=1e-5). culture_stats returns (mean, std, gram); the harness times callables
returning one tensor (checked against eager, and given one gradient in fwd+bwd), so its providers
return torch.cat of the three flattened: a copy of 2*N*C + N*C*C elements, small beside x.
gram_loss's inputs are x and a (C, C) target; in fwd+bwd the harness makes both leaves, so every
provider also computes the (cheap, C x C) gradient of the target.
"""

import math

import _harness
import torch

from culturegan import ops

EPS = 1e-5
CPU_SHAPES = ((8, 64, 128, 128), (8, 256, 64, 64))  # C=64 at 128^2, C=256 at 64^2; N=8
CPU_CASES = tuple((shape, torch.float32) for shape in CPU_SHAPES)
# GPU: the goal shape (C=256 at 64^2) in float32 and bfloat16, large C for the matmul-rate goal,
# and a 128^2 bfloat16 batch of 16; few cases, so that gpu_check.sh's benchmarks (which compile
# every case) fit its time. float16 is left out: H*W * x^2 overflows float16 in eager's own bmm.
GPU_CASES = (
    ((8, 256, 64, 64), torch.float32),
    ((8, 256, 64, 64), torch.bfloat16),
    ((8, 512, 32, 32), torch.float32),
    ((8, 512, 128, 128), torch.float32),
    ((16, 128, 128, 128), torch.bfloat16),
)


def eager_gram(x: torch.Tensor) -> torch.Tensor:
    f = x.flatten(2)
    return torch.bmm(f, f.transpose(1, 2)) / f.shape[2]


def eager_culture_stats(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean((2, 3))
    std = torch.sqrt(x.var((2, 3), unbiased=False) + EPS)
    return torch.cat([mean.flatten(), std.flatten(), eager_gram(x).flatten()])


def eager_gram_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((eager_gram(x) - target) ** 2).mean()


def fused_gram(backend: str):
    def gram(x: torch.Tensor) -> torch.Tensor:
        return ops.gram(x, backend=backend)

    return gram


def fused_culture_stats(backend: str):
    def culture_stats(x: torch.Tensor) -> torch.Tensor:
        mean, std, gram = ops.culture_stats(x, False, EPS, backend=backend)
        return torch.cat([mean.flatten(), std.flatten(), gram.flatten()])

    return culture_stats


def fused_gram_loss(backend: str):
    def gram_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ops.gram_loss(x, target, backend=backend)

    return gram_loss


def make_x(shape, dtype, device):
    return (torch.randn(shape, dtype=dtype, device=device),)


def make_x_and_target(shape, dtype, device):
    # A target of the magnitude of x's Gram matrices (a style image's), so the loss is O(1).
    channels = shape[1]
    return (torch.randn(shape, dtype=dtype, device=device),
            torch.eye(channels, dtype=dtype, device=device) + 0.1 * torch.randn(channels, channels, dtype=dtype,
                                                                                device=device))


def gram_bytes(shape, dtype, mode):
    # Forward reads x once and writes the N*C*C Gram matrices; backward reads their gradient
    # and x and writes grad_x.
    elements, grams = math.prod(shape), shape[0] * shape[1] ** 2
    forward = (elements + grams) * dtype.itemsize
    return forward if mode == _harness.FORWARD else forward + (2 * elements + grams) * dtype.itemsize


def culture_stats_bytes(shape, dtype, mode):
    # Forward reads x once and writes mean, std (N*C each) and the Gram matrices; backward
    # reads the three gradients and x and writes grad_x.
    elements, outputs = math.prod(shape), 2 * shape[0] * shape[1] + shape[0] * shape[1] ** 2
    forward = (elements + outputs) * dtype.itemsize
    return forward if mode == _harness.FORWARD else forward + (2 * elements + outputs) * dtype.itemsize


def gram_loss_bytes(shape, dtype, mode):
    # Forward reads x once and the C*C target; backward reads x and writes grad_x and the
    # target's gradient (the N*C*C Gram matrices, if kept, are negligible beside x).
    elements, target = math.prod(shape), shape[1] ** 2
    forward = (elements + target) * dtype.itemsize
    return forward if mode == _harness.FORWARD else forward + (2 * elements + target) * dtype.itemsize


def gram_flops(shape, dtype, mode):
    # F F^T is 2*N*C^2*HW; the backward is one more GEMM of the same size, (dG + dG^T) F.
    forward = 2 * shape[0] * shape[1] ** 2 * math.prod(shape[2:])
    return forward if mode == _harness.FORWARD else 2 * forward


C64, C256 = CPU_SHAPES
GPU_C256 = (8, 256, 64, 64)


def gpu_targets(mode: str) -> tuple:
    """The GPU goals at C=256, H*W=64^2, float32 and bfloat16: 1.5x eager and 1.1x compile."""
    return tuple(_harness.Target("cuda", mode, metric, minimum, shape=GPU_C256, dtype=dtype)
                 for metric, minimum in (("vs_eager", 1.5), ("vs_compile", 1.1))
                 for dtype in (torch.float32, torch.bfloat16))


GRAM_TARGETS = (  # large-C Gram against the measured matmul rate of its dtype
    _harness.Target("cuda", _harness.FORWARD, "matmul_fraction", 0.6, shape=(8, 512, 128, 128)),
    _harness.Target("cuda", _harness.FORWARD, "matmul_fraction", 0.6, shape=(8, 512, 32, 32)),
)
CULTURE_STATS_TARGETS = (
    _harness.Target("cpu", _harness.FORWARD, "vs_eager", 2.0, shape=C64, dtype=torch.float32),
    _harness.Target("cpu", _harness.FORWARD, "vs_eager", 1.3, shape=C256, dtype=torch.float32),
    *gpu_targets(_harness.TRAINING),
)
GRAM_LOSS_TARGETS = (
    _harness.Target("cpu", _harness.TRAINING, "vs_eager", 1.5, shape=C256, dtype=torch.float32),
    *gpu_targets(_harness.TRAINING),
)

GRAM = _harness.OpBench("gram", eager_gram, fused_gram, make_x, gram_bytes, GRAM_TARGETS, cpu_cases=CPU_CASES,
                        gpu_cases=GPU_CASES, flops=gram_flops)
CULTURE_STATS = _harness.OpBench("culture_stats", eager_culture_stats, fused_culture_stats, make_x,
                                 culture_stats_bytes, CULTURE_STATS_TARGETS, cpu_cases=CPU_CASES, gpu_cases=GPU_CASES,
                                 flops=gram_flops)
GRAM_LOSS = _harness.OpBench("gram_loss", eager_gram_loss, fused_gram_loss, make_x_and_target, gram_loss_bytes,
                             GRAM_LOSS_TARGETS, cpu_cases=CPU_CASES, gpu_cases=GPU_CASES, flops=gram_flops)

test_gram = _harness.make_test(GRAM)
test_culture_stats = _harness.make_test(CULTURE_STATS)
test_gram_loss = _harness.make_test(GRAM_LOSS)
