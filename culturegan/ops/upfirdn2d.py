"""upfirdn2d: upsample, pad, FIR-filter and downsample 2-D images, with its pure-torch reference.

StyleGAN2's resampling op, with NVlabs' semantics (stylegan2-ada-pytorch torch_utils/ops/
upfirdn2d.py), per channel of x (N, C, H, W):

    1. upsample: insert up - 1 zeros after each sample;
    2. pad by (x0, x1, y0, y1) on the upsampled grid (negative values crop);
    3. filter with f: a true convolution, or a correlation when flip_filter;
    4. downsample: keep every down-th sample, starting at the first.

The output has ((H * up_y + y0 + y1 - filter_h) // down_y + 1) rows, and columns likewise.
f is a fixed filter (it gets no gradient): 2-D (filter_h, filter_w), or 1-D for a separable
filter applied along both axes; gain multiplies the result (gain ** 0.5 per pass of a
separable filter, as NVlabs). The gradient of x is the same op with up and down swapped and
the filter flipped, so every order of derivative is one more upfirdn2d.

Backends: cpu and cuda run the C++ op culturegan::upfirdn2d (csrc/), triton runs the custom op
culturegan::upfirdn2d_triton (kernels/), reference is the zero insertion, padding and depthwise
convolution above. The fast backends compute the polyphase form: each output sums only the taps
that meet input samples, read from x in place (contiguous or channels_last; the output keeps
the layout), with no zero-inserted or padded copy, in float32 (float64 for float64) and one
rounding per output. They take f in that math dtype (the check casts it; None becomes the 1x1
identity filter) and take a 1-D filter as its outer product inside one call: no intermediate
tensor to write and read back, and no rounding to x's dtype in between (the CPU kernel sums a
rank-1 filter, 1-D or 2-D like StyleGAN2's [1, 3, 3, 1], in two passes over each output row
within that call).
Their backward is the same registered op (NVlabs' gradient padding), so it is differentiable
again: double backward needs no code of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from culturegan.ops import _backends, _checks, _layout


def _pair(value, name: str) -> tuple[int, int]:
    """An int or an (x, y) pair of ints >= 1, as (x, y)."""
    values = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise TypeError(f"{name} must be an int or an (x, y) pair of ints, got {value!r}")
    if min(values) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return values


def _padding(value) -> tuple[int, int, int, int]:
    """NVlabs' padding: p (all sides), (x, y), or (x0, x1, y0, y1); negative values crop."""
    values = (value,) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if values is None or len(values) not in (1, 2, 4) or any(isinstance(v, bool) or not isinstance(v, int)
                                                              for v in values):
        raise TypeError(f"padding must be an int, an (x, y) pair or (x0, x1, y0, y1), got {value!r}")
    if len(values) == 1:
        return values * 4
    if len(values) == 2:
        return values[0], values[0], values[1], values[1]
    return values


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter: a 1-D filter is separable, the same along both axes."""
    if f is None:
        return 1, 1
    return (f.shape[-1], f.shape[0]) if f.dim() == 2 else (f.shape[0], f.shape[0])


def output_size(x_size: tuple[int, int], f, up, down, padding) -> tuple[int, int]:
    """(height, width) of upfirdn2d's output for x's (height, width)."""
    filter_w, filter_h = filter_size(f)
    padx0, padx1, pady0, pady1 = padding
    return ((x_size[0] * up[1] + pady0 + pady1 - filter_h) // down[1] + 1,
            (x_size[1] * up[0] + padx0 + padx1 - filter_w) // down[0] + 1)


def _check_filter(f, x: torch.Tensor) -> torch.Tensor | None:
    if f is None:
        return None
    _checks.check_tensor(f, "f")
    _checks.check_floating(f, "f")
    _checks.check_same_device(f, "f", x, "x")
    if f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError(f"f must be a non-empty 1-D (separable) or 2-D filter, got shape {tuple(f.shape)}")
    if f.requires_grad:
        raise ValueError("f is a fixed filter and gets no gradient; pass f.detach() (a registered buffer)")
    return f


def _check_arguments(x, f, up, down, padding, flip_filter, gain) -> tuple:
    """The public arguments, checked and normalised (f as given)."""
    _checks.check_channel_tensor(x, "x", min_dim=4, max_dim=4)
    f = _check_filter(f, x)
    up, down, padding = _pair(up, "up"), _pair(down, "down"), _padding(padding)
    gain = _checks.check_number(gain, "gain", minimum=0.0, inclusive=False)
    height, width = output_size(tuple(x.shape[2:]), f, up, down, padding)
    if height < 1 or width < 1:
        raise ValueError(f"upfirdn2d's output would be empty: x {tuple(x.shape)}, filter {filter_size(f)} (w, h), "
                         f"up {up}, down {down}, padding {padding}")
    return x, f, up, down, padding, bool(flip_filter), gain


def _kernel_filter(f: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """f as the kernels take it: in x's math dtype (the identity filter for None)."""
    if f is None:
        return torch.ones((1, 1), dtype=_layout.math_dtype(x.dtype), device=x.device)
    return f.to(_layout.math_dtype(x.dtype))


def _check(x, f, up, down, padding, flip_filter, gain) -> tuple:
    """The op's check: the arguments of every implementation, f already in the kernels' form."""
    x, f, up, down, padding, flip_filter, gain = _check_arguments(x, f, up, down, padding, flip_filter, gain)
    return x, _kernel_filter(f, x), up, down, padding, flip_filter, gain


def _check_kernel_arguments(x, f, up, down, padding, flip_filter, gain) -> tuple:
    """The registered op's arguments, checked as culturegan::upfirdn2d checks them (f required, in
    x's math dtype)."""
    _checks.check_tensor(f, "f")
    arguments = _check_arguments(x, f, up, down, padding, flip_filter, gain)
    math_dtype = _layout.math_dtype(x.dtype)
    if f.dtype != math_dtype:
        raise TypeError(f"f must have dtype {math_dtype} (x's math type), got {f.dtype}")
    return arguments


def upfirdn2d_reference(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter: bool = False,
                        gain: float = 1.0) -> torch.Tensor:
    """The pure-torch definition (zero insertion, padding, a depthwise conv2d, striding), as
    NVlabs' _upfirdn2d_ref; autograd by torch."""
    (upx, upy), (downx, downy) = _pair(up, "up"), _pair(down, "down")
    padx0, padx1, pady0, pady1 = _padding(padding)
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, height, 1, width, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1]).reshape(batch, channels, height * upy, width * upx)
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0):x.shape[2] - max(-pady1, 0), max(-padx0, 0):x.shape[3] - max(-padx1, 0)]
    f = torch.ones(1, 1, dtype=x.dtype, device=x.device) if f is None else f
    # The gain in float64 for float64 x (exact), else in float32 as NVlabs', then x's dtype.
    f = (f.to(torch.promote_types(f.dtype, x.dtype)) * gain ** (f.dim() / 2)).to(x.dtype)
    if not flip_filter:  # conv2d correlates: flipping the taps makes it a true convolution
        f = f.flip(list(range(f.dim())))
    f = f[None, None].repeat([channels, 1] + [1] * f.dim())
    if f.dim() == 4:
        x = F.conv2d(x, f, groups=channels)
    else:
        x = F.conv2d(F.conv2d(x, f.unsqueeze(2), groups=channels), f.unsqueeze(3), groups=channels)
    return x[:, :, ::downy, ::downx]


# ------------------------------------------------------------------- kernels, autograd

def _empty_output(x: torch.Tensor, height, width) -> torch.Tensor:
    """The kernels' output for x: channels_last if x is channels innermost (and not NCHW
    contiguous), else contiguous (a strided x is copied to contiguous first; see _layout)."""
    channels_last = not x.is_contiguous() and _layout.is_channels_innermost(x)
    return torch.empty((x.shape[0], x.shape[1], height, width), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _triton_forward(x: torch.Tensor, f: torch.Tensor, up: list[int], down: list[int], padding: list[int],
                    flip_filter: bool, gain: float) -> torch.Tensor:
    from culturegan.kernels import upfirdn2d as kernels

    x, f, up, down, padding, flip_filter, gain = _check_kernel_arguments(x, f, up, down, padding, flip_filter, gain)
    y = _empty_output(x, *output_size(tuple(x.shape[2:]), f, up, down, padding))
    kernels.upfirdn2d(x, f.contiguous(), y, up, down, padding, flip_filter, gain)
    return y


def _fake(x, f, up, down, padding, flip_filter, gain):
    return _empty_output(x, *output_size(tuple(x.shape[2:]), f, up, down, padding))


def _gradient_padding(f: torch.Tensor, x_size, y_size, up, down, padding) -> list:
    """NVlabs' padding of the gradient's upfirdn2d (up and down swapped, the filter flipped), which
    maps an output-sized gradient back onto x's (height, width)."""
    filter_w, filter_h = filter_size(f)
    (upx, upy), (downx, downy), (padx0, _, pady0, _) = up, down, padding
    (height, width), (out_h, out_w) = x_size, y_size
    return [filter_w - padx0 - 1, width * upx - out_w * downx + padx0 - upx + 1,
            filter_h - pady0 - 1, height * upy - out_h * downy + pady0 - upy + 1]


def _setup_context(ctx, inputs, output):
    x, f, up, down, padding, flip_filter, gain = inputs
    if f.requires_grad:  # reachable through torch.ops.culturegan.upfirdn2d, which the public check skips
        _check_filter(f, x)
    ctx.save_for_backward(f)
    ctx.arguments = (tuple(x.shape[2:]), tuple(output.shape[2:]), up, down, padding, flip_filter, gain)


def _vjp(ctx, grad):
    (f,) = ctx.saved_tensors
    x_size, y_size, up, down, padding, flip_filter, gain = ctx.arguments
    padding = _gradient_padding(f, x_size, y_size, up, down, padding)
    grad_x = FORWARD.on(ctx.backend)(grad, f, down, up, padding, not flip_filter, gain)
    return grad_x, None, None, None, None, None, None


FORWARD = _backends.register(_backends.Kernel("upfirdn2d", _fake, triton=_triton_forward, vjp=_vjp,
                                              setup_context=_setup_context))
# From this many taps a 1-D (separable) filter runs as two passes, one per axis, as NVlabs' CUDA
# op does: n + n taps per output instead of the kernels' n * n. Below it one pass is faster (2-core
# CPU VM, upsample2d of (4, 64, 64, 64): 5.6x two passes at 8 taps, 2.3x at 16, 0.73x at 32), and
# it has no intermediate rounding. Measured before the CPU kernel summed rank-1 filters in two
# passes within one call in NCHW, and not measured again since.
SEPARABLE_PASSES_FROM = 16


def _on_backend(backend: str, x, f, up, down, padding, flip_filter, gain):
    kernel = FORWARD.on(backend)
    if f.dim() == 2 or f.shape[0] < SEPARABLE_PASSES_FROM:
        return kernel(x, f, up, down, padding, flip_filter, gain)
    (upx, upy), (downx, downy), (padx0, padx1, pady0, pady1) = up, down, padding
    rows = kernel(x, f[None, :], [upx, 1], [downx, 1], [padx0, padx1, 0, 0], flip_filter, gain ** 0.5)
    return kernel(rows, f[:, None], [1, upy], [1, downy], [0, 0, pady0, pady1], flip_filter, gain ** 0.5)


# "auto" on CUDA tensors runs Triton first, here and in the ops built on upfirdn2d: on an H200
# (bench/results/gpu-h200-2026-11-30.md) the CUDA kernel ran StyleGAN2's resamplings at 0.46-1.2x
# torch eager, Triton at 1.8-5.5x (forward, NCHW, float32 and float16).
TRITON_FIRST_ON_CUDA = {"cuda": ("triton", "cuda", "reference")}
OP = _backends.declare(_backends.Op("upfirdn2d", _check, upfirdn2d_reference, _on_backend,
                                    auto_order=TRITON_FIRST_ON_CUDA))


# ----------------------------------------------------------------------------- public API

def setup_filter(f, device: torch.device | str = "cpu", normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1.0, separable: bool | None = None) -> torch.Tensor:
    """A float32 FIR filter for upfirdn2d from taps (a list or tensor), as NVlabs' setup_filter:
    normalised to a DC gain of 1 (normalize), optionally flipped, times gain ** (ndim / 2). A
    1-D filter of 8 or more taps stays separable (unless separable says otherwise); a shorter
    one becomes its outer product: [1, 3, 3, 1] -> the 4x4 binomial filter / 64."""
    # Built on the CPU whatever the default device (its checks read values), then moved.
    f = torch.as_tensor([1.0] if f is None else f, dtype=torch.float32, device="cpu")
    if f.dim() not in (0, 1, 2) or f.numel() == 0 or not torch.isfinite(f).all():
        raise ValueError(f"a filter must be finite taps in 0 to 2 dimensions, got shape {tuple(f.shape)}")
    f = f.reshape(1) if f.dim() == 0 else f
    if separable is None:
        separable = f.dim() == 1 and f.numel() >= 8
    if f.dim() == 1 and not separable:
        f = torch.outer(f, f)
    if f.dim() != (1 if separable else 2):
        raise ValueError(f"a separable filter must be 1-D, got shape {tuple(f.shape)}")
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError("a filter whose taps sum to 0 cannot be normalised; pass normalize=False")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.dim())))
    return (f * gain ** (f.dim() / 2)).to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0, flip_filter: bool = False,
              gain: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
    """Upsample, pad, filter and downsample each channel of x (N, C, H, W), as NVlabs' upfirdn2d.

    Args:
        x: (N, C, H, W) float16/bfloat16/float32/float64 tensor, contiguous or channels_last.
        f: a filter from setup_filter (2-D, or 1-D separable; any floating dtype, on x's device,
            no gradient), or None for the identity filter.
        up, down: an int or an (x, y) pair, >= 1.
        padding: an int, an (x, y) pair, or (x0, x1, y0, y1) on the upsampled grid; negative
            values crop.
        flip_filter: correlate instead of convolving (flips the filter).
        gain: multiplies the output, > 0.
        backend: "cuda", "triton", "cpu", "reference" or "auto" (see culturegan.ops).

    Differentiable to any order in x.
    """
    return OP(x, f, up, down, padding, flip_filter, gain, backend=backend)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up=2, padding=0, flip_filter: bool = False,
               gain: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
    """Upsample by `up` with filter f, padded so that the output is exactly up times the input
    (NVlabs' upsample2d); the gain up_x * up_y keeps the image's brightness."""
    upx, upy = _pair(up, "up")
    padx0, padx1, pady0, pady1 = _padding(padding)
    filter_w, filter_h = filter_size(f)
    padding = [padx0 + (filter_w + upx - 1) // 2, padx1 + (filter_w - upx) // 2,
               pady0 + (filter_h + upy - 1) // 2, pady1 + (filter_h - upy) // 2]
    return upfirdn2d(x, f, (upx, upy), 1, padding, flip_filter, gain * upx * upy, backend=backend)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down=2, padding=0, flip_filter: bool = False,
                 gain: float = 1.0, *, backend: str | None = None) -> torch.Tensor:
    """Filter with f and keep every `down`-th sample, padded so that the output is exactly the
    input over down (NVlabs' downsample2d)."""
    downx, downy = _pair(down, "down")
    padx0, padx1, pady0, pady1 = _padding(padding)
    filter_w, filter_h = filter_size(f)
    padding = [padx0 + (filter_w - downx + 1) // 2, padx1 + (filter_w - downx) // 2,
               pady0 + (filter_h - downy + 1) // 2, pady1 + (filter_h - downy) // 2]
    return upfirdn2d(x, f, 1, (downx, downy), padding, flip_filter, gain, backend=backend)


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding=0, flip_filter: bool = False, gain: float = 1.0, *,
             backend: str | None = None) -> torch.Tensor:
    """Filter with f, padded so that the output has the input's size (NVlabs' filter2d)."""
    padx0, padx1, pady0, pady1 = _padding(padding)
    filter_w, filter_h = filter_size(f)
    padding = [padx0 + filter_w // 2, padx1 + (filter_w - 1) // 2, pady0 + filter_h // 2, pady1 + (filter_h - 1) // 2]
    return upfirdn2d(x, f, 1, 1, padding, flip_filter, gain, backend=backend)


__all__ = ["downsample2d", "filter2d", "filter_size", "output_size", "setup_filter", "upfirdn2d",
           "upfirdn2d_reference", "upsample2d"]
