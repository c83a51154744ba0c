"""culturegan.models: GAN networks (built from torch layers; culturegan.nn.fuse accelerates them)."""

from culturegan.models.culture import AdaINResidualBlock, CultureDiscriminator, MultiCultureGenerator
from culturegan.models.cyclegan import NLayerDiscriminator, ResnetBlock, ResnetGenerator

__all__ = ["AdaINResidualBlock", "CultureDiscriminator", "MultiCultureGenerator", "NLayerDiscriminator", "ResnetBlock",
           "ResnetGenerator"]
