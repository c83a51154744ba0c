"""culturegan.models: the culture-conditioned generator and the culture-aware discriminator."""

import pytest
import torch

from culturegan.culture import extract
from culturegan.losses import r1_penalty
from culturegan.models import CultureDiscriminator, MultiCultureGenerator, load_weights
from culturegan.nn import FusedConvLeakyReLU, FusedConvNormAct

FEATURES = 431  # CultureFeatures.all() without Gram matrices


def small_generator(**kwargs):
    torch.manual_seed(0)
    generator = MultiCultureGenerator(3, ngf=8, n_blocks=2, feature_dim=FEATURES, **kwargs)
    with torch.no_grad():  # away from the identity initialisation, so that the style matters
        for block in generator.blocks:
            block.style.weight.normal_(0, 0.3)
    return generator


def images(n=2, size=32):
    return torch.rand(n, 3, size, size) * 2 - 1


def test_generator_is_built_from_fused_blocks_and_keeps_the_image_shape():
    generator = small_generator()
    assert sum(isinstance(m, FusedConvNormAct) for m in generator.modules()) == 3 + 2 + 2 * 2
    out = generator(images(), cultures=torch.tensor([0, 2]))
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1


def test_the_target_culture_steers_the_output():
    generator = small_generator()
    x = images(1).expand(3, -1, -1, -1)
    out = generator(x, cultures=torch.tensor([0, 1, 2]))
    assert not torch.allclose(out[0], out[1], atol=1e-4) and not torch.allclose(out[1], out[2], atol=1e-4)
    torch.testing.assert_close(generator(x[:1], cultures=torch.tensor([1]))[0], out[1])


def test_a_reference_image_can_steer_instead():
    generator = small_generator()
    reference = extract(images(2)).all()
    out = generator(images(), reference_features=reference)
    assert out.shape == (2, 3, 32, 32)
    (grad,) = torch.autograd.grad(out.sum(), list(generator.reference_projection.parameters())[0])
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "either as `cultures`"),
    (dict(cultures=torch.tensor([0, 3])), "indices below 3"),
    (dict(cultures=torch.tensor([0])), "1 targets for 2 images"),
])
def test_generator_bad_targets_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_generator()(images(), **kwargs)


def test_generator_without_feature_dim_refuses_references():
    generator = MultiCultureGenerator(2, ngf=8, n_blocks=1)
    with pytest.raises(ValueError, match="without feature_dim"):
        generator(images(), reference_features=torch.zeros(2, FEATURES))


def test_discriminator_judges_image_and_culture():
    torch.manual_seed(0)
    discriminator = CultureDiscriminator(3, ndf=8, feature_dim=FEATURES)
    assert any(isinstance(m, FusedConvLeakyReLU) for m in discriminator.modules())
    x = images(2, 64)
    patches, classes = discriminator(x, torch.tensor([0, 1]))
    assert patches.shape == (2, 1, 6, 6) and classes.shape == (2, 3)
    other, _ = discriminator(x, torch.tensor([2, 2]))
    assert not torch.allclose(patches, other)  # the claimed culture changes the verdict
    with_features, _ = discriminator(x, torch.tensor([0, 1]), extract(x).all())
    assert not torch.allclose(patches, with_features)
    with pytest.raises(ValueError, match="indices below 3"):
        discriminator(x, torch.tensor([0, 5]))


def test_every_parameter_learns_and_r1_works():
    generator, discriminator = small_generator(), CultureDiscriminator(3, ndf=8, n_layers=2)
    cultures = torch.tensor([0, 1])
    fake = generator(images(), cultures=cultures)
    patches, classes = discriminator(fake, cultures)
    loss = (patches - 1).square().mean() + torch.nn.functional.cross_entropy(classes, cultures)
    loss.backward()
    untouched = {name for name, p in generator.named_parameters() if p.grad is None or not p.grad.abs().sum()}
    # Exactly the unused reference projection and the conv biases that a normalisation cancels.
    cancelled = {f"{name}.0.bias" for name, m in generator.named_modules() if isinstance(m, FusedConvNormAct)}
    unused = {name for name, _ in generator.named_parameters() if name.startswith("reference_projection.")}
    assert untouched == cancelled | unused
    penalty = r1_penalty(lambda x: discriminator(x, cultures)[0], images())
    assert torch.isfinite(penalty) and penalty > 0


def test_state_dict_round_trip():
    generator = small_generator()
    fresh = MultiCultureGenerator(3, ngf=8, n_blocks=2, feature_dim=FEATURES)
    fresh.load_state_dict(generator.state_dict())
    x, cultures = images(), torch.tensor([1, 0])
    torch.testing.assert_close(fresh(x, cultures=cultures), generator(x, cultures=cultures))


def test_reference_features_are_standardised_by_fitted_statistics():
    generator = small_generator()
    features = extract(images(4)).all()
    # hand-built: identity statistics, the projection takes the raw features
    assert torch.equal(generator.reference_mean, torch.zeros(FEATURES))
    assert torch.equal(generator.reference_scale, torch.ones(FEATURES))
    torch.testing.assert_close(generator.style_code(reference_features=features),
                               generator.reference_projection(features))
    constant = features.clone()
    constant[:, 0] = 0.25  # a feature that never varies: its scale is floored, not zero
    generator.fit_reference_statistics(constant)
    std = constant.double().std(0)
    floor = 1e-3 * std.max()
    torch.testing.assert_close(generator.reference_mean, constant.mean(0))
    torch.testing.assert_close(generator.reference_scale, std.clamp_min(floor).float())
    assert generator.reference_scale[0] == pytest.approx(float(floor))
    standard = (constant - constant.mean(0)) / std.clamp_min(floor).float()
    torch.testing.assert_close(generator.style_code(reference_features=constant),
                               generator.reference_projection(standard))
    with pytest.raises(ValueError, match=r"need \(n >= 2, 431\) features, got \(1, 431\)"):
        generator.fit_reference_statistics(features[:1])
    with pytest.raises(ValueError, match="without feature_dim: it has no reference statistics"):
        MultiCultureGenerator(3, ngf=8, n_blocks=2).fit_reference_statistics(features)


def test_a_state_dict_without_reference_statistics_loads_with_identity_ones():
    generator = small_generator()
    generator.fit_reference_statistics(extract(images(4)).all())
    fitted = generator.state_dict()
    assert {"reference_mean", "reference_scale"} <= fitted.keys()
    fresh = MultiCultureGenerator(3, ngf=8, n_blocks=2, feature_dim=FEATURES)
    load_weights(fresh, fitted, "fitted")
    assert torch.equal(fresh.reference_mean, generator.reference_mean)
    assert torch.equal(fresh.reference_scale, generator.reference_scale)
    # a projection saved before the statistics was trained on raw features: identity ones
    old = {k: v for k, v in fitted.items() if k not in ("reference_mean", "reference_scale")}
    load_weights(fresh, old, "old")
    assert torch.equal(fresh.reference_mean, torch.zeros(FEATURES))
    assert torch.equal(fresh.reference_scale, torch.ones(FEATURES))
    features = extract(images(2)).all()
    torch.testing.assert_close(fresh.style_code(reference_features=features), generator.reference_projection(features))
    with pytest.raises(ValueError, match=r"1 missing \['reference_scale'\]"):  # half of them is no known form
        load_weights(fresh, {k: v for k, v in fitted.items() if k != "reference_scale"}, "half")
