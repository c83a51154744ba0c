"""A procedural culture dataset that ships with the library: nothing can be downloaded at run
time, so the demo and the tests draw their cultures. Each culture has its own colour, texture
and line signature; the images are seeded (the same seed gives the same bytes everywhere).

- ink_wash: near-monochrome ink on warm paper; diffuse wet strokes and misty mountain ridges;
  large empty areas.
- ukiyoe: flat colour regions in a limited palette (Prussian blue, indigo, beige, vermilion),
  bold dark outlines, stylised waves and clouds.
- impressionist: dense short coloured dabs over smooth sky/land gradients; no outlines.
- kente: bright woven stripes and blocks (gold, green, red, black) on a grid.
- content ("photo"): procedural scenes (sky, hills, sun, houses, trees) with photographic
  shading and sensor noise, the images to transfer; and, when asked for (it needs
  scikit-image), scikit-image's sample photographs ("sample_photos", centre-cropped squares).
  They are never added just because scikit-image happens to be installed: evaluation treats
  every sub-folder as a culture, so the dataset and the demo's numbers would depend on it.

This is a stand-in for real culture collections: the real use is the user's own folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from culturegan._files import atomic_path
from culturegan._progress import progress_bar

Generator = Callable[[np.random.Generator, int], Image.Image]


def _canvas(rng: np.random.Generator, size: int, colour, noise: float) -> np.ndarray:
    base = np.ones((size, size, 3)) * np.asarray(colour, dtype=float)
    return base + rng.normal(0, noise, (size, size, 1)) if noise else base


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _curve(rng: np.random.Generator, size: int, points: int = 6) -> list[tuple[float, float]]:
    """A smooth random stroke path across part of the canvas."""
    start = rng.uniform(0.1, 0.9, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    path, position = [], start
    for _ in range(points):
        angle += rng.normal(0, 0.5)
        position = position + size * 0.12 * np.array([np.cos(angle), np.sin(angle)])
        path.append(tuple(position))
    return [tuple(start)] + path


def ink_wash(rng: np.random.Generator, size: int) -> Image.Image:
    paper = _canvas(rng, size, rng.uniform([228, 220, 200], [245, 238, 222]), 3)
    image = _to_image(paper)
    ink = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ink)
    for _ in range(rng.integers(1, 3)):  # misty ridges: a filled band, darker at the top
        base = rng.uniform(0.45, 0.85) * size
        xs = np.linspace(0, size, 9)
        ys = base - np.abs(np.cumsum(rng.normal(0, size * 0.08, 9)))
        draw.polygon([(0, size), *zip(xs, ys), (size, size)], fill=int(rng.uniform(60, 140)))
    ink = ink.filter(ImageFilter.GaussianBlur(size * 0.03))
    strokes = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(strokes)
    for _ in range(rng.integers(2, 6)):
        draw.line(_curve(rng, size), fill=int(rng.uniform(150, 240)), width=int(rng.uniform(0.01, 0.04) * size) + 1)
    strokes = strokes.filter(ImageFilter.GaussianBlur(size * 0.006))
    density = np.maximum(np.asarray(ink, float), np.asarray(strokes, float)) / 255
    ink_colour = rng.uniform([15, 15, 20], [40, 38, 40])
    pixels = np.asarray(image, float) * (1 - density[..., None]) + ink_colour * density[..., None]
    return _to_image(pixels)


UKIYOE_PALETTE = np.array([[30, 60, 110], [22, 38, 80], [225, 210, 170], [200, 70, 45], [245, 240, 225],
                           [90, 130, 150]], dtype=float)


def ukiyoe(rng: np.random.Generator, size: int) -> Image.Image:
    sky, sea, accent = UKIYOE_PALETTE[[2, 0, 3]]
    image = Image.new("RGB", (size, size), tuple(int(c) for c in sky))
    draw = ImageDraw.Draw(image)
    outline = (20, 18, 25)
    width = max(2, size // 48)
    horizon = rng.uniform(0.35, 0.6) * size
    if rng.random() < 0.5:  # a red sun or a mountain in the flat sky
        r = rng.uniform(0.06, 0.12) * size
        cx, cy = rng.uniform(0.2, 0.8) * size, rng.uniform(0.1, 0.3) * size
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(c) for c in accent), outline=outline,
                     width=width)
    else:
        peak = rng.uniform(0.3, 0.7) * size
        draw.polygon([(peak - size * 0.3, horizon), (peak, horizon - size * 0.3), (peak + size * 0.3, horizon)],
                     fill=tuple(int(c) for c in UKIYOE_PALETTE[5]), outline=outline, width=width)
    waves = int(rng.integers(3, 6))
    for band in range(waves):  # stylised wave bands, alternating blues, outlined crests
        top = horizon + band * (size - horizon) / waves
        phase, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(0.02, 0.05) * size
        xs = np.linspace(0, size, 24)
        ys = top + amplitude * np.sin(xs / size * 2 * np.pi * rng.uniform(2, 4) + phase)
        colour = UKIYOE_PALETTE[band % 2]
        draw.polygon([(0, size), *zip(xs, ys), (size, size)], fill=tuple(int(c) for c in colour))
        draw.line(list(zip(xs, ys)), fill=outline, width=width)
        for x, y in zip(xs[::4], ys[::4]):  # foam
            draw.ellipse([x - width, y - width, x + width, y + width], fill=tuple(int(c) for c in UKIYOE_PALETTE[4]))
    for _ in range(rng.integers(1, 3)):  # clouds: flat white lobes with outlines
        cx, cy = rng.uniform(0.1, 0.9) * size, rng.uniform(0.05, 0.3) * size
        for lobe in range(3):
            r = size * 0.05
            draw.ellipse([cx + lobe * r - r, cy - r, cx + lobe * r + r, cy + r],
                         fill=tuple(int(c) for c in UKIYOE_PALETTE[4]), outline=outline, width=max(1, width // 2))
    pixels = np.asarray(image, float) + rng.normal(0, 2, (size, size, 1))  # paper grain
    return _to_image(pixels)


def impressionist(rng: np.random.Generator, size: int) -> Image.Image:
    y = np.linspace(0, 1, size)[:, None, None]
    sky_top, sky_bottom = rng.uniform([70, 120, 190], [120, 170, 230]), rng.uniform([200, 200, 190], [250, 230, 200])
    land = rng.uniform([60, 110, 40], [130, 160, 80])
    horizon = rng.uniform(0.4, 0.65)
    gradient = np.where(y < horizon, sky_top + (sky_bottom - sky_top) * (y / horizon), land * (1.2 - 0.4 * y))
    pixels = np.broadcast_to(gradient, (size, size, 3)).copy()
    image = _to_image(pixels)
    draw = ImageDraw.Draw(image)
    length = max(3, size // 24)
    for _ in range(int(size * size / 18)):  # dense short dabs in colours near the local one
        x, yy = rng.uniform(0, size, 2)
        local = pixels[int(yy) % size, int(x) % size]
        colour = np.clip(local + rng.normal(0, 35, 3) + rng.choice([0, 40]) * rng.normal(0, 1, 3), 0, 255)
        angle = rng.normal(0.3, 0.4)
        dx, dy = length * np.cos(angle), length * np.sin(angle)
        draw.line([(x - dx, yy - dy), (x + dx, yy + dy)], fill=tuple(int(c) for c in colour),
                  width=max(2, size // 40))
    return image.filter(ImageFilter.SMOOTH)


KENTE_PALETTE = np.array([[235, 180, 20], [20, 120, 50], [200, 30, 30], [15, 15, 15], [240, 200, 60],
                          [30, 60, 140]], dtype=float)


def kente(rng: np.random.Generator, size: int) -> Image.Image:
    strip = int(rng.integers(size // 8, size // 4))
    colours = KENTE_PALETTE[rng.permutation(len(KENTE_PALETTE))[:4]]
    rows, cols = np.mgrid[0:size, 0:size]
    stripe = max(2, strip // int(rng.integers(3, 6)))
    horizontal = colours[(rows // stripe) % 3]
    block = ((rows // strip) + (cols // strip)) % 2 == 0
    vertical = colours[1 + (cols // stripe) % 3]
    pixels = np.where(block[..., None], horizontal, vertical)
    weave = ((rows + cols) % 4 < 2)[..., None] * rng.uniform(-18, 18)  # the weave's texture
    return _to_image(pixels + weave + rng.normal(0, 4, (size, size, 1)))


def photo(rng: np.random.Generator, size: int) -> Image.Image:
    """A content image: a lit outdoor scene with soft shading and sensor noise."""
    y = np.linspace(0, 1, size)[:, None, None]
    sky = rng.uniform([90, 140, 200], [150, 190, 240]) * (1.05 - 0.3 * y) + 20 * y
    image = _to_image(np.broadcast_to(sky, (size, size, 3)).copy())
    draw = ImageDraw.Draw(image)
    r = rng.uniform(0.04, 0.09) * size
    cx, cy = rng.uniform(0.1, 0.9) * size, rng.uniform(0.08, 0.3) * size
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(250, 235, 180))
    for depth in range(3):  # hills, farther ones paler
        base = (0.5 + 0.15 * depth) * size
        xs = np.linspace(0, size, 12)
        ys = base - np.abs(np.cumsum(rng.normal(0, size * 0.04, 12)))
        green = np.array([70, 120, 60]) * (1 - 0.25 * (2 - depth)) + 60 * (2 - depth)
        draw.polygon([(0, size), *zip(xs, ys), (size, size)], fill=tuple(int(c) for c in green))
    for _ in range(rng.integers(1, 4)):  # houses and trees
        x, ground = rng.uniform(0.1, 0.85) * size, rng.uniform(0.7, 0.9) * size
        w = rng.uniform(0.08, 0.15) * size
        if rng.random() < 0.5:
            wall = tuple(int(c) for c in rng.uniform([150, 120, 100], [230, 210, 190]))
            draw.rectangle([x, ground - w, x + w, ground], fill=wall)
            draw.polygon([(x - w * 0.1, ground - w), (x + w / 2, ground - 1.6 * w), (x + 1.1 * w, ground - w)],
                         fill=(140, 50, 40))
            draw.rectangle([x + w * 0.4, ground - w * 0.45, x + w * 0.6, ground], fill=(70, 50, 40))
        else:
            draw.rectangle([x + w * 0.4, ground - w, x + w * 0.6, ground], fill=(90, 60, 40))
            draw.ellipse([x, ground - 2.2 * w, x + w, ground - 0.8 * w], fill=(40, 100, 45))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(size * 0.004)), float)
    shade = 0.85 + 0.3 * np.linspace(0, 1, size)[None, :, None] * rng.uniform(-0.5, 0.5)  # light falloff
    return _to_image(pixels * shade + rng.normal(0, 5, (size, size, 3)))


SAMPLE_PHOTOS = "sample_photos"
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "motorcycle_left",
                  "retina", "cat", "hubble_deep_field")


def scikit_image_photos(size: int) -> list[Image.Image]:
    """scikit-image's colour sample photographs as size x size centre crops; ValueError when
    scikit-image, or every one of those photographs, is missing."""
    try:
        from skimage import data
    except ImportError:
        raise ValueError("the sample photos need scikit-image, which is not installed "
                         "(pip install scikit-image)") from None
    photos = []
    for name in SKIMAGE_PHOTOS:
        loader = getattr(data, name, None)
        try:
            pixels = None if loader is None else np.asarray(loader())
        except (OSError, ValueError):  # an image that needs a download (pooch) is skipped
            continue
        if pixels is None or pixels.ndim != 3 or pixels.shape[2] < 3:
            continue
        image = Image.fromarray(pixels[..., :3].astype(np.uint8), "RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        photos.append(image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS))
    if not photos:
        raise ValueError(f"scikit-image holds none of its colour sample photos ({', '.join(SKIMAGE_PHOTOS)})")
    return photos


CULTURES: dict[str, Generator] = {"ink_wash": ink_wash, "ukiyoe": ukiyoe, "impressionist": impressionist,
                                  "kente": kente}
CONTENT = "photo"


def culture_image(culture: str, index: int, size: int = 128, seed: int = 0) -> Image.Image:
    """Image `index` of a culture (or of CONTENT), the same for the same arguments."""
    generators = {**CULTURES, CONTENT: photo}
    if culture not in generators:
        raise ValueError(f"unknown synthetic culture {culture!r}; choose from {', '.join(generators)}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    rng = np.random.default_rng([seed, list(generators).index(culture), index])
    return generators[culture](rng, size)


def write_dataset(root: str | os.PathLike, count: int = 200, size: int = 128, seed: int = 0,
                  cultures: list[str] | None = None, content: bool = True, progress: bool = False,
                  sample_photos: bool = False) -> Path:
    """root/<culture>/<index>.png for every culture (and root/photo/ with content images):
    a culture folder that culturegan's data, training and evaluation read. `sample_photos`
    adds root/sample_photos/ with scikit-image's sample photographs (ValueError without it)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    photos = scikit_image_photos(size) if sample_photos else []  # fails, if it must, before anything is written
    root = Path(root)
    names = list(cultures or CULTURES) + ([CONTENT] if content else [])
    jobs = [(name, index) for name in names for index in range(count)]
    for name, index in progress_bar(jobs, enabled=progress, unit="image"):
        _save(culture_image(name, index, size, seed), root / name / f"{index:05d}.png")
    for index, photo_image in enumerate(photos):
        _save(photo_image, root / SAMPLE_PHOTOS / f"{index:05d}.png")
    return root


def _save(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")
