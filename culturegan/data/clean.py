"""`culturegan data clean ROOT`: check a culture folder and write a manifest of what to keep.

A culture dataset is ROOT/<culture>/<image files>. Cleaning reads every image once and rejects,
with the reason: unreadable or truncated files, images whose shorter side is below
`min_side`, exact duplicates (the same bytes) and near duplicates (64-bit perceptual hashes
within `near_duplicate_distance` bits), across all cultures: the same picture under two
cultures is as suspicious as twice under one. Of duplicates, the first in order (cultures,
then paths, sorted) is kept. Grayscale, alpha, CMYK, 16-bit and palette images are kept and
noted as converted to RGB in memory. The user's files are never changed: the result is a JSON
manifest, written atomically (a temporary file, then a rename).

It scales to large collections (100k images): images are decoded in a pool of worker processes,
with a progress bar, and near duplicates are searched among all hashes at once in NumPy
(`near_duplicates`) instead of comparing every image with every kept one in Python.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from culturegan._files import write_text
from culturegan._progress import progress_bar
from culturegan.data.images import IMAGE_EXTENSIONS, ImageReadError, is_image_file, open_rgb

logger = logging.getLogger(__name__)

MANIFEST_NAME = "culturegan-manifest.json"
HASH_BITS = 64
# What an entry's "phash" holds; the manifest's settings record it, as hashes of other
# definitions (culturegan 0.1.0's had 63 bits: the 8 x 8 block less its DC term) do not compare.
PHASH_FORMAT = ("pHash: 64 bits, 16 hex digits; DCT-II of a 32 x 32 grayscale copy, coefficients (0..7, 0..7) "
                "less (0, 0), row by row, then (0, 8); a bit is 1 where its coefficient is above their median")
# Near-duplicate distances up to this are searched by multi-index hashing, larger ones by a scan
# of the kept hashes (see near_duplicates).
MULTI_INDEX_MAX_DISTANCE = 4
# The default number of decoding processes: the usable cores, at most this many, so that a default
# run on a many-core server does not start dozens of processes (each with its own memory) while
# one parent collects their results. A guard, not a tuned optimum: pass workers for more.
DEFAULT_MAX_WORKERS = 8

# The DCT-II basis of 32 samples, frequencies 0..8 (the hash uses no higher ones): row u holds
# cos(pi * u * (2x + 1) / 64).
_DCT_LOW = np.cos(np.pi * np.outer(np.arange(9), 2 * np.arange(32) + 1) / 64)
_BYTE_BITS = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


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
    phash: str = ""  # PHASH_FORMAT


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
    """64-bit DCT hash (pHash) of a 32 x 32 grayscale copy: one bit per low-frequency DCT
    coefficient, 1 where it is above their median; the 8 x 8 lowest frequencies less the DC term,
    row by row, then frequency (0, 8), the first the most significant bit. Robust to re-encoding,
    resizing and small colour shifts."""
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = _DCT_LOW @ pixels @ _DCT_LOW.T
    # The DC term says only the brightness; without it the 8 x 8 block holds 63 coefficients
    # (culturegan 0.1.0's hash), and the next horizontal frequency makes the 64th bit. phash.org's
    # block, frequencies 1..8 down and across, also holds 64 but drops the lowest purely
    # horizontal and vertical ones: on 100 pictures x 5 changes (WebP, JPEG, resizing,
    # brightening) it let 1.8% of the copies drift beyond 4 bits, against 0.8% here.
    coefficients = np.append(low[:8, :8].ravel()[1:], low[0, 8])
    bits = coefficients > np.median(coefficients)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def clean(root: str | os.PathLike, min_side: int = 64, near_duplicate_distance: int = 4,
          workers: int | None = None, progress: bool = False) -> CleanReport:
    """Checks every image of the culture folders under root (see the module docstring).

    workers: processes that decode the images; 0 or 1 decode in this process, None (the default)
    uses the usable CPU cores, at most DEFAULT_MAX_WORKERS. The result does not depend on it.
    progress: a progress bar over the decoding (shown only on a terminal).
    """
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    if near_duplicate_distance < 0:
        raise ValueError(f"near_duplicate_distance must be >= 0 (0: equal hashes only), got {near_duplicate_distance}")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 (0 or 1: decode in this process), got {workers}")
    root = Path(root)
    images, empty = _list_images(root)
    inspected = _inspect_all(images, root, min_side, _worker_count(workers, len(images)), progress)
    _reject_duplicates(inspected, near_duplicate_distance)
    settings = {"min_side": min_side, "near_duplicate_distance": near_duplicate_distance, "empty_cultures": empty,
                "perceptual_hash": PHASH_FORMAT}
    return CleanReport(str(root), settings, [entry for entry, _ in inspected])


def _list_images(root: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    """(every image file with its culture, cultures then paths sorted: the order in which the
    first of duplicates is kept; the cultures without images), or ValueError when none has any."""
    images: list[tuple[Path, str]] = []
    empty: list[str] = []
    for folder in find_cultures(root):
        files = sorted(p for p in folder.rglob("*") if is_image_file(p))
        images += [(path, folder.name) for path in files]
        if not files:
            empty.append(folder.name)
    if not images:
        raise ValueError(f"no images in the culture folders of {root} ({', '.join(empty)}): expected files ending in "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    return images, empty


def _worker_count(workers: int | None, images: int) -> int:
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(cores, DEFAULT_MAX_WORKERS)
    return min(workers, images)


def _inspect_all(images: list[tuple[Path, str]], root: Path, min_side: int, workers: int,
                 progress: bool) -> list[tuple[Entry, int | None]]:
    """_inspect of every image, in order, in this process (workers <= 1) or in a process pool."""
    inspect = functools.partial(_inspect, root=root, min_side=min_side)
    paths, cultures = zip(*images)
    bar = functools.partial(progress_bar, total=len(images), desc="decoding", unit="image", enabled=progress)
    if workers <= 1:
        logger.info("decoding %d images", len(images))
        return list(bar(map(inspect, paths, cultures)))
    logger.info("decoding %d images in %d processes", len(images), workers)
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_pool_context())
    try:
        # Tasks of several images (one round trip each), but enough of them for the bar to move
        # and for the workers to finish together.
        chunk = max(1, min(64, len(images) // (16 * workers)))
        return list(bar(pool.map(inspect, paths, cultures, chunksize=chunk)))
    finally:
        pool.shutdown(cancel_futures=True)  # after an error or Ctrl-C, the images not yet begun are dropped


def _pool_context() -> multiprocessing.context.BaseContext:
    # Fork where it is safe (Linux): a worker starts in milliseconds with this module loaded,
    # where spawn (and forkserver, Python 3.14's default) imports it afresh, and through
    # culturegan.data torch, seconds per worker. The workers use PIL and NumPy, never torch, whose
    # thread pools a forked child could not use. Elsewhere, the platform's default.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None)


def _inspect(path: Path, culture: str, *, root: Path, min_side: int) -> tuple[Entry, int | None]:
    """One image's entry, kept unless unreadable or too small (duplicates are decided later,
    across all images), and its perceptual hash (None when rejected). Runs in the workers."""
    entry = Entry(str(path.relative_to(root)), culture, kept=False)
    try:
        entry.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        image, mode = open_rgb(path)
    except ImageReadError as error:
        entry.reason = f"unreadable: {str(error).split(': ', 1)[-1]}"
        return entry, None
    except OSError as error:  # the file itself (permissions, I/O): one bad file must not stop 100k
        entry.reason = f"unreadable: {error.strerror or error}"
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


def _reject_duplicates(inspected: list[tuple[Entry, int | None]], near_duplicate_distance: int) -> None:
    """Rejects, among the images still kept, exact duplicates (the bytes of an earlier one), then
    near duplicates of the rest (near_duplicates' rule); the earlier image is the one kept."""
    first_with_bytes: dict[str, str] = {}
    distinct: list[tuple[Entry, int]] = []
    for entry, phash in inspected:
        if not entry.kept:
            continue
        if entry.sha256 in first_with_bytes:
            entry.kept, entry.reason = False, f"exact duplicate of {first_with_bytes[entry.sha256]}"
            continue
        first_with_bytes[entry.sha256] = entry.path
        distinct.append((entry, phash))
    hashes = np.array([phash for _, phash in distinct], dtype=np.uint64)
    nearest, bits = near_duplicates(hashes, near_duplicate_distance)
    for (entry, _), original, bits_apart in zip(distinct, nearest.tolist(), bits.tolist()):
        if original >= 0:
            entry.kept = False
            entry.reason = (f"near duplicate of {distinct[original][0].path} "
                            f"({bits_apart} of {HASH_BITS} hash bits differ)")


def near_duplicates(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """The near-duplicate rule over uint64 hashes, in order: a hash is kept unless it is within
    `distance` bits of an earlier kept one; then it is a near duplicate of the nearest of those
    (fewest differing bits; of equals, the earliest). Returns (nearest: that kept hash's index,
    or -1 for a kept hash; bits: the bits they differ in, 0 for a kept hash), int64 arrays.

    Both searches below are exact; each is fast where the other is slow. Multi-index hashing
    (Norouzi et al., 2012) splits the hashes into distance + 1 chunks; any two within `distance`
    bits agree on one whole chunk (pigeonhole), so each hash is compared only with the kept
    hashes that share a chunk with it. Only kept hashes are indexed, and they are pairwise more
    than `distance` apart, so a cluster of equal or near-equal hashes (flat placeholder images,
    re-encoded copies) keeps one and never fills a bucket. The buckets grow as the chunks narrow
    (100k random hashes, the 2-core VM: 0.5 s at distance 0, 2.6 s at 4 with 13-bit chunks, 8 s
    at 5, 32 s at 6), while a scan of the kept hashes, XOR and popcount in NumPy, takes 4-5 s
    whatever the distance (hashes x kept comparisons, which large distances, keeping few, make
    cheaper): beyond 4 the kept hashes are scanned.
    A BK-tree was not used: its queries walk the tree node by node in Python.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    distance = min(distance, HASH_BITS)  # no two hashes differ in more
    if distance <= MULTI_INDEX_MAX_DISTANCE:
        return _index_kept(hashes, distance)
    return _scan_kept(hashes, distance)


def _index_kept(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """near_duplicates' rule by multi-index hashing over the kept hashes, in Python integers:
    per hash, a few dictionary lookups and a popcount per candidate."""
    bounds = np.linspace(0, HASH_BITS, distance + 2).astype(int).tolist()
    chunks = [(low, (1 << (high - low)) - 1) for low, high in zip(bounds[:-1], bounds[1:])]
    values = hashes.tolist()
    buckets: list[dict[int, list[int]]] = [{} for _ in chunks]
    nearest, nearest_bits = [-1] * len(values), [0] * len(values)
    for index, value in enumerate(values):
        keys = [(value >> low) & mask for low, mask in chunks]
        candidates = sorted({kept for bucket, key in zip(buckets, keys) for kept in bucket.get(key, ())})
        best, best_bits = -1, distance + 1
        for kept in candidates:  # in order, so that of equal distances the earliest kept wins
            bits = (value ^ values[kept]).bit_count()
            if bits < best_bits:
                best, best_bits = kept, bits
        if best >= 0:
            nearest[index], nearest_bits[index] = best, best_bits
            continue
        for bucket, key in zip(buckets, keys):
            bucket.setdefault(key, []).append(index)
    return np.array(nearest, dtype=np.int64), np.array(nearest_bits, dtype=np.int64)


def _scan_kept(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """near_duplicates' rule as it reads: each hash against every kept one so far."""
    nearest = np.full(len(hashes), -1, dtype=np.int64)
    nearest_bits = np.zeros(len(hashes), dtype=np.int64)
    kept = np.empty(len(hashes), dtype=np.uint64)
    kept_index = np.empty(len(hashes), dtype=np.int64)
    count = 0
    for index, phash in enumerate(hashes):
        if count:
            bits = _bits_set(kept[:count] ^ phash)
            best = int(bits.argmin())  # of equal distances, the earliest kept
            if bits[best] <= distance:
                nearest[index], nearest_bits[index] = kept_index[best], bits[best]
                continue
        kept[count], kept_index[count] = phash, index
        count += 1
    return nearest, nearest_bits


def _bits_set_by_table(values: np.ndarray) -> np.ndarray:
    """The set bits of each uint64, summed from a table of every byte value's."""
    as_bytes = np.ascontiguousarray(values, dtype=np.uint64).view(np.uint8)
    return _BYTE_BITS[as_bytes].reshape(len(values), 8).sum(axis=1, dtype=np.uint8)


_bits_set = getattr(np, "bitwise_count", _bits_set_by_table)  # NumPy 2 has a popcount; 1.x, the table


def write_manifest(report: CleanReport, path: str | os.PathLike) -> Path:
    """Writes the report as JSON, atomically: a reader sees the old file or the whole new one."""
    path = Path(path)
    document = {"root": report.root, "settings": report.settings,
                "cultures": {c: [e.path for e in report.kept(c)] for c in report.cultures()},
                "entries": [dataclasses.asdict(e) for e in report.entries]}
    return write_text(path, json.dumps(document, indent=2) + "\n")
