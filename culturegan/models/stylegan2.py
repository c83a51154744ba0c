"""StyleGAN2's networks with the layout of NVlabs' stylegan2-ada-pytorch (training/networks.py).

    G = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                  synthesis_kwargs=dict(channel_base=16384, num_fp16_res=4, conv_clamp=256))
    img = G(z, None, truncation_psi=0.7, noise_mode="const")        # (N, 3, 256, 256), about [-1, 1]
    ws = G.mapping(z, None, skip_w_avg_update=True)                  # (N, G.num_ws, w_dim)
    img = G.synthesis(ws, noise_mode="none")
    logits = Discriminator(c_dim=0, img_resolution=256, img_channels=3, channel_base=16384)(img, None)

The constructors take NVlabs' arguments under NVlabs' names and defaults, and the modules hold
NVlabs' state_dict names and shapes, parameters and buffers alike (``mapping.fc{i}``,
``mapping.w_avg``, ``synthesis.b{r}.conv0/conv1/torgb`` with ``affine``, ``noise_strength``,
``noise_const``, ``resample_filter``; ``b{r}.fromrgb/conv0/conv1/skip``, ``b4.conv/fc/out``), so
the tensors of an NVlabs snapshot load as they are and ``Generator(**kwargs)`` rebuilds a network
from the constructor arguments a snapshot records (``init_kwargs`` holds ours, JSON values only).
The math is NVlabs': weights stored at unit variance and scaled at run time (equalised learning
rate), the mapping's learning-rate multiplier, modulated and demodulated convolutions, per-pixel
noise, the skip generator's image sum, the resnet discriminator and its minibatch-std epilogue.
It runs on culturegan's ops: ``modulated_conv2d``, ``conv2d_resample``, ``upsample2d`` and
``bias_leaky_relu`` (NVlabs' bias_act for the activations 'linear', 'relu' and 'lrelu').

Supported: the generator's 'skip' architecture and the discriminator's 'resnet' (every NVlabs
config but cifar's 'orig' discriminator), conditional networks (c_dim > 0), Freeze-D
(``block_kwargs={"freeze_layers": n}``: frozen layers hold buffers, as NVlabs'), any resolution
2**k >= 4 and any channel widths. Refused with a ValueError naming the value: other
architectures and activations, and constructor arguments NVlabs does not take.

Precision. The ``num_fp16_res`` highest-resolution blocks run in float16 on CUDA, as NVlabs',
clamped at ``conv_clamp``; ``force_fp32=True`` runs them in full precision. On other devices they
run in full precision, because half-precision convolutions on the CPU are slow or missing. They
never run in bfloat16: the released weights were trained with float16's 11-bit mantissa, and
``conv_clamp`` already keeps activations inside float16's range, the one thing bfloat16's wider
exponent would buy. Full precision is the parameters' dtype: float32, as NVlabs always computes,
or float64 after ``.double()`` (for exact comparisons and gradient checks).
NVlabs' ``fused_modconv`` switch has no equivalent: ``ops.modulated_conv2d`` chooses how to compute.
"""

from __future__ import annotations

import itertools
import json
import math

import torch
from torch import nn

from culturegan import ops
from culturegan.ops._checks import check_number

# NVlabs' bias_act activations that ops.bias_leaky_relu computes: (negative slope, default gain).
ACTIVATIONS = {"linear": (1.0, 1.0), "relu": (0.0, math.sqrt(2)), "lrelu": (0.2, math.sqrt(2))}
RESAMPLE_FILTER = (1, 3, 3, 1)
GENERATOR_ARCHITECTURES = ("skip",)
DISCRIMINATOR_ARCHITECTURES = ("resnet",)
# The nested keyword arguments NVlabs' constructors take (apart from those the parent sets itself).
MAPPING_KWARGS = ("num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta")
LAYER_KWARGS = ("kernel_size", "use_noise", "activation")
SYNTHESIS_KWARGS = ("channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter", "conv_clamp",
                    "fp16_channels_last") + LAYER_KWARGS
D_BLOCK_KWARGS = ("activation", "resample_filter", "fp16_channels_last", "freeze_layers")
D_MAPPING_KWARGS = tuple(name for name in MAPPING_KWARGS if name != "w_avg_beta")  # D's mapping tracks no average
EPILOGUE_KWARGS = ("mbstd_group_size", "mbstd_num_channels", "activation")
NOISE_MODES = ("random", "const", "none")


# ------------------------------------------------------------------------------ argument checks

def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_optional_int(value, name: str, minimum: int) -> int | None:
    return None if value is None else _check_int(value, name, minimum)


def _check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not supported; culturegan's StyleGAN2 supports {', '.join(choices)}")
    return value


def _check_keys(kwargs, name: str, allowed) -> dict:
    """A nested kwargs dict holds only names the NVlabs constructor takes (NVlabs would fail later
    with a TypeError deep inside, or, for names its parent sets itself, with 'multiple values')."""
    if not isinstance(kwargs, dict):
        raise ValueError(f"{name} must be a dict, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has unknown keys {unknown}; it takes {', '.join(allowed)}")
    return kwargs


def _json_copy(kwargs: dict, owner: str) -> dict:
    """A detached copy of the constructor arguments, checked to be JSON (the model card records it)."""
    try:
        return json.loads(json.dumps(kwargs, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{owner}'s arguments must be JSON values (numbers, strings, lists, dicts): {error}") from None


def _channels(channel_base: int, channel_max: int, resolutions) -> dict[int, int]:
    """NVlabs' widths, C(r) = min(channel_base // r, channel_max), refused where one would be 0."""
    _check_int(channel_base, "channel_base", 1)
    _check_int(channel_max, "channel_max", 1)
    channels = {r: min(channel_base // r, channel_max) for r in resolutions}
    empty = [r for r, c in channels.items() if c == 0]
    if empty:
        raise ValueError(f"channel_base {channel_base} gives 0 channels at resolution {max(empty)}; "
                         f"it must be >= {max(empty)}")
    return channels


def _log2_resolution(img_resolution) -> int:
    _check_int(img_resolution, "img_resolution", 4)
    if img_resolution & (img_resolution - 1):
        raise ValueError(f"img_resolution must be a power of 2 >= 4, got {img_resolution}")
    return img_resolution.bit_length() - 1


def _fp16_resolution(log2_resolution: int, num_fp16_res) -> int:
    """The lowest block resolution NVlabs runs in half precision (never below 8)."""
    _check_int(num_fp16_res, "num_fp16_res", 0)
    return max(2 ** (log2_resolution + 1 - num_fp16_res), 8)


def _check_conv_clamp(conv_clamp) -> float | None:
    return None if conv_clamp is None else check_number(conv_clamp, "conv_clamp", minimum=0, inclusive=False)


def _check_batch(t, name: str, shape: tuple, batch: int | None = None) -> torch.Tensor:
    """t is a floating tensor (N, *shape), with N == batch when batch is given."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (N, {', '.join(map(str, shape))}), "
                         f"got {type(t).__name__ if not isinstance(t, torch.Tensor) else t.dtype}")
    if t.dim() != 1 + len(shape) or tuple(t.shape[1:]) != shape or t.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}) with N >= 1, "
                         f"got {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"{name} has batch size {t.shape[0]}, but the other input has {batch}")
    return t


# ----------------------------------------------------------------------------------- precision

def _full_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a module runs in outside its half-precision blocks: its parameters' dtype."""
    tensors = itertools.chain(module.parameters(), module.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def _block_dtype(use_fp16: bool, force_fp32: bool, device: torch.device, full: torch.dtype) -> torch.dtype:
    # Half precision on CUDA only, and never bfloat16: see the module docstring.
    return torch.float16 if use_fp16 and not force_fp32 and device.type == "cuda" else full


# --------------------------------------------------------------------------------------- layers

def _activate(x: torch.Tensor, bias: torch.Tensor | None, activation: str, gain: float = 1.0,
              clamp: float | None = None) -> torch.Tensor:
    """NVlabs' bias_act(x, bias, act, gain=default_gain * gain, clamp) in one fused pass."""
    negative_slope, default_gain = ACTIVATIONS[activation]
    return ops.bias_leaky_relu(x, None if bias is None else bias.to(x.dtype), negative_slope, default_gain * gain,
                               clamp)


def _scaled_clamp(conv_clamp: float | None, gain: float) -> float | None:
    # NVlabs scales the clamp with the layer's gain, so a residual branch's sqrt(0.5) shrinks it too.
    return None if conv_clamp is None else conv_clamp * gain


class FullyConnectedLayer(nn.Module):
    """act(x @ W.T * weight_gain + b * bias_gain), W stored at unit variance / lr_multiplier.

    Adam's steps do not depend on the gradient's scale, so storing W 1/lr_multiplier times larger
    than it acts makes the effective weights learn lr_multiplier times slower (NVlabs' mapping
    network: 0.01); the stored tensors are that much larger than the weights in effect."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = _check_choice(activation, "activation", ACTIVATIONS)
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and bias is not None:
            return torch.addmm(bias.unsqueeze(0), x, weight.t())  # the bias rides in the matrix product
        return _activate(x.matmul(weight.t()), bias, self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """The discriminator's convolution: equalised learning rate (weight / sqrt(fan_in)), an
    optional 2x blur-downsampling, bias + activation + clamp. A frozen layer (Freeze-D) keeps
    its weights as buffers, as NVlabs', so optimisers never see them."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1, resample_filter=RESAMPLE_FILTER,
                 conv_clamp: float | None = None, trainable: bool = True):
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = None if bias is None else nn.Parameter(bias)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        x = ops.conv2d_resample(x, weight, self.resample_filter, down=self.down, padding=self.padding)
        return _activate(x, self.bias, self.activation, gain, _scaled_clamp(self.conv_clamp, gain))


# ------------------------------------------------------------------------------------- mapping

class MappingNetwork(nn.Module):
    """z (and the embedded label c) -> w: normalise, num_layers fully connected layers at the
    learning-rate multiplier, track the average w, broadcast to num_ws, truncate towards it."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = "lrelu",
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim = _check_int(z_dim, "z_dim", 0)
        self.c_dim = _check_int(c_dim, "c_dim", 0)
        self.w_dim = _check_int(w_dim, "w_dim", 1)
        self.num_ws = _check_optional_int(num_ws, "num_ws", 1)
        self.num_layers = _check_int(num_layers, "num_layers", 0)
        self.w_avg_beta = w_avg_beta
        if z_dim + c_dim == 0:
            raise ValueError("the mapping network needs an input: z_dim or c_dim must be > 0")
        if w_avg_beta is not None and (isinstance(w_avg_beta, bool) or not isinstance(w_avg_beta, (int, float))
                                       or not 0 <= w_avg_beta <= 1):
            raise ValueError(f"w_avg_beta must be None or a number in [0, 1], got {w_avg_beta!r}")
        embed_features = 0 if c_dim == 0 else _check_optional_int(embed_features, "embed_features", 1) or w_dim
        layer_features = _check_optional_int(layer_features, "layer_features", 1) or w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if num_layers == 0 and features[0] != w_dim:
            raise ValueError(f"a mapping network without layers passes its input through, so z_dim + embed_features "
                             f"({features[0]}) must equal w_dim ({w_dim})")
        lr_multiplier = check_number(lr_multiplier, "lr_multiplier", minimum=0, inclusive=False)
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for index in range(num_layers):
            layer = FullyConnectedLayer(features[index], features[index + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{index}", layer)
        # NVlabs tracks the average w only where it can truncate: in a generator's mapping.
        self.tracks_w_avg = num_ws is not None and w_avg_beta is not None
        if self.tracks_w_avg:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def _input(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        """Normalised z, concatenated with the normalised label embedding."""
        dtype = _full_dtype(self)
        parts = []
        if self.z_dim > 0:
            parts.append(_normalize_2nd_moment(_check_batch(z, "z", (self.z_dim,)).to(dtype)))
        if self.c_dim > 0:
            c = _check_batch(c, "c", (self.c_dim,), parts[0].shape[0] if parts else None)
            parts.append(_normalize_2nd_moment(self.embed(c.to(dtype))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, skip_w_avg_update: bool = False) -> torch.Tensor:
        """w (N, w_dim), or ws (N, num_ws, w_dim) when num_ws is set; c is ignored when c_dim is 0.
        In training mode the average w moves towards this batch's, unless skip_w_avg_update (the
        second mapping of style mixing skips it)."""
        x = self._input(z, c)
        for index in range(self.num_layers):
            x = getattr(self, f"fc{index}")(x)
        if self.tracks_w_avg and self.training and not skip_w_avg_update:
            # (under autocast x is in half precision; the average stays in the buffer's)
            self.w_avg.copy_(x.detach().mean(dim=0).to(self.w_avg.dtype).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if check_number(truncation_psi, "truncation_psi", minimum=-math.inf) != 1:
            x = self._truncate(x, truncation_psi, truncation_cutoff)
        return x

    def _truncate(self, x: torch.Tensor, psi: float, cutoff: int | None) -> torch.Tensor:
        """Pull w towards the average w by 1 - psi; only the first cutoff ws when cutoff is set."""
        if not self.tracks_w_avg:
            raise ValueError("truncation needs the average w, which this mapping network does not track "
                             "(w_avg_beta is None or num_ws is None)")
        w_avg = self.w_avg.to(x.dtype)
        if self.num_ws is None or cutoff is None:
            return w_avg.lerp(x, psi)
        _check_int(cutoff, "truncation_cutoff", 0)
        return torch.cat([w_avg.lerp(x[:, :cutoff], psi), x[:, cutoff:]], dim=1)


def _normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


# ------------------------------------------------------------------------------------ synthesis

class SynthesisLayer(nn.Module):
    """Modulated convolution (styles from an affine map of w, demodulated, optionally 2x
    upsampling), plus per-pixel noise scaled by a learned strength, bias, activation, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu", resample_filter=RESAMPLE_FILTER,
                 conv_clamp: float | None = None):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = _check_choice(activation, "activation", ACTIVATIONS)
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # styles start at 1: no modulation
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def _noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        if not self.use_noise or noise_mode == "none":
            return None
        if noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=self.noise_strength.dtype)
        else:
            noise = self.noise_const
        return (noise * self.noise_strength).to(x.dtype)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        styles = self.affine(w)
        # up == 1 correlates, as F.conv2d; the upsampling layers convolve (NVlabs' flip_weight).
        x = ops.modulated_conv2d(x, self.weight, styles, self._noise(x, noise_mode), up=self.up, padding=self.padding,
                                 resample_filter=self.resample_filter, flip_weight=self.up == 1)
        return _activate(x, self.bias, self.activation, clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """A 1x1 modulated convolution to the image channels, not demodulated: the style scales the
    colour output directly (equalised learning rate through the styles)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False)
        return _activate(x, self.bias, "linear", clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator: the learned constant (4x4) or conv0 (2x up),
    conv1, and torgb, whose image is added to the upsampled image of the blocks below."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 use_fp16: bool, resample_filter=RESAMPLE_FILTER, conv_clamp: float | None = None, **layer_kwargs):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
        # conv1 never resamples; NVlabs leaves it the default filter buffer even when the block's
        # filter differs, and so does this, so that the buffers match NVlabs' values too.
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    **layer_kwargs)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                force_fp32: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = _block_dtype(self.use_fp16, force_fp32, ws.device, ws.dtype)
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = self.conv0(x.to(dtype), next(w_iter), noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode)
        rgb = self.torgb(x, next(w_iter)).to(ws.dtype)  # the image sum stays in full precision
        img = rgb if img is None else ops.upsample2d(img, self.resample_filter) + rgb
        return x, img


def _check_layer_kwargs(kernel_size: int = 3, use_noise: bool = True, activation: str = "lrelu") -> None:
    if _check_int(kernel_size, "kernel_size", 1) % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the layers pad kernel_size // 2 per side), got {kernel_size}")
    if not isinstance(use_noise, bool):
        raise ValueError(f"use_noise must be True or False, got {use_noise!r}")
    _check_choice(activation, "activation", ACTIVATIONS)


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, img_channels, img_resolution, img_resolution)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, architecture: str = "skip",
                 resample_filter=RESAMPLE_FILTER, conv_clamp: float | None = None, fp16_channels_last: bool = False,
                 **layer_kwargs):
        super().__init__()
        # fp16_channels_last is a memory-layout hint that changes no value; the ops pick their layouts.
        _check_choice(architecture, "generator architecture", GENERATOR_ARCHITECTURES)
        _check_keys(layer_kwargs, "synthesis_kwargs", SYNTHESIS_KWARGS)
        _check_layer_kwargs(**layer_kwargs)
        self.w_dim = _check_int(w_dim, "w_dim", 1)
        self.img_resolution = img_resolution
        self.img_resolution_log2 = _log2_resolution(img_resolution)
        self.img_channels = _check_int(img_channels, "img_channels", 1)
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = _channels(channel_base, channel_max, self.block_resolutions)
        fp16_resolution = _fp16_resolution(self.img_resolution_log2, num_fp16_res)
        conv_clamp = _check_conv_clamp(conv_clamp)
        for resolution in self.block_resolutions:
            block = SynthesisBlock(channels[resolution // 2] if resolution > 4 else 0, channels[resolution], w_dim,
                                   resolution, img_channels, use_fp16=resolution >= fp16_resolution,
                                   resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            setattr(self, f"b{resolution}", block)
        # Each block's torgb shares its w with the next block's conv0, so the ws overlap by one.
        self.num_ws = sum(self._block(r).num_conv for r in self.block_resolutions) + 1

    def _block(self, resolution: int) -> SynthesisBlock:
        return getattr(self, f"b{resolution}")

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", force_fp32: bool = False) -> torch.Tensor:
        """Images in full precision; noise_mode 'random' (fresh noise), 'const' (the noise_const
        buffers: deterministic) or 'none'; force_fp32 runs the float16 blocks in full precision."""
        _check_choice(noise_mode, "noise_mode", NOISE_MODES)
        ws = _check_batch(ws, "ws", (self.num_ws, self.w_dim)).to(_full_dtype(self))
        x = img = None
        first_w = 0
        for resolution in self.block_resolutions:
            block = self._block(resolution)
            x, img = block(x, img, ws.narrow(1, first_w, block.num_conv + block.num_torgb), noise_mode, force_fp32)
            first_w += block.num_conv
        return img


class Generator(nn.Module):
    """NVlabs' Generator: mapping (z, c -> ws) and synthesis (ws -> images).

    ``init_kwargs`` holds the constructor arguments (JSON values): ``Generator(**g.init_kwargs)``
    builds the same network. Style mixing is the training loop's: it maps a second z with
    ``G.mapping(z2, c, skip_w_avg_update=True)`` and swaps ws from a cutoff in [1, G.num_ws)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None):
        super().__init__()
        mapping_kwargs = _check_keys({} if mapping_kwargs is None else mapping_kwargs, "mapping_kwargs", MAPPING_KWARGS)
        synthesis_kwargs = _check_keys({} if synthesis_kwargs is None else synthesis_kwargs, "synthesis_kwargs",
                                       SYNTHESIS_KWARGS)
        self.init_kwargs = _json_copy(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                           img_channels=img_channels, mapping_kwargs=mapping_kwargs,
                                           synthesis_kwargs=synthesis_kwargs), "Generator")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **mapping_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, noise_mode: str = "random",
                force_fp32: bool = False) -> torch.Tensor:
        """Images (N, img_channels, img_resolution, img_resolution) for z (N, z_dim) and labels c
        (N, c_dim; ignored when c_dim is 0), truncated towards the average w by truncation_psi."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)


# -------------------------------------------------------------------------------- discriminator

class DiscriminatorBlock(nn.Module):
    """One resolution of the 'resnet' discriminator: fromrgb (top block only), conv0, conv1
    (2x down), plus a 1x1 downsampling skip without bias; both paths scaled by sqrt(0.5) so the
    sum keeps unit variance."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 first_layer_idx: int, use_fp16: bool, activation: str = "lrelu", resample_filter=RESAMPLE_FILTER,
                 conv_clamp: float | None = None, freeze_layers: int = 0):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        layer_indices = itertools.count(first_layer_idx)

        def trainable() -> bool:  # Freeze-D counts layers from the image side
            return next(layer_indices) >= freeze_layers

        # fromrgb and conv0 do not resample: NVlabs gives them the default filter buffer.
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation=activation, conv_clamp=conv_clamp,
                                       trainable=trainable())
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation=activation, conv_clamp=conv_clamp,
                                 trainable=trainable())
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp, trainable=trainable())
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter,
                                trainable=trainable())
        self.num_layers = next(layer_indices) - first_layer_idx

    def forward(self, x: torch.Tensor | None, img: torch.Tensor, force_fp32: bool) -> torch.Tensor:
        dtype = _block_dtype(self.use_fp16, force_fp32, img.device, img.dtype)
        x = self.fromrgb(img.to(dtype)) if self.in_channels == 0 else x.to(dtype)
        skip = self.skip(x, gain=math.sqrt(0.5))
        return skip + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class MinibatchStdLayer(nn.Module):
    """Appends num_channels features: the standard deviation of each feature over groups of
    group_size samples, averaged over channels and pixels, so D can see a batch's variety."""

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        group = batch if self.group_size is None else min(self.group_size, batch)
        if batch % group:
            raise ValueError(f"the minibatch-std layer splits the batch into groups of {group} "
                             f"(min(mbstd_group_size, N)), so N must be a multiple of it; got N = {batch}")
        # Sample i falls in group i % (batch // group), the groups NVlabs' reshape makes.
        y = x.reshape(group, -1, self.num_channels, channels // self.num_channels, height, width)
        y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4]).reshape(-1, self.num_channels, 1, 1).repeat(group, 1, height, width)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch std, conv, fc, out; with a label, the projection of out onto the
    mapped label cmap (out has cmap_dim features then)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, mbstd_group_size: int | None = 4,
                 mbstd_num_channels: int = 1, activation: str = "lrelu", conv_clamp: float | None = None):
        super().__init__()
        _check_optional_int(mbstd_group_size, "mbstd_group_size", 1)
        if _check_int(mbstd_num_channels, "mbstd_num_channels", 0) and in_channels % mbstd_num_channels:
            raise ValueError(f"mbstd_num_channels ({mbstd_num_channels}) must divide the 4x4 block's channels "
                             f"({in_channels})")
        _check_choice(activation, "activation", ACTIVATIONS)
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        x = x.to(_full_dtype(self))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(nn.Module):
    """NVlabs' Discriminator ('resnet'): images (N, img_channels, R, R) and labels -> logits (N, 1).

    ``init_kwargs`` holds the constructor arguments (JSON values): ``Discriminator(**d.init_kwargs)``
    builds the same network."""

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int, architecture: str = "resnet",
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, cmap_dim: int | None = None, block_kwargs: dict | None = None,
                 mapping_kwargs: dict | None = None, epilogue_kwargs: dict | None = None):
        super().__init__()
        block_kwargs = _check_keys({} if block_kwargs is None else block_kwargs, "block_kwargs", D_BLOCK_KWARGS)
        mapping_kwargs = _check_keys({} if mapping_kwargs is None else mapping_kwargs, "mapping_kwargs",
                                     D_MAPPING_KWARGS)
        epilogue_kwargs = _check_keys({} if epilogue_kwargs is None else epilogue_kwargs, "epilogue_kwargs",
                                      EPILOGUE_KWARGS)
        self.init_kwargs = _json_copy(dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, architecture=architecture,
            channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
            cmap_dim=cmap_dim, block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
            epilogue_kwargs=epilogue_kwargs), "Discriminator")
        _check_choice(architecture, "discriminator architecture", DISCRIMINATOR_ARCHITECTURES)
        self.c_dim = _check_int(c_dim, "c_dim", 0)
        self.img_resolution = img_resolution
        self.img_resolution_log2 = _log2_resolution(img_resolution)
        self.img_channels = _check_int(img_channels, "img_channels", 1)
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = _channels(channel_base, channel_max, self.block_resolutions + [4])
        fp16_resolution = _fp16_resolution(self.img_resolution_log2, num_fp16_res)
        conv_clamp = _check_conv_clamp(conv_clamp)
        cmap_dim = 0 if c_dim == 0 else _check_optional_int(cmap_dim, "cmap_dim", 1) or channels[4]
        self._build_blocks(channels, fp16_resolution, conv_clamp, block_kwargs)
        if c_dim > 0:
            self.mapping = MappingNetwork(0, c_dim, cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim, 4, conv_clamp=conv_clamp, **epilogue_kwargs)

    def _build_blocks(self, channels: dict[int, int], fp16_resolution: int, conv_clamp: float | None,
                      block_kwargs: dict) -> None:
        _check_int(block_kwargs.get("freeze_layers", 0), "freeze_layers", 0)
        _check_choice(block_kwargs.get("activation", "lrelu"), "activation", ACTIVATIONS)
        block_kwargs = {k: v for k, v in block_kwargs.items() if k != "fp16_channels_last"}  # layout hint only
        first_layer = 0
        for resolution in self.block_resolutions:
            block = DiscriminatorBlock(channels[resolution] if resolution < self.img_resolution else 0,
                                       channels[resolution], channels[resolution // 2], resolution, self.img_channels,
                                       first_layer, use_fp16=resolution >= fp16_resolution, conv_clamp=conv_clamp,
                                       **block_kwargs)
            setattr(self, f"b{resolution}", block)
            first_layer += block.num_layers

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, force_fp32: bool = False) -> torch.Tensor:
        """Logits (N, 1) in full precision; c (N, c_dim) is ignored when c_dim is 0."""
        size = (self.img_channels, self.img_resolution, self.img_resolution)
        img = _check_batch(img, "img", size).to(_full_dtype(self))
        x = None
        for resolution in self.block_resolutions:
            x = getattr(self, f"b{resolution}")(x, img, force_fp32)
        cmap = self.mapping(None, _check_batch(c, "c", (self.c_dim,), img.shape[0])) if self.c_dim > 0 else None
        return self.b4(x, cmap)


__all__ = ["Discriminator", "Generator", "MappingNetwork", "SynthesisNetwork"]
