"""culturegan.data: culture image folders (ROOT/<culture>/<images>): reading, cleaning, augmenting, loading."""

from culturegan.data.clean import CleanReport, Entry, clean, find_cultures, perceptual_hash, write_manifest
from culturegan.data.folders import CultureImages, centre_cropped, ignore_stop_signals, load_images, make_loader
from culturegan.data.images import (IMAGE_EXTENSIONS, ImageReadError, is_image_file, open_image, open_rgb,
                                    split_alpha, to_tensor)
from culturegan.data.transforms import Augment

__all__ = ["IMAGE_EXTENSIONS", "Augment", "CleanReport", "CultureImages", "Entry", "ImageReadError", "centre_cropped",
           "clean", "find_cultures", "ignore_stop_signals", "is_image_file", "load_images", "make_loader", "open_image",
           "open_rgb", "perceptual_hash", "split_alpha", "to_tensor", "write_manifest"]
