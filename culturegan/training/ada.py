"""Adaptive discriminator augmentation (ADA, Karras et al. 2020, arXiv 2006.06676): StyleGAN2-ADA's
augmentation pipeline for every discriminator input and the controller that tunes its probability p.

    pipe = make_augment_pipe("bgc")                  # NVlabs' --aug=ada default set, p = 0
    ada = AdaController(pipe)                        # target 0.6, ada_kimg 500, interval 4
    logits_real = D(pipe(reals))                     # also D(pipe(fakes)): every D input
    ada.observe(logits_real)
    ada.step(batch_size)                             # once per training step

The math follows NVlabs/stylegan2-ada-pytorch (training/augment.py, training_loop.py) for the
'blit', 'geom' and 'color' groups, with the same default strengths, draw order and buffers (p,
Hz_geom). Differences, all on purpose:
- Every augmentation's matrix is chosen per sample with torch.where between the drawn matrix and
  the identity, so a sample that draws nothing is exactly unchanged (NVlabs' saturation matrix
  vv^T + (I - vv^T) is the identity only up to rounding).
- Samples whose combined geometric transform maps the pixel lattice onto itself (nothing drawn,
  or only x-flips, 90-degree rotations and integer translations) are gathered pixel by pixel with
  NVlabs' reflective border instead of going through the wavelet up/grid_sample/down round trip.
  For translations that round trip is the identity up to float rounding (sym6 is orthogonal);
  for mirrored transforms it is not: sym6 is asymmetric, so after a flip or rotation the
  downsampling filter meets the upsampling one reversed and the pair blurs (on a 64-px procedural
  image, mean |difference| 0.019 and max 0.26 on the [-1, 1] scale, largest at edges). The
  gather makes NVlabs' "pixel blitting" lossless, as the ADA paper describes it, and cheaper.
- Image-space filtering, noise and cutout (NVlabs' 'f', 'n', 'c' groups, off in 'bgc') are not
  implemented, so there is no Hz_fbank buffer; an NVlabs augment_pipe's p carries over by name.
- The controller clamps p to [0, 1]: NVlabs clamps only at 0, and every probability saturates at
  p = 1, so above it p only piles up a surplus that delays the fall once D stops overfitting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from culturegan import ops
from culturegan.training import distributed

# Low-pass filter of the sym6 wavelet: orthogonal, so 2x upsampling followed by 2x downsampling
# with it (flipped) is the identity and the geometric path blurs nothing it does not have to.
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Probability multipliers of NVlabs' augmentation groups (train.py augpipe_specs).
GROUPS = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
}
PRESETS = {"blit": GROUPS["blit"], "geom": GROUPS["geom"], "color": GROUPS["color"],
           "bg": GROUPS["blit"] + GROUPS["geom"], "bgc": GROUPS["blit"] + GROUPS["geom"] + GROUPS["color"]}
AUGMENTATIONS = PRESETS["bgc"]
# NVlabs' default strengths (augment.py AugmentPipe.__init__).
STRENGTHS = {"xint_max": 0.125, "scale_std": 0.2, "rotate_max": 1.0, "aniso_std": 0.2, "xfrac_std": 0.125,
             "brightness_std": 0.2, "contrast_std": 0.5, "hue_max": 1.0, "saturation_std": 1.0}

# Tolerance for "this transform maps pixel centres onto pixel centres": far above float32
# rounding of cos(pi / 2) and far below any scale or fractional shift a sample plausibly draws.
_LATTICE_TOLERANCE = 1e-4


# ----------------------------------------------------------------------------- matrices

def _matrices(rows: list[list], like: torch.Tensor) -> torch.Tensor:
    """(N, k, k) matrices from rows whose entries are (N,) tensors or numbers."""
    entries = [e if isinstance(e, torch.Tensor) else torch.full_like(like, float(e)) for row in rows for e in row]
    return torch.stack(entries, dim=-1).reshape(like.shape[0], len(rows), len(rows))


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrices([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrices([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrices([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], theta)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    return _matrices([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t)


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    return _matrices([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s)


def _luma_axis(like: torch.Tensor) -> torch.Tensor:
    """The grey axis (1, 1, 1) / sqrt(3) in homogeneous colour coordinates, as a (4, 4) projector."""
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=like.dtype, device=like.device) / math.sqrt(3)
    return torch.outer(v, v)


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues' rotation by theta about the grey axis: a hue rotation that keeps luma."""
    vx = vy = vz = 1 / math.sqrt(3)
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrices([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                      [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                      [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                      [0, 0, 0, 1]], theta)


def _where(applied: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """The drawn matrix where the augmentation applies, the exact identity elsewhere."""
    eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype, device=matrices.device)
    return torch.where(applied[:, None, None], matrices, eye)


# ----------------------------------------------------------------------------- geometric execution

def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices folded into [0, size) as F.pad's 'reflect' does (the edge sample is not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _centred_pixels(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(3, H * W) homogeneous pixel-centre coordinates with the origin at the image centre, the
    frame NVlabs' matrices act in."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=like.dtype, device=like.device) - (height - 1) / 2,
                            torch.arange(width, dtype=like.dtype, device=like.device) - (width - 1) / 2,
                            indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs.flatten())])


def _on_lattice(g_inv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N,) bool: the transform sends every output pixel centre to an input pixel centre. An
    integer 2x2 part plus one lattice point mapping onto the lattice is enough (affine map)."""
    linear = g_inv[:, :2, :2]
    corner = torch.tensor([-(width - 1) / 2, -(height - 1) / 2, 1.0], dtype=g_inv.dtype, device=g_inv.device)
    source = (g_inv @ corner)[:, :2] + torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=g_inv.dtype,
                                                    device=g_inv.device)
    distance = torch.cat([(linear - linear.round()).flatten(1), source - source.round()], dim=1).abs()
    return distance.amax(dim=1) < _LATTICE_TOLERANCE


def _blit(images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """Lattice-preserving transforms as an exact gather of input pixels, reflecting at the borders
    like NVlabs' padding; a gather is linear, so it differentiates to any order."""
    batch, channels, height, width = images.shape
    source = g_inv[:, :2, :] @ _centred_pixels(height, width, g_inv)
    x = _reflect((source[:, 0] + (width - 1) / 2).round().long(), width)
    y = _reflect((source[:, 1] + (height - 1) / 2).round().long(), height)
    index = (y * width + x)[:, None, :].expand(batch, channels, height * width)
    return images.flatten(2).gather(2, index).reshape(images.shape)


def _resample(images: torch.Tensor, g_inv: torch.Tensor, filter_: torch.Tensor) -> torch.Tensor:
    """NVlabs' general geometric path: reflect-pad by what the transformed corners need, upsample
    2x with the wavelet filter, bilinear grid_sample on that finer grid (so its interpolation
    error and aliasing fall mostly above the image's band), then filter and downsample back."""
    batch, channels, height, width = images.shape
    cx, cy = (width - 1) / 2, (height - 1) / 2
    pad = filter_.shape[0] // 4     # output-side margin that the downsampling filter crops away
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]],
                           dtype=g_inv.dtype, device=g_inv.device).t()
    reach = (g_inv @ corners)[:, :2, :].permute(1, 0, 2).flatten(1)           # [xy, batch * corner]
    margin = torch.cat([-reach, reach]).amax(dim=1)                            # [x0, y0, x1, y1]
    margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, dtype=g_inv.dtype, device=g_inv.device)
    limit = torch.tensor([width - 1, height - 1] * 2, dtype=g_inv.dtype, device=g_inv.device)
    mx0, my0, mx1, my1 = margin.clamp(min=0).minimum(limit).ceil().long().tolist()
    images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")

    ones = torch.ones(batch, dtype=g_inv.dtype, device=g_inv.device)
    g_inv = _translate2d(ones * (mx0 - mx1) / 2, ones * (my0 - my1) / 2) @ g_inv
    images = ops.upsample2d(images, filter_, up=2)
    # Re-express the transform on the 2x grid (pixel centres at half-integers of the old grid).
    g_inv = _scale2d(ones * 2, ones * 2) @ g_inv @ _scale2d(ones / 2, ones / 2)
    g_inv = _translate2d(-ones / 2, -ones / 2) @ g_inv @ _translate2d(ones / 2, ones / 2)
    out_height, out_width = (height + pad * 2) * 2, (width + pad * 2) * 2
    # ... then in grid_sample's normalised [-1, 1] coordinates of the input and output grids.
    g_inv = (_scale2d(ones * 2 / images.shape[3], ones * 2 / images.shape[2]) @ g_inv
             @ _scale2d(ones * out_width / 2, ones * out_height / 2))
    grid = F.affine_grid(g_inv[:, :2, :].to(images.dtype), [batch, channels, out_height, out_width],
                         align_corners=False)
    # Zeros only reach the output where a transform needs more than one reflection (the margin is
    # capped at the image size, as NVlabs'); 'bgc' strengths almost never get there.
    images = _BilinearGridSample.apply(images, grid)
    return ops.downsample2d(images, filter_, down=2, padding=-pad * 2, flip_filter=True)


class _BilinearGridSample(torch.autograd.Function):
    """F.grid_sample (bilinear, zero padding, align_corners False) differentiable to any order in
    the images on every torch culturegan supports: torch 2.11's CUDA grid_sampler_2d_backward
    has no derivative, so R1's double backward through the augmentations failed there (NVlabs'
    grid_sample_gradfix, for the same reason). The grid, drawn and not learned, gets no gradient."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(images, grid)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        images, grid = ctx.saved_tensors
        return _BilinearGridSampleBackward.apply(grad_output, images, grid), None


class _BilinearGridSampleBackward(torch.autograd.Function):
    """The images' gradient of _BilinearGridSample: linear in grad_output, its weights set by the
    grid alone, so its own gradient is the forward sampling of the incoming gradient, and none
    flows to the images."""

    @staticmethod
    def forward(ctx, grad_output: torch.Tensor, images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(grid)
        # 0, 0: bilinear, zero padding; the grid's gradient is not computed
        grad_images, _ = torch.ops.aten.grid_sampler_2d_backward(grad_output, images, grid, 0, 0, False,
                                                                 [True, False])
        return grad_images

    @staticmethod
    def backward(ctx, grad2: torch.Tensor):
        grid, = ctx.saved_tensors
        return _BilinearGridSample.apply(grad2, grid), None, None


# ----------------------------------------------------------------------------- the pipe

class AugmentPipe(torch.nn.Module):
    """StyleGAN2-ADA's augmentation pipeline (NVlabs' AugmentPipe, groups blit, geom and color).

    Each augmentation is applied to each sample with probability p times its multiplier (0 turns
    it off, 1 is NVlabs' setting in every preset). Geometric ones compose into one 3x3 matrix per
    sample, colour ones into one 4x4 matrix; both paths are differentiable to any order in the
    images, so G's gradient and R1's double backward pass through D's augmentations.

    Args: the probability multipliers (names in AUGMENTATIONS), the strengths (STRENGTHS, NVlabs'
    defaults), and p, the overall probability in [0, 1] (a buffer, saved with the state).
    """

    def __init__(self, xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
                 scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0, scale_std: float = 0.2,
                 rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0,
                 saturation: float = 0, brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1,
                 saturation_std: float = 1, p: float = 0.0):
        super().__init__()
        settings = dict(locals())   # the arguments by name
        self.multipliers = {name: _non_negative(name, settings[name]) for name in AUGMENTATIONS}
        self.strengths = {name: _non_negative(name, settings[name]) for name in STRENGTHS}
        if not 0 <= float(p) <= 1:
            raise ValueError(f"p must be in [0, 1], got {p!r}")
        self.register_buffer("p", torch.tensor(float(p)))
        self.register_buffer("Hz_geom", ops.setup_filter(SYM6))

    def extra_repr(self) -> str:
        enabled = [name for name, multiplier in self.multipliers.items() if multiplier > 0]
        return f"augmentations={enabled}, p={float(self.p):.4f}"

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augments (N, C, H, W) images in [-1, 1] (C = 1 or 3 when a colour augmentation is on);
        draws from `generator` if given (on its device), else from the global RNG of the images'
        device. Returns a tensor of the same shape, dtype and device."""
        _check_images(images, self._colour_enabled())
        # Outside autocast, in float32 at least: under bf16 autocast the 3x3 matrix products and the
        # sampling grid lost up to 4 px of a 1 k-pixel grid (NVlabs' pipe runs in float32 too).
        with torch.autocast(images.device.type, enabled=False):
            wide = images.to(torch.promote_types(images.dtype, torch.float32))
            draw = _Draws(wide, self.p, generator)
            g_inv = self._geometric_matrix(draw, wide.shape[2], wide.shape[3]).to(wide.device)
            colour = self._colour_matrix(draw, wide.shape[1] > 1).to(wide.device)
            return _apply_colour(self._apply_geometric(wide, g_inv), colour).to(images.dtype)

    def _colour_enabled(self) -> bool:
        return any(self.multipliers[name] > 0 for name in GROUPS["color"])

    def _geometric_matrix(self, draw: _Draws, height: int, width: int) -> torch.Tensor:
        """The inverse transform (output pixel -> input pixel), in NVlabs' order and draws."""
        m, s = self.multipliers, self.strengths
        g_inv = torch.eye(3, dtype=draw.dtype, device=draw.device).expand(draw.batch, 3, 3)
        if m["xflip"] > 0:
            flip = draw.gated(torch.floor(draw.uniform() * 2), m["xflip"])
            g_inv = g_inv @ _where(flip > 0, _scale2d(1 - 2 * flip, torch.ones_like(flip)))
        if m["rotate90"] > 0:
            quarter = draw.gated(torch.floor(draw.uniform() * 4), m["rotate90"])
            g_inv = g_inv @ _where(quarter > 0, _rotate2d(math.pi / 2 * quarter))
        if m["xint"] > 0:
            shift = (draw.uniform(2) * 2 - 1) * s["xint_max"]
            applied = draw.applies(m["xint"])
            g_inv = g_inv @ _where(applied, _translate2d(-torch.round(shift[:, 0] * width),
                                                         -torch.round(shift[:, 1] * height)))
        if m["scale"] > 0:
            factor = torch.exp2(draw.normal() * s["scale_std"])
            g_inv = g_inv @ _where(draw.applies(m["scale"]), _scale2d(1 / factor, 1 / factor))
        # Rotation is split into a pre- and a post-rotation around the anisotropic scaling, each
        # drawn with p_rot such that P(pre or post) = rotate * p, as NVlabs.
        p_rot = 1 - torch.sqrt((1 - m["rotate"] * draw.p).clamp(0, 1))
        if m["rotate"] > 0:
            theta = (draw.uniform() * 2 - 1) * math.pi * s["rotate_max"]
            g_inv = g_inv @ _where(draw.uniform() < p_rot, _rotate2d(theta))
        if m["aniso"] > 0:
            factor = torch.exp2(draw.normal() * s["aniso_std"])
            g_inv = g_inv @ _where(draw.applies(m["aniso"]), _scale2d(1 / factor, factor))
        if m["rotate"] > 0:
            theta = (draw.uniform() * 2 - 1) * math.pi * s["rotate_max"]
            g_inv = g_inv @ _where(draw.uniform() < p_rot, _rotate2d(theta))
        if m["xfrac"] > 0:
            shift = draw.normal(2) * s["xfrac_std"]
            g_inv = g_inv @ _where(draw.applies(m["xfrac"]), _translate2d(-shift[:, 0] * width,
                                                                          -shift[:, 1] * height))
        return g_inv

    def _colour_matrix(self, draw: _Draws, rgb: bool) -> torch.Tensor:
        """The colour transform in homogeneous RGB (colour_out = C @ colour_in), NVlabs' order."""
        m, s = self.multipliers, self.strengths
        colour = torch.eye(4, dtype=draw.dtype, device=draw.device).expand(draw.batch, 4, 4)
        eye = torch.eye(4, dtype=draw.dtype, device=draw.device)
        luma = _luma_axis(eye)
        if m["brightness"] > 0:
            offset = draw.normal() * s["brightness_std"]
            colour = _where(draw.applies(m["brightness"]), _translate3d(offset)) @ colour
        if m["contrast"] > 0:
            factor = torch.exp2(draw.normal() * s["contrast_std"])
            colour = _where(draw.applies(m["contrast"]), _scale3d(factor)) @ colour
        if m["lumaflip"] > 0:
            flip = draw.gated(torch.floor(draw.uniform() * 2), m["lumaflip"])
            # Householder reflection through the plane orthogonal to grey: inverts luma, keeps hue.
            colour = _where(flip > 0, (eye - 2 * luma).expand(draw.batch, 4, 4)) @ colour
        if m["hue"] > 0 and rgb:
            theta = (draw.uniform() * 2 - 1) * math.pi * s["hue_max"]
            colour = _where(draw.applies(m["hue"]), _rotate_about_luma(theta)) @ colour
        if m["saturation"] > 0 and rgb:
            factor = torch.exp2(draw.normal() * s["saturation_std"])
            saturate = luma + (eye - luma) * factor[:, None, None]
            colour = _where(draw.applies(m["saturation"]), saturate) @ colour
        return colour

    def _apply_geometric(self, images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Lattice-preserving samples by exact gather, the others by the wavelet resampling."""
        eye = torch.eye(3, dtype=g_inv.dtype, device=g_inv.device)
        if bool((g_inv == eye).all()):
            return images
        on_lattice = _on_lattice(g_inv, images.shape[2], images.shape[3])
        lattice, general = on_lattice.nonzero().flatten(), (~on_lattice).nonzero().flatten()
        parts = [_blit(images[lattice], g_inv[lattice].round())] if len(lattice) else []
        if len(general):
            filter_ = self.Hz_geom.to(images.device)
            parts.append(_resample(images[general], g_inv[general], filter_))
        order = torch.cat([lattice, general])
        return torch.cat(parts)[torch.argsort(order)]


def _apply_colour(images: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(4, dtype=colour.dtype, device=colour.device)
    if bool((colour == eye).all()):
        return images
    batch, channels, height, width = images.shape
    colour = colour.to(images.dtype)
    pixels = images.reshape(batch, channels, height * width)
    if channels == 3 and images.device.type == "cpu":
        # A broadcast multiply-add, not `@`: torch's CPU bmm of (N, 3, 3) by (N, 3, H * W) was
        # half of the whole pipe's time (30-130 ms for 16 images of 64 px on a 2-core CPU VM).
        pixels = (colour[:, :3, :3, None] * pixels[:, None, :, :]).sum(dim=2) + colour[:, :3, 3:]
    elif channels == 3:
        # On a GPU the broadcast's (N, 3, 3, H * W) temporary is 1.2 GB at 1024 px, batch 32.
        pixels = torch.baddbmm(colour[:, :3, 3:], colour[:, :3, :3], pixels)
    else:
        # Greyscale: the mean of the RGB rows, applied to a grey pixel (r = g = b), as NVlabs.
        rows = colour[:, :3, :].mean(dim=1, keepdim=True)
        pixels = pixels * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
    return pixels.reshape(batch, channels, height, width)


class _Draws:
    """The random numbers of one forward pass: per-sample draws from one generator (or the global
    RNG), and whether an augmentation with a given multiplier applies (uniform < multiplier * p)."""

    def __init__(self, images: torch.Tensor, p: torch.Tensor, generator: torch.Generator | None):
        self.batch, self.generator = images.shape[0], generator
        self.device = generator.device if generator is not None else images.device
        # Matrices in float32 (as NVlabs), or float64 for float64 images, whose pipeline (and
        # gradcheck) would otherwise lose precision in the sampling grid.
        self.dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        self.p = p.detach().to(self.device, self.dtype)

    def uniform(self, *shape: int) -> torch.Tensor:
        return torch.rand((self.batch, *shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn((self.batch, *shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def applies(self, multiplier: float) -> torch.Tensor:
        return self.uniform() < multiplier * self.p

    def gated(self, values: torch.Tensor, multiplier: float) -> torch.Tensor:
        """values where the augmentation applies, 0 (the identity choice) elsewhere."""
        return torch.where(self.applies(multiplier), values, torch.zeros_like(values))


def _non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"augmentation setting {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_images(images, colour: bool) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a floating (N, C, H, W) tensor, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if colour and images.shape[1] not in (1, 3):
        raise ValueError(f"colour augmentations need 1 or 3 channels, got {images.shape[1]}")


def make_augment_pipe(augmentations: str | Mapping[str, float] = "bgc", p: float = 0.0,
                      **strengths: float) -> AugmentPipe:
    """An AugmentPipe from a preset name (blit, geom, color, bg, bgc: NVlabs' names, every member
    at multiplier 1) or a mapping {augmentation: multiplier}; strengths override NVlabs' defaults."""
    if isinstance(augmentations, str):
        if augmentations not in PRESETS:
            raise ValueError(f"unknown augmentation preset {augmentations!r}; choose from {', '.join(PRESETS)}")
        augmentations = dict.fromkeys(PRESETS[augmentations], 1.0)
    unknown = [name for name in augmentations if name not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(AUGMENTATIONS)}")
    unknown = [name for name in strengths if name not in STRENGTHS]
    if unknown:
        raise ValueError(f"unknown augmentation strength(s) {', '.join(map(repr, unknown))}; "
                         f"choose from {', '.join(STRENGTHS)}")
    return AugmentPipe(**augmentations, **strengths, p=p)


# ----------------------------------------------------------------------------- the controller

class AdaController:
    """NVlabs' ADA heuristic: every `interval` steps, p moves by batch * interval / (ada_kimg * 1000)
    towards more augmentation when r_t = E[sign(D(real))] over those steps exceeds `target` (D
    too sure of the reals: overfitting), and towards less when below; p stays in [0, 1]. At that
    rate p can go from 0 to 1 in ada_kimg thousand images.

    Call observe(real_logits) for every D evaluation of reals and step(batch_size) once per
    training step, with batch_size the images per step over all processes; under
    torch.distributed the sign counts are summed over processes, so every process gets the same p.
    When fine-tuning, pass ada_kimg=100 as NVlabs does on every --resume (p must rise fast while
    a pretrained D meets a small set). state_dict holds this process's own counts since the last
    update: under torch.distributed a resume is exact only from a step where steps % interval is
    0 (the counts are then 0 on every process).
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, ada_kimg: float = 500, interval: int = 4):
        if not 0 < target < 1:
            raise ValueError(f"ADA target must be in (0, 1), got {target!r}")
        if not ada_kimg > 0:
            raise ValueError(f"ada_kimg must be > 0, got {ada_kimg!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"ADA interval must be an int >= 1, got {interval!r}")
        self.pipe, self.target, self.ada_kimg, self.interval = pipe, float(target), float(ada_kimg), interval
        self.steps = 0
        self._signs = torch.zeros(2, dtype=torch.float64)   # sum of sign(D(real)), number of logits

    @property
    def p(self) -> float:
        return float(self.pipe.p)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Counts the signs of D's logits for real images (no gradient, no device sync)."""
        signs = real_logits.detach().sign().to(torch.float64)
        self._signs = self._signs.to(signs.device) + torch.stack([signs.sum(), signs.new_tensor(signs.numel())])

    def step(self, batch_size: int) -> float | None:
        """Ends a training step; on every interval-th, updates p and returns that interval's r_t."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.steps += 1
        if self.steps % self.interval:
            return None
        signs = distributed.summed(self._signs).cpu()
        if signs[1] == 0:
            raise RuntimeError("ADA step without any observed real logits: call observe(D(reals)) each step")
        rt = float(signs[0] / signs[1])
        adjust = math.copysign(1.0, rt - self.target) if rt != self.target else 0.0
        adjust *= batch_size * self.interval / (self.ada_kimg * 1000)
        with torch.no_grad():
            self.pipe.p.copy_((self.pipe.p + adjust).clamp(0, 1))
        self._signs = torch.zeros_like(self._signs)
        return rt

    def state_dict(self) -> dict:
        """p, the step count and the signs counted since the last update: all an exact resume needs."""
        sign_sum, sign_count = self._signs.tolist()
        return {"p": self.p, "steps": self.steps, "sign_sum": sign_sum, "sign_count": sign_count}

    def load_state_dict(self, state: Mapping) -> None:
        missing = [key for key in ("p", "steps", "sign_sum", "sign_count") if key not in state]
        if missing:
            raise ValueError(f"ADA state lacks {', '.join(missing)}")
        if not 0 <= float(state["p"]) <= 1:
            raise ValueError(f"ADA state p must be in [0, 1], got {state['p']!r}")
        if int(state["steps"]) < 0:
            raise ValueError(f"ADA state steps must be >= 0, got {state['steps']!r}")
        sign_sum, sign_count = float(state["sign_sum"]), float(state["sign_count"])
        if not (math.isfinite(sign_count) and sign_count >= 0 and abs(sign_sum) <= sign_count):
            raise ValueError(f"ADA state sign counts must be finite with |sign_sum| <= sign_count >= 0, got "
                             f"sign_sum {state['sign_sum']!r}, sign_count {state['sign_count']!r}")
        self.pipe.p.fill_(float(state["p"]))
        self.steps = int(state["steps"])
        self._signs = torch.tensor([sign_sum, sign_count], dtype=torch.float64)

