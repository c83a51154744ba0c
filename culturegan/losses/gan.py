"""GAN losses: adversarial (lsgan, vanilla, hinge), cycle, identity, and the R1 penalty.

Conventions follow pytorch-CycleGAN-and-pix2pix (``--gan_mode lsgan`` by default, cycle weight
10, identity 0.5 of it) and StyleGAN2 (R1 = gamma / 2 * E ||grad_x D(x)||^2 on real images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GAN_MODES = ("lsgan", "vanilla", "hinge")


def check_gan_mode(mode: str) -> str:
    if mode not in GAN_MODES:
        raise ValueError(f"gan mode must be one of {', '.join(GAN_MODES)}, got {mode!r}")
    return mode


def generator_loss(fake_logits: torch.Tensor, mode: str = "lsgan") -> torch.Tensor:
    """The generator's adversarial loss on the discriminator's outputs for its fakes."""
    check_gan_mode(mode)
    if mode == "lsgan":
        return (fake_logits - 1).square().mean()
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -fake_logits.mean()  # hinge: the generator raises D's score


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mode: str = "lsgan") -> torch.Tensor:
    """The discriminator's loss, halved as CycleGAN does (it learns at half the generator's pace)."""
    check_gan_mode(mode)
    if mode == "lsgan":
        return 0.5 * ((real_logits - 1).square().mean() + fake_logits.square().mean())
    if mode == "vanilla":
        return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                      + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """weight * |G_BA(G_AB(a)) - a|_1 (CycleGAN's lambda 10)."""
    return weight * F.l1_loss(reconstructed, original)


def identity_loss(same: torch.Tensor, original: torch.Tensor, weight: float = 5.0) -> torch.Tensor:
    """weight * |G_AB(b) - b|_1: CycleGAN's identity term, 0.5 * lambda_cycle by default."""
    return weight * F.l1_loss(same, original)


def r1_penalty(discriminator, real: torch.Tensor, gamma: float = 10.0) -> torch.Tensor:
    """gamma / 2 * E ||d D(real) / d real||^2, differentiable in D's parameters (double
    backward through the fused ops)."""
    real = real.detach().requires_grad_()
    (gradient,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return 0.5 * gamma * gradient.square().flatten(1).sum(1).mean()
