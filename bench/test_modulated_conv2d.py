"""modulated_conv2d (StyleGAN2's synthesis convolutions) against NVlabs' eager code and torch.compile.

The benchmark shape is x's (N, C_in, H, W); each layer fixes the rest, as StyleGAN2's
SynthesisLayer calls it (styles from the affine layer, noise (N, 1, H', W') added):
  conv1      3x3, padding 1, C -> C, demodulated                      (a block's second convolution)
  conv0_up   3x3, up 2 with the [1, 3, 3, 1] filter, C -> C or C / 2    (a block's first convolution)
The eager baseline is NVlabs' networks.modulated_conv2d in plain torch, with the choice its
layers make: one grouped convolution over the N modulated weights (fused_modconv) when not
training and x is float32 (or N == 1), else x * s, the shared-weight convolution, * d. In both
it materialises the N modulated weights to get d, and float16 pre-normalises the weight and
styles. Its upsampling is conv2d_resample's order: a transposed convolution, then the blur as
a padded depthwise convolution (NVlabs' pure-torch upfirdn2d; its CUDA plugin is not timed).
"""

import dataclasses
import functools
import math
from collections.abc import Callable

import _harness
import torch
import torch.nn.functional as F

from culturegan import ops

BLUR_TAPS = [1, 3, 3, 1]
# Folded and grouped convolutions sum C * 9 products in different orders: 256 ulps of 1.0.
CHECK_EPS = 256
COMPILE_MODE = "max-autotune-no-cudagraphs"  # on GPUs: Inductor's best convolution templates
TARGETS = (
    _harness.Target("cuda", _harness.FORWARD, "vs_eager", 1.2),
    _harness.Target("cuda", _harness.TRAINING, "vs_eager", 1.2),
)


@functools.cache
def blur_filter(device: torch.device) -> torch.Tensor:
    return ops.setup_filter(BLUR_TAPS, device=device)


def _eager_convolution(x: torch.Tensor, weight: torch.Tensor, up: int, groups: int) -> torch.Tensor:
    """NVlabs' conv2d_resample for StyleGAN2's 3x3 layers (padding 1; up layers pass
    flip_weight=False): F.conv2d, or a transposed convolution with per-group transposed weights
    and the 4x4 blur with gain 4 as a padded depthwise convolution."""
    if up == 1:
        return F.conv2d(x, weight, padding=1, groups=groups)
    out_channels, in_per_group = weight.shape[:2]
    weight = weight.reshape(groups, out_channels // groups, in_per_group, 3, 3).transpose(1, 2)
    x = F.conv_transpose2d(x, weight.reshape(groups * in_per_group, out_channels // groups, 3, 3), stride=up,
                           groups=groups)
    blur = (blur_filter(x.device) * up ** 2).to(x.dtype).expand(x.shape[1], 1, 4, 4)
    return F.conv2d(F.pad(x, [1, 1, 1, 1]), blur, groups=x.shape[1])


def nvlabs_modulated_conv2d(x, weight, styles, noise, up: int) -> torch.Tensor:
    """NVlabs' networks.modulated_conv2d with demodulation and noise, fused_modconv chosen as
    its layers choose it (see the module docstring)."""
    batch = x.shape[0]
    training = any(t.requires_grad for t in (x, weight, styles))
    fused = not training and (x.dtype == torch.float32 or batch == 1)
    if x.dtype == torch.float16:  # NVlabs' pre-normalisation against float16 overflow
        weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.abs().amax(dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.abs().amax(dim=1, keepdim=True)
    modulated = weight[None] * styles[:, None, :, None, None]
    demodulation = (modulated.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if not fused:
        y = _eager_convolution(x * styles.to(x.dtype)[:, :, None, None], weight.to(x.dtype), up, 1)
        return torch.addcmul(noise.to(x.dtype), y, demodulation.to(x.dtype)[:, :, None, None])
    modulated = (modulated * demodulation[:, :, None, None, None]).reshape(-1, *weight.shape[1:])
    y = _eager_convolution(x.reshape(1, -1, *x.shape[2:]), modulated.to(x.dtype), up, batch)
    return y.reshape(batch, -1, *y.shape[2:]) + noise


@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    up: int
    out_channels: Callable[[int], int]
    cpu_cases: tuple
    gpu_cases: tuple

    def make_inputs(self, shape, dtype, device):
        """x and noise in dtype; the weight (stored N(0, 1), as StyleGAN2's) and the styles
        (near the affine layer's bias init 1) in float32, as NVlabs' fp16 layers pass them."""
        batch, c_in, height, width = shape
        x = torch.randn(shape, device=device).to(dtype)
        weight = torch.randn(self.out_channels(c_in), c_in, 3, 3, device=device)
        styles = 1 + 0.5 * torch.randn(batch, c_in, device=device)
        noise = torch.randn(batch, 1, height * self.up, width * self.up, device=device).to(dtype)
        return x, weight, styles, noise

    def eager(self, x, weight, styles, noise):
        return nvlabs_modulated_conv2d(x, weight, styles, noise, self.up)

    def fused(self, backend: str):
        def layer(x, weight, styles, noise):
            return ops.modulated_conv2d(x, weight, styles, noise, up=self.up, padding=1,
                                        resample_filter=blur_filter(x.device), flip_weight=self.up == 1,
                                        backend=backend)

        return layer

    def sizes(self, shape, dtype) -> tuple[int, int, int]:
        """Bytes of x, of y and of the float32 weight."""
        batch, c_in, height, width = shape
        c_out = self.out_channels(c_in)
        x = math.prod(shape) * dtype.itemsize
        y = batch * c_out * height * width * self.up ** 2 * dtype.itemsize
        return x, y, c_out * c_in * 9 * 4

    def bytes_moved(self, shape, dtype, mode):
        """x, y, noise (y's size over C_out) and the weight once; the backward reads grad y and
        x and writes grad x and the weight's gradient (the styles are small)."""
        x, y, weight = self.sizes(shape, dtype)
        forward = x + y + y // self.out_channels(shape[1]) + weight
        return forward if mode == _harness.FORWARD else forward + y + 2 * x + weight

    def flops(self, shape, dtype, mode):
        """The convolution's multiply-adds (per input pixel for the transposed one), x3 with its backward."""
        batch, c_in, height, width = shape
        forward = 2 * batch * height * width * c_in * self.out_channels(c_in) * 9
        return forward if mode == _harness.FORWARD else 3 * forward

    def bench(self) -> _harness.OpBench:
        return _harness.OpBench(self.name, self.eager, self.fused, self.make_inputs, self.bytes_moved, TARGETS,
                                cpu_cases=self.cpu_cases, gpu_cases=self.gpu_cases, flops=self.flops,
                                check_eps=CHECK_EPS, gpu_compile_mode=COMPILE_MODE)


FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16
ALL = (FP32, BF16, FP16)
# 256 px (paper256: 512 channels to 32 px, 128 at 128 px, 64 at 256 px) and 1024 px layers.
LAYERS = (
    Layer("modulated_conv2d_3x3", 1, lambda c: c,
          cpu_cases=(((4, 512, 16, 16), FP32), ((2, 64, 128, 128), FP32)),
          gpu_cases=tuple((shape, dtype) for shape in ((16, 512, 16, 16), (16, 512, 32, 32), (16, 128, 128, 128),
                                                       (16, 64, 256, 256)) for dtype in ALL)
          + (((4, 512, 32, 32), FP16), ((32, 512, 32, 32), FP16), ((4, 32, 1024, 1024), FP16))),
    Layer("modulated_conv2d_3x3_up", 2, lambda c: c if c == 512 else c // 2,
          cpu_cases=(((4, 512, 16, 16), FP32),),
          gpu_cases=tuple((shape, dtype) for shape in ((16, 512, 16, 16), (16, 256, 64, 64), (16, 128, 128, 128))
                          for dtype in ALL) + (((4, 64, 512, 512), FP16),)),
)

for _layer in LAYERS:
    globals()[f"test_{_layer.name}"] = _harness.make_test(_layer.bench())
