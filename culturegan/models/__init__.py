"""culturegan.models: GAN networks (built from torch layers; culturegan.nn.fuse accelerates them),
and reading them from files (published CycleGAN weights, converted files, training runs)."""

from culturegan.models.contrastive import PatchHeads, layer_features
from culturegan.models.culture import AdaINResidualBlock, CultureDiscriminator, MultiCultureGenerator
from culturegan.models.cyclegan import NLayerDiscriminator, ResnetBlock, ResnetGenerator
from culturegan.models.loading import (Architecture, build_model, convert, infer_architecture, load_discriminator,
                                       load_generator, read_model)
from culturegan.models.weights import load_weights, read_state_dict

__all__ = ["AdaINResidualBlock", "Architecture", "CultureDiscriminator", "build_model", "MultiCultureGenerator",
           "NLayerDiscriminator", "ResnetBlock", "ResnetGenerator", "convert", "infer_architecture",
           "load_discriminator", "load_generator", "layer_features", "load_weights", "PatchHeads", "read_model",
           "read_state_dict"]
