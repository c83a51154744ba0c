"""The training objectives batch several applications of one network into one call; the
losses must equal those of separate calls (the straightforward CycleGAN computation)."""

import random

import torch

from culturegan.culture import CultureProfile, extract
from culturegan.losses import (
    CultureLoss,
    StructureLoss,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
)
from culturegan.models import NLayerDiscriminator, ResnetGenerator
from culturegan.training import TrainConfig
from culturegan.training.objectives import CycleObjective


def test_batched_cycle_losses_equal_separate_calls():
    torch.manual_seed(0)
    m = {"G_AB": ResnetGenerator(ngf=4, n_blocks=1, fused=True), "G_BA": ResnetGenerator(ngf=4, n_blocks=1, fused=True),
         "D_A": NLayerDiscriminator(ndf=4, fused=True), "D_B": NLayerDiscriminator(ndf=4, fused=True)}
    culture = CultureLoss()
    config = TrainConfig(data_root="unused", source="A", target="B", pool_size=0).validate()
    profile_a = CultureProfile.fit("A", extract(torch.rand(6, 3, 32, 32) * 2 - 1))
    profile_b = CultureProfile.fit("B", extract(torch.rand(6, 3, 32, 32) * 0.5))
    objective = CycleObjective(config, culture, random.Random(0), profiles={"A": profile_a, "B": profile_b})
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    batch = {"A": {"image": real_a}, "B": {"image": real_b}}

    losses, fakes = objective.generator_losses(m, batch)
    fake_b, fake_a = m["G_AB"](real_a), m["G_BA"](real_b)
    expected = {"G_adv": generator_loss(m["D_B"](fake_b)) + generator_loss(m["D_A"](fake_a)),
                "cycle": cycle_loss(m["G_BA"](fake_b), real_a) + cycle_loss(m["G_AB"](fake_a), real_b),
                "identity": identity_loss(m["G_AB"](real_b), real_b) + identity_loss(m["G_BA"](real_a), real_a),
                "culture": culture(fake_b, profile_b) + culture(fake_a, profile_a),
                "structure": StructureLoss(config.lambda_structure)(fake_b, real_a)
                + StructureLoss(config.lambda_structure)(fake_a, real_b)}
    assert losses.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(losses[name], expected[name], rtol=1e-5, atol=1e-5, msg=lambda e: f"{name}: {e}")
    torch.testing.assert_close(fakes["B"], fake_b, rtol=1e-5, atol=1e-5)
    d_loss = objective.discriminator_loss(m, batch, fakes)
    expected_d = sum(discriminator_loss(m[f"D_{s}"](batch[s]["image"]), m[f"D_{s}"](fakes[s].detach()))
                     for s in ("A", "B"))
    torch.testing.assert_close(d_loss, expected_d, rtol=1e-5, atol=1e-6)
