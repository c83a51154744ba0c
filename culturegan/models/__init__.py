"""culturegan.models: GAN networks (built from torch layers; culturegan.nn.fuse accelerates them)."""

from culturegan.models.culture import (
           AdaINResidualBlock,
           CultureDiscriminator,
           MultiCultureGenerator,
)
from culturegan.models.cyclegan import NLayerDiscriminator, ResnetBlock, ResnetGenerator
from culturegan.models.weights import load_weights, read_state_dict

__all__ = ["AdaINResidualBlock", "CultureDiscriminator", "MultiCultureGenerator", "NLayerDiscriminator", "ResnetBlock",
           "ResnetGenerator", "load_weights", "read_state_dict"]
