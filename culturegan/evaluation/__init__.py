"""culturegan.evaluation: `culturegan evaluate` (transfer held-out images, measure them with
culturegan.metrics) and its self-contained HTML report."""

from culturegan.evaluation.evaluate import Evaluation, evaluate, load_images
from culturegan.evaluation.report import write_report

__all__ = ["Evaluation", "evaluate", "load_images", "write_report"]
