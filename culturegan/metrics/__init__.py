"""culturegan.metrics: how culturally consistent transferred images are (recognisability,
distribution distances per feature group, content preservation, cycle error, diversity,
deception), with judge features the culture loss never sees; and whether each output still
shows its own input (content retrieval, collapse), hides it (hidden signal) or carries a
periodic pattern (spectral peaks). measure_transfer takes them all on one set of transferred images."""

from culturegan.metrics.steganography import PERTURBATIONS, hidden_signal
from culturegan.metrics.judge import JUDGE_GROUPS, JUDGE_VERSION, judge_features
from culturegan.metrics.measure import HEADLINE, JUDGE_MEASURES, headline, measure_projection, measure_transfer
from culturegan.metrics.scores import (NearestCentroid, confusion, cycle_error, deception_rate, diversity, edge_f1,
                                       edge_map, frechet_distance, kid, more_often_p, psnr, recognisability,
                                       ssim_lowpass, within_culture_scale)
from culturegan.metrics.spectrum import periodic_artifact_ratio, periodic_artifacts
from culturegan.metrics.structure import (closer_to_another_output, collapse_ratio, content_retrieval,
                                          input_dependence, structure_maps)

__all__ = ["HEADLINE", "JUDGE_GROUPS", "JUDGE_MEASURES", "JUDGE_VERSION", "NearestCentroid", "PERTURBATIONS",
           "closer_to_another_output", "collapse_ratio", "confusion", "content_retrieval", "cycle_error",
           "deception_rate", "diversity", "edge_f1", "edge_map", "frechet_distance", "headline", "hidden_signal",
           "input_dependence", "judge_features", "kid", "measure_projection", "measure_transfer", "more_often_p",
           "periodic_artifact_ratio", "periodic_artifacts", "psnr", "recognisability", "ssim_lowpass",
           "structure_maps", "within_culture_scale"]
