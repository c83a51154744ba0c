"""`culturegan data clean ROOT`: check a culture folder and write a manifest of what to keep.

A culture dataset is ROOT/<culture>/<image files>. Cleaning reads every image once and rejects,
with the reason: unreadable or truncated files, images whose shorter side is below
`min_side`, exact duplicates (the same bytes) and near duplicates (perceptual
hashes within `near_duplicate_distance` bits), across all cultures: the same picture under two
cultures is as suspicious as twice under one. Grayscale, alpha, CMYK, 16-bit and palette images
are kept and noted as converted to RGB in memory. The user's files are never changed: the
result is a JSON manifest, written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from culturegan._files import write_text
from culturegan.data.images import ImageReadError, is_image_file, open_rgb

MANIFEST_NAME = "culturegan-manifest.json"
HASH_SIZE = 8  # an 8 x 8 DCT block: 64-bit perceptual hashes


@dataclasses.dataclass
class Entry:
    path: str  # relative to the dataset root
    culture: str
    kept: bool
    reason: str = ""  # why it was rejected, or what conversion it needs
    width: int = 0
    height: int = 0
    mode: str = ""
    sha256: str = ""
    phash: str = ""


@dataclasses.dataclass
class CleanReport:
    root: str
    settings: dict
    entries: list[Entry]

    def kept(self, culture: str | None = None) -> list[Entry]:
        return [e for e in self.entries if e.kept and (culture is None or e.culture == culture)]

    def rejected(self) -> list[Entry]:
        return [e for e in self.entries if not e.kept]

    def cultures(self) -> list[str]:
        return sorted({e.culture for e in self.entries} | set(self.settings.get("empty_cultures", [])))

    def summary(self) -> str:
        lines = [f"{self.root}: {len(self.kept())} images kept, {len(self.rejected())} rejected"]
        for culture in self.cultures():
            rejected = [e for e in self.rejected() if e.culture == culture]
            lines.append(f"  {culture}: {len(self.kept(culture))} kept, {len(rejected)} rejected")
        lines += [f"  rejected {e.path}: {e.reason}" for e in self.rejected()]
        return "\n".join(lines)


def find_cultures(root: Path) -> list[Path]:
    """The culture folders of a dataset root (its sub-folders), or a clear error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    cultures = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not cultures:
        raise ValueError(f"no culture folders in {root}: expected {root}/<culture>/<images>, e.g. {root}/ukiyoe/1.jpg")
    return cultures


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT hash (pHash): the signs of the 8 x 8 lowest frequencies of a 32 x 32
    grayscale copy against their median. Robust to re-encoding, resizing and small colour shifts."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    basis = np.cos(np.pi * np.outer(np.arange(32), 2 * np.arange(32) + 1) / 64)  # DCT-II rows
    frequencies = (basis @ pixels @ basis.T)[:HASH_SIZE, :HASH_SIZE].ravel()
    bits = frequencies[1:] > np.median(frequencies[1:])  # the DC term says only the brightness
    return int("".join("1" if b else "0" for b in bits), 2)


def _inspect(path: Path, root: Path, culture: str, min_side: int) -> tuple[Entry, int | None]:
    entry = Entry(str(path.relative_to(root)), culture, kept=False)
    data = path.read_bytes()
    entry.sha256 = hashlib.sha256(data).hexdigest()
    try:
        image, mode = open_rgb(path)
    except ImageReadError as error:
        entry.reason = f"unreadable: {str(error).split(': ', 1)[-1]}"
        return entry, None
    entry.width, entry.height, entry.mode = image.width, image.height, mode
    if min(image.size) < min_side:
        entry.reason = f"too small: {image.width}x{image.height}, shorter side below {min_side}"
        return entry, None
    entry.kept = True
    entry.reason = "" if mode == "RGB" else f"converted from {mode} to RGB in memory"
    phash = perceptual_hash(image)
    entry.phash = f"{phash:016x}"
    return entry, phash


def clean(root: str | os.PathLike, min_side: int = 64, near_duplicate_distance: int = 4) -> CleanReport:
    """Checks every image of the culture folders under root (see the module docstring)."""
    if min_side < 1 or near_duplicate_distance < 0:
        raise ValueError(f"min_side must be >= 1 and near_duplicate_distance >= 0, got {min_side}, "
                         f"{near_duplicate_distance}")
    root = Path(root)
    entries: list[Entry] = []
    empty: list[str] = []
    seen_bytes: dict[str, str] = {}
    kept_hashes: list[tuple[int, str]] = []
    for folder in find_cultures(root):
        files = sorted(p for p in folder.rglob("*") if is_image_file(p))
        if not files:
            empty.append(folder.name)
        for path in files:
            entry, phash = _inspect(path, root, folder.name, min_side)
            entries.append(entry)
            if not entry.kept:
                continue
            if entry.sha256 in seen_bytes:
                entry.kept, entry.reason = False, f"exact duplicate of {seen_bytes[entry.sha256]}"
                continue
            seen_bytes[entry.sha256] = entry.path
            near = _nearest(phash, kept_hashes)
            if near is not None and near[0] <= near_duplicate_distance:
                entry.kept, entry.reason = False, f"near duplicate of {near[1]} ({near[0]} of 64 hash bits differ)"
                continue
            kept_hashes.append((phash, entry.path))
    settings = {"min_side": min_side, "near_duplicate_distance": near_duplicate_distance, "empty_cultures": empty}
    return CleanReport(str(root), settings, entries)


def _nearest(phash: int, kept: list[tuple[int, str]]) -> tuple[int, str] | None:
    if not kept:
        return None
    distances = [bin(phash ^ other).count("1") for other, _ in kept]
    best = int(np.argmin(distances))
    return distances[best], kept[best][1]


def write_manifest(report: CleanReport, path: str | os.PathLike) -> Path:
    """Writes the report as JSON, atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    document = {"root": report.root, "settings": report.settings,
                "cultures": {c: [e.path for e in report.kept(c)] for c in report.cultures()},
                "entries": [dataclasses.asdict(e) for e in report.entries]}
    return write_text(path, json.dumps(document, indent=2) + "\n")
