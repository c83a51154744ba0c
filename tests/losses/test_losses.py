"""culturegan.losses: values on known inputs, gradients reach the generator, R1 through fused ops."""

import copy

import pytest
import torch

from culturegan.culture import CultureProfile, extract
from culturegan.losses import (
    CultureLoss,
    CultureLossWeights,
    StructureLoss,
    cycle_loss,
    discriminator_loss,
    generator_loss,
    identity_loss,
    r1_penalty,
)
from culturegan.models import NLayerDiscriminator
from culturegan.nn import fuse


@pytest.mark.parametrize("mode, d_best, g_best", [("lsgan", 0.0, 0.0), ("vanilla", None, None), ("hinge", 0.0, None)])
def test_adversarial_losses_reward_the_right_side(mode, d_best, g_best):
    confident_real, confident_fake = torch.full((4, 1, 3, 3), 1.0), torch.full((4, 1, 3, 3), -1.0)
    if mode == "lsgan":
        confident_fake = torch.zeros(4, 1, 3, 3)
    good_d = discriminator_loss(confident_real * 5 if mode == "vanilla" else confident_real,
                                confident_fake * 5 if mode == "vanilla" else confident_fake, mode)
    fooled_d = discriminator_loss(confident_fake, confident_real, mode)
    assert good_d < fooled_d
    if d_best is not None:
        assert float(good_d) == pytest.approx(d_best)
    assert generator_loss(torch.full((2, 1), 1.0), mode) < generator_loss(torch.full((2, 1), -1.0), mode)
    if g_best is not None:
        assert float(generator_loss(torch.ones(2, 1), mode)) == pytest.approx(g_best)


def test_unknown_gan_mode_raises():
    with pytest.raises(ValueError, match="gan mode must be one of"):
        generator_loss(torch.zeros(1), "wgan")


def test_cycle_and_identity_weights():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    assert float(cycle_loss(b, a)) == pytest.approx(5.0)  # 10 * 0.5
    assert float(identity_loss(b, a)) == pytest.approx(2.5)  # 5 * 0.5


def test_r1_of_a_linear_discriminator():
    weight = torch.randn(3 * 4 * 4)
    penalty = r1_penalty(lambda x: x.flatten(1) @ weight, torch.randn(5, 3, 4, 4), gamma=2.0)
    assert float(penalty) == pytest.approx(float(weight.square().sum()), rel=1e-5)


def test_r1_through_the_fused_discriminator_matches_the_plain_one():
    """The penalty needs the double backward of the fused conv + LeakyReLU and norm blocks."""
    plain = NLayerDiscriminator(ndf=8).double()
    fused = copy.deepcopy(plain)
    report = fuse(fused)
    assert report.fused
    real = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    grads = []
    for model in (plain, fused):
        parameters = list(model.parameters())
        penalty = r1_penalty(model, real)
        # A conv bias before a norm does not change D's input gradient: the fused blocks leave
        # it out of the penalty's graph (None), where plain autograd finds zeros.
        found = torch.autograd.grad(penalty, parameters, allow_unused=True)
        grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(parameters, found)])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def stripes(n, seed):
    g = torch.Generator().manual_seed(seed)
    width = torch.randint(3, 6, (n,), generator=g)
    x = torch.arange(32)
    rows = [((x // w) % 2).float()[None, None, :].expand(1, 32, 32) for w in width]
    return torch.stack([torch.cat([r, 0.2 * r, 1 - r]) for r in rows]) * 2 - 1


def test_every_loss_term_reaches_the_generator():
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Tanh())
    discriminator = NLayerDiscriminator(ndf=4, n_layers=2)
    profile = CultureProfile.fit("stripes", extract(stripes(6, 0)))
    culture = CultureLoss(CultureLossWeights(culture=0.5))
    source, target = torch.rand(2, 3, 32, 32) * 2 - 1, stripes(2, 1)
    fake = generator(source)
    terms = {"adversarial": generator_loss(discriminator(fake)), "cycle": cycle_loss(generator(fake), source),
             "identity": identity_loss(generator(target), target), "culture": culture(fake, profile),
             "structure": StructureLoss(1.0)(fake, source)}
    for name, term in terms.items():
        grads = torch.autograd.grad(term, list(generator.parameters()), retain_graph=True)
        assert all(torch.isfinite(g).all() for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, f"the {name} loss does not reach the generator"


def test_culture_loss_is_zero_when_off_and_prefers_the_target_culture():
    profile = CultureProfile.fit("stripes", extract(stripes(8, 0)))
    off = CultureLoss(CultureLossWeights(culture=0.0))
    assert float(off(stripes(2, 3), profile)) == 0.0
    loss = CultureLoss()
    assert loss(stripes(3, 4), profile) < loss(torch.rand(3, 3, 32, 32) * 2 - 1, profile)


@pytest.mark.parametrize("group", ["colour", "texture", "line"])
def test_culture_loss_charges_only_what_lies_beyond_a_typical_image_of_the_culture(group):
    """Each group's distance is divided by the root of its length, so held-out images of the
    culture lie about 1 away whatever the group's length: they cost (almost) nothing and get
    (almost) no gradient, free to differ from the culture's mean; other images cost far more."""
    profile = CultureProfile.fit("stripes", extract(stripes(32, 0)))
    loss = CultureLoss(CultureLossWeights(**{g: float(g == group) for g in ("colour", "texture", "line")}))
    own = stripes(16, 7)
    assert loss(own, profile) < 0.1
    assert loss(torch.rand(16, 3, 32, 32) * 2 - 1, profile) > 9.0
    typical = [image[None] for image in own if float(loss(image[None], profile)) == 0.0]
    assert len(typical) >= 8
    image = typical[0].clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(image, profile), image, allow_unused=True, materialize_grads=True)
    assert float(grad.abs().max()) == 0.0


def test_culture_loss_per_image_targets_and_errors():
    profiles = [CultureProfile.fit("stripes", extract(stripes(6, 0))),
                CultureProfile.fit("noise", extract(torch.rand(6, 3, 32, 32) * 2 - 1))]
    images = stripes(2, 5)
    loss = CultureLoss()
    assert loss(images, profiles, torch.tensor([0, 0])) < loss(images, profiles, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="need `targets`"):
        loss(images, profiles)
    with pytest.raises(ValueError, match="indices into the 2 profiles"):
        loss(images, profiles, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="colour must be a finite number >= 0"):
        CultureLossWeights(colour=-1)
    with pytest.raises(ValueError, match="texture must be a finite number >= 0"):
        CultureLossWeights(texture=float("nan"))
