"""culturegan.losses.StructureLoss: the output keeps the input's lines, whatever their colour."""

import math

import pytest
import torch

from culturegan.losses import StructureLoss
from culturegan.losses.structure import structure_fields


def scene(size=32, inside=0.7, outside=0.3, colour=(1.0, 1.0, 1.0)):
    """A square 'house' on a flat ground: one closed outline, in [-1, 1]."""
    image = torch.full((1, 3, size, size), outside)
    image[..., size // 4:3 * size // 4, size // 3:2 * size // 3] = inside
    return (image * torch.tensor(colour).view(1, 3, 1, 1)) * 2 - 1


def lattice(size=32, period=3, amplitude=0.3):
    rows = (torch.arange(size) % period == 0).float()
    return amplitude * torch.maximum(rows[:, None], rows[None, :]).expand(1, 3, size, size)


def test_zero_for_the_identity_and_charges_lost_or_added_lines():
    loss = StructureLoss(1.0)
    house = scene()
    assert float(loss(house, house)) < 1e-6  # zero up to float32 rounding
    recoloured = scene(inside=0.2, outside=0.9, colour=(0.2, 0.4, 1.0))  # inverted and blue: the same lines
    vanished = torch.full_like(house, float(house.mean()))  # the house is gone
    latticed = (house + lattice()).clamp(-1, 1)  # a lattice over everything
    kept, lost, added = (float(loss(out, house)) for out in (recoloured, vanished, latticed))
    assert lost > 4 * kept and added > 4 * kept, (kept, lost, added)


def test_a_pattern_hidden_in_chroma_is_charged():
    """A red/green pixel grid of (almost) constant luminance: invisible to a luminance structure
    loss, the cheapest place for a generator to hide a pattern."""
    house = scene()
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2).float()
    swing = 0.3 * (checker * 2 - 1)
    chroma = house + torch.stack([swing, -swing * 0.299 / 0.587, torch.zeros_like(swing)])[None]
    luma = lambda x: 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]  # noqa: E731
    torch.testing.assert_close(luma(chroma), luma(house))
    assert float(StructureLoss(1.0, scales=(1,))(chroma, house)) > 0.2  # averaged out at coarser scales


def test_a_faint_texture_is_free_and_a_strong_one_is_not():
    loss = StructureLoss(1.0)
    house = scene()
    noise = torch.randn(house.shape, generator=torch.Generator().manual_seed(0))
    faint, strong = (float(loss((house + a * noise).clamp(-1, 1), house)) for a in (0.005, 0.3))
    assert faint < 0.1 * strong, (faint, strong)


def test_the_fields_carry_orientation_and_ignore_contrast():
    vertical = torch.zeros(1, 3, 32, 32)
    vertical[..., 16:] = 1.0
    for field in structure_fields(vertical, scales=(1, 2)):
        xx, yy, xy = field[0]
        assert float(xx.max()) > 0.5 and float(yy.abs().max()) < 1e-6 and float(xy.abs().max()) < 1e-6
    horizontal = structure_fields(vertical.transpose(-1, -2), scales=(1,))[0][0]
    assert float(horizontal[1].max()) > 0.5 and float(horizontal[0].abs().max()) < 1e-6
    diagonal = torch.zeros(1, 3, 32, 32)
    diagonal[..., torch.arange(32)[:, None] > torch.arange(32)[None, :]] = 1.0
    assert float(structure_fields(diagonal, scales=(1,))[0][0, 2, 16, 16]) < -0.1  # xy: the edge's orientation
    faint = StructureLoss(1.0)((vertical * 0.1) * 2 - 1, vertical * 2 - 1)  # a tenth of the contrast
    assert float(faint) < 0.01


def test_gradient_reaches_the_generator_and_not_the_input():
    generator = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Tanh())
    source = scene().repeat(2, 1, 1, 1).requires_grad_()
    term = StructureLoss(2.0)(generator(source), source)
    grads = torch.autograd.grad(term, list(generator.parameters()) + [source])
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads[:-1]) > 0
    # the input is the constant the output is compared with: its only gradient is through the generator
    output = (source.detach() * 0.5).requires_grad_()
    to_output, to_input = torch.autograd.grad(StructureLoss(1.0)(output, source), [output, source], allow_unused=True)
    assert to_output.abs().sum() > 0 and to_input is None


def test_flat_images():
    flat = torch.full((2, 3, 32, 32), 0.3)
    loss = StructureLoss(1.0)
    assert float(loss(flat, flat)) == 0.0
    assert float(loss(flat * 0.5, flat)) == 0.0  # another flat colour keeps the (absent) lines
    assert float(loss(scene().expand(2, -1, -1, -1), flat)) == pytest.approx(1.0)  # lines where there were none
    assert float(loss(flat, scene().expand(2, -1, -1, -1))) == pytest.approx(1.0)  # every line lost


def test_a_flat_output_gets_a_finite_gradient():
    """A generator that draws one flat colour (or an image of flat outputs against flat inputs):
    the loss is finite and so is every gradient, where a norm's square root at 0 gave NaN."""
    generator = torch.nn.Conv2d(3, 3, 3, padding=1)
    torch.nn.init.zeros_(generator.weight)
    torch.nn.init.constant_(generator.bias, 0.1)
    inputs = torch.cat([scene(), torch.full((1, 3, 32, 32), 0.3)])
    term = StructureLoss(1.0)(generator(inputs), inputs)
    assert float(term.detach()) == pytest.approx(0.5)  # every line lost in the scene, none in the flat image
    # (squared differences are flat at 0: the gradient itself is 0 there, a saddle the other
    # losses move the generator off)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(term, list(generator.parameters())))


def test_off_at_zero_and_scaled_by_its_weight():
    house, other = scene(), scene(inside=0.3, outside=0.3)
    assert float(StructureLoss(0.0)(other, house)) == 0.0
    torch.testing.assert_close(StructureLoss(3.0)(other, house), 3 * StructureLoss(1.0)(other, house))


@pytest.mark.parametrize("make, message", [
    (lambda: StructureLoss(-1.0), "lambda_structure must be a finite number >= 0"),
    (lambda: StructureLoss(math.nan), "lambda_structure must be a finite number >= 0"),
    (lambda: StructureLoss(math.inf), "lambda_structure must be a finite number >= 0"),
    (lambda: StructureLoss(1.0, scales=()), "structure_scales must be distinct positive integers"),
    (lambda: StructureLoss(1.0, scales=(0, 2)), "structure_scales must be distinct positive integers"),
    (lambda: StructureLoss(1.0, scales=(2, 2)), "structure_scales must be distinct positive integers"),
    (lambda: StructureLoss(1.0, scales=(1.5,)), "structure_scales must be distinct positive integers"),
    (lambda: StructureLoss(1.0, scales=(1, 16))(scene(), scene()), "structure_scales: scale 16 is too large for "
                                                                   "32-pixel images"),
    (lambda: StructureLoss(1.0)(scene(), scene(size=48)), "of one shape"),
])
def test_bad_settings_and_inputs_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
