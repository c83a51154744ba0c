"""culturegan.training: configuration, the culture-aware training loop (two cultures, or K with
one conditioned generator), transfer learning, sample grids, checkpoints."""

from culturegan.training.config import TrainConfig, load_config
from culturegan.training.trainer import Trainer, TrainingDiverged, TrainingInterrupted

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "TrainingInterrupted", "load_config"]
