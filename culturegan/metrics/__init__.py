"""culturegan.metrics: how culturally consistent transferred images are (recognisability,
distribution distances per feature group, content preservation, cycle error, diversity,
deception), with judge features the culture loss never sees."""

from culturegan.metrics.judge import JUDGE_GROUPS, judge_features
from culturegan.metrics.scores import (NearestCentroid, confusion, cycle_error, deception_rate, diversity, edge_f1,
                                       edge_map, frechet_distance, kid, recognisability, ssim_lowpass,
                                       within_culture_scale)

__all__ = ["JUDGE_GROUPS", "NearestCentroid", "confusion", "cycle_error", "deception_rate", "diversity", "edge_f1",
           "edge_map", "frechet_distance", "judge_features", "kid", "recognisability", "ssim_lowpass",
           "within_culture_scale"]
