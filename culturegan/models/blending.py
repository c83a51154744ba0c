"""Layer swapping ("toonify", Pinkney & Adler 2020): one StyleGAN2 generator whose low-resolution
layers come from a `structure` model and whose high-resolution layers come from a `rendering`
model (two fine-tunes of one base model, e.g. a culture's and the photographic one).

    from culturegan.models.blending import blend_generators
    blended = blend_generators(culture_g, photo_g, resolution=32)          # hard switch
    smooth = blend_generators(culture_g, photo_g, resolution=32, width=1)  # logistic

Layers are ordered as in justinpinkney/stylegan2's blend_models.py, on NVlabs' names: block
b{r}'s const or conv0 is level 0, its conv1 and torgb level 1, and a layer's position is
2·log2(r) + level (b4.const 4, b4.conv1 and b4.torgb 5, b8.conv0 6, ...). Each parameter of
synthesis layer L becomes (1 − y_L)·structure + y_L·rendering with the rendering weight

- hard (width None): y = 1 for positions above position(R, 1), else 0. That is: **every layer of
  the blocks at resolutions <= R comes from structure, every layer above R from rendering**,
  JP's hard rule (y = 1 iff x > 1, x = position − position(R, level)) with level 0;
- smooth (width W > 0): y = sigmoid((position − c) / W) with c = position(R, 1) + 1/2, half way
  between R's last layer and 2R's first: the hard switch's own place, so y is 1/2 there, y(c − d)
  and y(c + d) sum to 1, and W -> 0 gives the hard switch. (JP centres its logistic on
  position(R, level) itself, 1.5 positions below its hard switch; this does not copy that.)

In the smooth blend b4.conv1 gets its small rendering share like every layer (JP's TF 4x4 layer
is named "Conv", so his script never blends it: a quirk of names this does not copy).

Generators blend when their tensors have the same names and shapes; the blend takes the
structure model's constructor arguments (precision, conv_clamp), which shape no tensor.

The mapping network, w_avg and every noise_const come from structure, as in JP's script (its
output starts as a copy of the first model and only synthesis weights are blended); so do the
fixed resample filters, which the shared architecture makes equal. The noise strengths are
parameters of their layers and are blended with them. ws that the structure model's mapping
makes (or a projection with it) thus render with the blend's synthesis.
"""

from __future__ import annotations

import math
import numbers

import torch

from culturegan.models.stylegan2 import Generator

LAYER_LEVELS = {"const": 0, "conv0": 0, "conv1": 1, "torgb": 1}  # JP: Const/Conv0_up, Conv1/ToRGB
MIN_RESOLUTION = 4  # the first block's


def layer_position(resolution: int, level: int) -> int:
    """JP's position of level `level` (0 or 1) of block b{resolution}: 2·log2(resolution) + level."""
    return 2 * int(math.log2(resolution)) + level


def switch_position(resolution: int) -> float:
    """Where the hard blend at `resolution` switches to rendering, and the smooth one's centre:
    half way between b{resolution}'s last layer and the first layer of the next block."""
    return layer_position(resolution, 1) + 0.5


def rendering_weight(position: float, resolution: int, width: float | None = None) -> float:
    """y, the rendering model's share of the layer at `position` (see the module docstring)."""
    offset = position - switch_position(resolution)
    if width is None:
        return float(offset > 0)
    return 1.0 / (1.0 + math.exp(-offset / width))


def rendering_weights(img_resolution: int, resolution: int, width: float | None = None) -> dict[str, float]:
    """{"b{r}.{layer}": y} for every synthesis layer of a generator of `img_resolution`."""
    weights = {}
    for log2_resolution in range(int(math.log2(MIN_RESOLUTION)), int(math.log2(img_resolution)) + 1):
        block = 2 ** log2_resolution
        first = "const" if block == MIN_RESOLUTION else "conv0"  # b4 starts from its learned constant
        for layer in (first, "conv1", "torgb"):
            weights[f"b{block}.{layer}"] = rendering_weight(layer_position(block, LAYER_LEVELS[layer]), resolution,
                                                            width)
    return weights


def blend_generators(structure: Generator, rendering: Generator, resolution: int,
                     width: float | None = None) -> Generator:
    """A new generator, in eval mode on structure's device: synthesis layers at resolutions
    <= `resolution` from `structure`, above it from `rendering` (hard switch, width None), or a
    logistic mix of width `width` layer positions centred between the two (see the module
    docstring); mapping, w_avg and noise constants from `structure`. The inputs are unchanged.
    ValueError for generators of different architectures, a resolution that is not a block's,
    or a width that is not a positive finite number."""
    _check_generators(structure, rendering)
    _check_resolution(resolution, structure.img_resolution)
    _check_width(width)
    weights = rendering_weights(structure.img_resolution, resolution, width)
    device = next(structure.parameters()).device
    blended = Generator(**structure.init_kwargs).to(device)
    blended.load_state_dict(structure.state_dict())
    rendering_parameters = dict(rendering.named_parameters())
    with torch.no_grad():
        for name, parameter in blended.synthesis.named_parameters():
            y = weights[_layer_of(name)]
            source = rendering_parameters[f"synthesis.{name}"].to(device, torch.float32)
            # (1 - y)·s + y·r, not s + y·(r - s): y 0 or 1 then gives either tensor bit for bit
            mixed = (1 - y) * parameter.float() + y * source
            parameter.copy_(mixed.to(parameter.dtype))
    return blended.eval()


def _layer_of(name: str) -> str:
    """"b16.conv0.affine.weight" -> "b16.conv0"; "b4.const" -> "b4.const"."""
    return ".".join(name.split(".")[:2])


def _check_generators(structure, rendering) -> None:
    for role, model in (("structure", structure), ("rendering", rendering)):
        if not isinstance(model, Generator):
            raise ValueError(f"the {role} model is a {type(model).__name__}, not a StyleGAN2 Generator "
                             "(culturegan.models.stylegan2): only those can be blended")
    # The tensors decide, not the constructor arguments: settings that shape no tensor differ
    # between models that blend well (a TF-converted fp32 base without conv_clamp beside an NVlabs
    # fine-tune with num_fp16_res 4 and conv_clamp 256); the blend runs with the structure's.
    differences = _differing_tensors(structure.state_dict(), rendering.state_dict())
    if differences:
        raise ValueError(f"the structure and rendering generators have different architectures ({differences}); "
                         "layer swapping needs two fine-tunes of one architecture")


def _differing_tensors(first: dict, second: dict, shown: int = 6) -> str:
    """What differs between two state_dicts' names and shapes ("" if nothing), the first few of each kind."""
    only_first, only_second = sorted(first.keys() - second.keys()), sorted(second.keys() - first.keys())
    shapes = [f"{name} {tuple(first[name].shape)} vs {tuple(second[name].shape)}"
              for name in sorted(first.keys() & second.keys()) if first[name].shape != second[name].shape]
    parts = [f"{label}: {', '.join(items[:shown])}" + (f" and {len(items) - shown} more" if len(items) > shown else "")
             for label, items in (("only in structure", only_first), ("only in rendering", only_second),
                                  ("shapes", shapes)) if items]
    return "; ".join(parts)


def _check_resolution(resolution, img_resolution: int) -> None:
    valid = [2 ** i for i in range(int(math.log2(MIN_RESOLUTION)), int(math.log2(img_resolution)) + 1)]
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution not in valid:
        raise ValueError(f"swap resolution {resolution!r} is not one of these generators' block resolutions "
                         f"({', '.join(map(str, valid))}): a power of two from {MIN_RESOLUTION} to {img_resolution}")


def _check_width(width) -> None:
    if width is None:
        return
    if isinstance(width, bool) or not isinstance(width, numbers.Real) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"blend width must be a positive finite number of layer positions (or none, for the hard "
                         f"switch), got {width!r}")


__all__ = ["LAYER_LEVELS", "MIN_RESOLUTION", "blend_generators", "layer_position", "rendering_weight",
           "rendering_weights", "switch_position"]
