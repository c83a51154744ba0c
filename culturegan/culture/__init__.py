"""culturegan.culture: culture features (colour, texture, line), culture profiles, and which
feature groups separate a dataset's cultures."""

from culturegan.culture.features import (GROUPS, REFERENCE_SIDE, CultureFeatureExtractor, CultureFeatures, extract,
                                        reference_features, reference_view, rgb_to_lab)
from culturegan.culture.profile import CultureProfile, folder_features
from culturegan.culture.separation import Separation, classify, folder_separation, separation

__all__ = ["GROUPS", "REFERENCE_SIDE", "CultureFeatureExtractor", "CultureFeatures", "CultureProfile", "Separation",
           "classify", "extract", "folder_features", "folder_separation", "reference_features", "reference_view",
           "rgb_to_lab", "separation"]
