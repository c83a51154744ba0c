"""culturegan.data: culture image folders (ROOT/<culture>/<images>): reading and cleaning."""

from culturegan.data.clean import CleanReport, Entry, clean, find_cultures, perceptual_hash, write_manifest
from culturegan.data.images import IMAGE_EXTENSIONS, ImageReadError, open_rgb

__all__ = ["IMAGE_EXTENSIONS", "CleanReport", "Entry", "ImageReadError", "clean", "find_cultures", "open_rgb",
           "perceptual_hash", "write_manifest"]
