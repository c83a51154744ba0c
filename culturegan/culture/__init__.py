"""culturegan.culture: culture features (colour, texture, line) and culture profiles."""

from culturegan.culture.features import GROUPS, CultureFeatureExtractor, CultureFeatures, extract, rgb_to_lab
from culturegan.culture.profile import CultureProfile

__all__ = ["GROUPS", "CultureFeatureExtractor", "CultureFeatures", "CultureProfile", "extract", "rgb_to_lab"]
