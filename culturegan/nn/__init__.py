"""culturegan.nn: fused GAN building blocks as torch modules, and fuse() for existing models.

    from culturegan import nn as cnn
    block = cnn.FusedConvNormAct(64, 128, 3, stride=2, padding=1)     # conv + InstanceNorm + ReLU
    report = cnn.fuse(generator)                                       # rewrite a plain torch model

Blocks have the state_dict of the torch layers they replace; see blocks.py and fuse.py.
SharedNormStatistics (statistics.py) normalises tiles of an image like the whole image.
"""

from culturegan.nn.blocks import FusedConvLeakyReLU, FusedConvNormAct, FusionError
from culturegan.nn.fuse import FusedRun, FuseReport, PassThrough, fuse
from culturegan.nn.statistics import SharedNormStatistics

__all__ = ["FuseReport", "FusedConvLeakyReLU", "FusedConvNormAct", "FusedRun", "FusionError", "PassThrough",
           "SharedNormStatistics", "fuse"]
