"""culturegan.training: configuration, the culture-aware CycleGAN training loop, checkpoints."""

from culturegan.training.config import TrainConfig, load_config
from culturegan.training.trainer import Trainer, TrainingDiverged

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "load_config"]
