"""culturegan.data: culture image folders (ROOT/<culture>/<images>): reading, cleaning, augmenting, loading."""

from culturegan.data.clean import CleanReport, Entry, clean, find_cultures, perceptual_hash, write_manifest
from culturegan.data.folders import CultureImages, make_loader
from culturegan.data.images import IMAGE_EXTENSIONS, ImageReadError, open_rgb
from culturegan.data.transforms import Augment

__all__ = ["IMAGE_EXTENSIONS", "Augment", "CleanReport", "CultureImages", "Entry", "ImageReadError", "clean",
           "find_cultures", "make_loader", "open_rgb", "perceptual_hash", "write_manifest"]
