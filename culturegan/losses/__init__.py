"""culturegan.losses: adversarial, cycle, identity, R1, culture, line-structure and PatchNCE losses."""

from culturegan.losses.culture import CultureLoss, CultureLossWeights
from culturegan.losses.gan import (
    GAN_MODES,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
    r1_penalty,
)
from culturegan.losses.patch_nce import PatchNCELoss
from culturegan.losses.structure import StructureLoss

__all__ = ["GAN_MODES", "CultureLoss", "CultureLossWeights", "cycle_loss", "discriminator_loss", "generator_loss",
           "identity_loss", "PatchNCELoss", "r1_penalty", "StructureLoss"]
