"""`culturegan blend`: a layer-swapped StyleGAN2 generator (culturegan.models.blending), written as
a converted file, with a grid that shows it beside its two sources.

    from culturegan.transfer.blend import blend_files
    model, grid = blend_files("ukiyoe.pkl", "photo.pkl", 32, "ukiyoe-photo-32.safetensors")

`out` gets the blended generator as ``culturegan convert`` writes models (loading.save_model:
.safetensors with the model card in it, the card as .json beside it), so load_generator and
``culturegan generate`` read it. Its card is the structure model's (the blend shares its mapping,
hence its W space and its source_file) with a "blend" entry: both sources (file name, SHA-256,
network, the cultures their cards name, and where blend found them, resolved (a run: the
checkpoint blended), with that file's SHA-256 (a converted file's source_file is the file it was
converted from): evaluate projects photos into the one that makes them,
culturegan.transfer.latent_transfer.default_base), the swap resolution, the width (null: the
hard switch) and every layer's rendering weight. ``{out stem}_blend_grid.png``
beside it has one row per generator (the structure model, the blend at each grid resolution
from low to high, the rendering model) and one column per seed, each image
culturegan.transfer.generate.render's: NVlabs' z for the seed, truncation 0.7, noise mode
'const', so each column differs only by the layers swapped. Everything is checked, blended and
rendered before the first file is written.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image

from culturegan._files import atomic_path
from culturegan.data.images import TileGrid
from culturegan.models import checkpoints
from culturegan.models.blending import MIN_RESOLUTION, blend_generators, rendering_weights
from culturegan.models.loading import load_generator, save_model
from culturegan.models.stylegan2 import Generator
from culturegan.transfer.generate import IMAGE_CHANNELS, check_seeds, class_labels, default_device, render
from culturegan.transfer.latent_transfer import model_sha256

GRID_SEEDS = (0, 1, 2, 3)
GRID_RESOLUTIONS = (8, 16, 32, 64)  # toonify's sweep; those below the model's resolution are used
GRID_TRUNCATION = 0.7  # NVlabs' usual
GRID_NOISE_MODE = "const"
MAX_GRID_SEEDS = 16  # columns: a mistyped range fails at once instead of rendering thousands of images
GRID_SUFFIX = "_blend_grid.png"
GRID_GAP = 2  # pixels between images


def grid_path(out: str | os.PathLike) -> Path:
    """Where blend_files writes the grid of a blend written to `out`."""
    out = Path(out)
    return out.with_name(out.stem + GRID_SUFFIX)


def parse_resolutions(text: str) -> list[int]:
    """"8,16,32" -> [8, 16, 32] (blend_generators checks that each is a block's)."""
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"grid resolutions {text!r}: expected resolutions separated by commas, e.g. 8,16,32") from None


def blend_files(structure: str | os.PathLike, rendering: str | os.PathLike, resolution: int,
                out: str | os.PathLike, width: float | None = None, grid_seeds: Iterable[int] = GRID_SEEDS,
                grid_resolutions: Sequence[int] | None = None, class_index: int | None = None,
                device: str | None = None) -> tuple[Path, Path]:
    """Blends the generators in the files `structure` and `rendering` (anything load_generator
    reads as a StyleGAN2 generator) at `resolution` (and `width`, see blend_generators), writes
    the blend to `out` and its grid beside it (see the module docstring); returns both paths.
    grid_resolutions default to GRID_RESOLUTIONS below the generators' resolution (4 when none
    is); class_index picks the class of conditional generators for the grid. ValueError
    (FileNotFoundError for a missing input) before anything is written."""
    out = Path(out)
    _check_output(out, structure, rendering)
    seeds = check_seeds(grid_seeds)
    if len(seeds) > MAX_GRID_SEEDS:
        raise ValueError(f"{len(seeds)} grid seeds given; the grid has at most {MAX_GRID_SEEDS} columns")
    device = device or default_device()
    structure_model, structure_card = _stylegan2_generator(structure, "structure", device)
    rendering_model, rendering_card = _stylegan2_generator(rendering, "rendering", device)
    blended = blend_generators(structure_model, rendering_model, resolution, width)
    if grid_resolutions is None:  # a generator of 4 or 8 px has none of them below its resolution: 4, its first
        grid_resolutions = [r for r in GRID_RESOLUTIONS if r < structure_model.img_resolution] or [MIN_RESOLUTION]
    rows = [structure_model] + [blend_generators(structure_model, rendering_model, r, width)
                                for r in _sorted_resolutions(grid_resolutions)] + [rendering_model]
    grid = Image.fromarray(_grid(rows, seeds, class_labels(structure_model, class_index)).pixels)
    card = _blend_card(structure_card, rendering_card, structure_model.img_resolution, resolution, width)
    for role, path in (("structure", structure), ("rendering", rendering)):  # a run: the checkpoint blended
        place = (checkpoints.checkpoint_directory(Path(path)) or Path(path)).resolve()
        card["blend"][role].update(path=str(place), path_sha256=model_sha256(place))
    save_model(blended, card, out)
    with atomic_path(grid_path(out)) as temporary:
        grid.save(temporary, format="PNG")
    return out, grid_path(out)


def _stylegan2_generator(path: str | os.PathLike, role: str, device: str) -> tuple[Generator, dict]:
    """(generator, card) of the `role` ("structure" or "rendering") file `path`."""
    model, card = load_generator(path, device=device)
    if not isinstance(model, Generator):
        raise ValueError(f"the {role} model {path} is a {card['description']}; blend takes StyleGAN2 generators")
    if model.img_channels not in IMAGE_CHANNELS:
        raise ValueError(f"the {role} model {path} makes {model.img_channels}-channel images; the grid shows 1 (grey) "
                         "or 3 (RGB) channels")
    return model, card


def _check_output(out: Path, *inputs: str | os.PathLike) -> None:
    if out.suffix != ".safetensors":
        raise ValueError(f"blend writes a .safetensors file, got {out}")
    for written in (out, out.with_suffix(".json"), grid_path(out)):
        if any(written.resolve() == Path(source).resolve() for source in inputs):
            raise ValueError(f"blend would overwrite its input {written}")
        if written.is_dir():
            raise ValueError(f"output {written} is a folder")


def _sorted_resolutions(resolutions: Sequence[int]) -> list[int]:
    """The grid's resolutions, ascending; blend_generators checks each."""
    resolutions = list(resolutions)
    if not resolutions:
        raise ValueError("no grid resolutions given: name at least one")
    if len(set(resolutions)) != len(resolutions):
        raise ValueError(f"grid resolutions {resolutions} name one twice")
    return sorted(resolutions)


def _grid(generators: list[Generator], seeds: list[int], labels) -> TileGrid:
    """One row per generator, one column per seed (see the module docstring)."""
    size, channels = generators[0].img_resolution, generators[0].img_channels
    shape = (size, size) if channels == 1 else (size, size, channels)
    grid = TileGrid(len(generators) * len(seeds), len(seeds), shape, gap=GRID_GAP)
    for row, generator in enumerate(generators):
        for column, seed in enumerate(seeds):
            grid.paste(row * len(seeds) + column, render(generator, seed, GRID_TRUNCATION, GRID_NOISE_MODE, labels))
    return grid


def _blend_card(structure: dict, rendering: dict, img_resolution: int, resolution: int,
                width: float | None) -> dict:
    card = copy.deepcopy(structure)
    switch = "hard switch" if width is None else f"logistic, width {width:g} layer positions"
    card["description"] = (f"{structure['description']}, layer-swapped at {resolution} px ({switch}): structure "
                           f"{structure['source_file']['name']}, rendering {rendering['source_file']['name']}")
    sources = {role: {**model["source_file"], "cultures": model.get("cultures", {})}
               for role, model in (("structure", structure), ("rendering", rendering))}
    card["blend"] = {**sources, "resolution": resolution, "width": width,
                     "rendering_weights": rendering_weights(img_resolution, resolution, width)}
    return card


__all__ = ["GRID_RESOLUTIONS", "GRID_SEEDS", "blend_files", "grid_path", "parse_resolutions"]
