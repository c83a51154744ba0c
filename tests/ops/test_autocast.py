"""The ops under torch.autocast: mixed-dtype arguments (a bfloat16 activation, float32
parameters) follow autocast's policy instead of raising, equal the op on arguments cast by
hand, and the float32 parameters get float32 gradients."""

import pytest
import torch

from culturegan import ops
from culturegan.models import NLayerDiscriminator, ResnetGenerator

BACKENDS = ["cpu", "reference"]


def _parameters(*shapes):
    return [torch.randn(*shape, requires_grad=True) for shape in shapes]


CASES = {
    # name: (op, positional parameters' shapes, keyword arguments, lowered to autocast's dtype?)
    "conv2d_instance_norm_act": (ops.conv2d_instance_norm_act, [(6, 4, 3, 3), (6,)], dict(padding=1), True),
    "conv_transpose2d_instance_norm_act": (ops.conv_transpose2d_instance_norm_act, [(4, 6, 3, 3), (6,)], {}, True),
    "conv2d_bias_leaky_relu": (ops.conv2d_bias_leaky_relu, [(6, 4, 3, 3), (6,)], dict(padding=1), True),
    "bias_leaky_relu": (ops.bias_leaky_relu, [(4,)], {}, False),
    "instance_norm_act": (ops.instance_norm_act, [(4,), (4,)], {}, False),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", CASES)
def test_ops_follow_autocast(name, x_dtype, backend):
    op, shapes, kwargs, lowered = CASES[name]
    x = torch.randn(2, 4, 7, 5).to(x_dtype)
    parameters = _parameters(*shapes)
    with torch.autocast("cpu", torch.bfloat16):
        y = op(x, *parameters, **kwargs, backend=backend)
    dtype = torch.bfloat16 if lowered else x_dtype
    assert y.dtype == dtype
    expected = op(x.to(dtype), *(p.detach().to(dtype) for p in parameters), **kwargs, backend=backend)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    y.float().square().sum().backward()
    for parameter in parameters:
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32
        assert torch.isfinite(parameter.grad).all()


def test_fused_networks_run_under_autocast_like_the_plain_ones():
    torch.manual_seed(0)
    fused, plain = ResnetGenerator(ngf=8, n_blocks=2, fused=True), ResnetGenerator(ngf=8, n_blocks=2)
    plain.load_state_dict(fused.state_dict())
    critic, plain_critic = NLayerDiscriminator(ndf=8, fused=True), NLayerDiscriminator(ndf=8)
    plain_critic.load_state_dict(critic.state_dict())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with ops.use_backend("cpu"), torch.autocast("cpu", torch.bfloat16):
        y, y_plain = fused(x), plain(x)
        logits, plain_logits = critic(y), plain_critic(y_plain)
    assert y.dtype == y_plain.dtype == logits.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_plain.float(), rtol=0, atol=0.1)  # a few bfloat16 roundings
    torch.testing.assert_close(logits.float(), plain_logits.float(), rtol=0.05, atol=0.1)


@pytest.mark.parametrize("name", CASES)
def test_ops_give_shapes_on_the_meta_device(name):
    """The meta device has no autocast (torch raises when asked about it): the ops' autocast
    policy leaves meta tensors alone, so a network can be probed for its shapes without memory
    (as the contrastive objective probes its generator's layers)."""
    op, shapes, kwargs, _ = CASES[name]
    x = torch.randn(2, 4, 7, 5)
    expected = op(x, *(torch.randn(*shape) for shape in shapes), **kwargs)
    with torch.device("meta"):
        y = op(torch.empty(x.shape), *(torch.empty(*shape) for shape in shapes), **kwargs)
    assert y.device.type == "meta" and y.shape == expected.shape and y.dtype == expected.dtype
