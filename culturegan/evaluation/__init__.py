"""culturegan.evaluation: `culturegan evaluate` (transfer held-out images, measure them with
culturegan.metrics), the verdicts a person would give, summaries over seeds, and the
self-contained HTML report."""

from culturegan.evaluation.evaluate import (Evaluation, check_evaluable, evaluate, judge_batches, load_images,
                                            measure)
from culturegan.evaluation.report import write_report
from culturegan.evaluation.verdicts import collapse_ratio, summarise, verdicts

__all__ = ["Evaluation", "check_evaluable", "collapse_ratio", "evaluate", "judge_batches", "load_images", "measure",
           "summarise", "verdicts", "write_report"]
