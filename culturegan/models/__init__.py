"""culturegan.models: GAN networks (built from torch layers; culturegan.nn.fuse accelerates them)."""

from culturegan.models.cyclegan import NLayerDiscriminator, ResnetBlock, ResnetGenerator

__all__ = ["NLayerDiscriminator", "ResnetBlock", "ResnetGenerator"]
