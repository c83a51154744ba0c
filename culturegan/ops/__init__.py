"""culturegan.ops: fused GAN kernels with cuda, triton, cpu and pure-torch reference backends.

    from culturegan import ops
    y = ops.bias_leaky_relu(x, bias)                  # fastest backend for x's device
    mean, std = ops.feature_stats(features)           # per-(N, C) texture statistics
    mean, std, g = ops.culture_stats(features)        # ... and the Gram matrices
    y = ops.channel_affine(x, mean, 1 / std, beta, 0.2)  # normalise, shift, LeakyReLU: one pass
    y = ops.conv2d_instance_norm_act(x, weight, padding=1, padding_mode="reflect")  # CycleGAN block
    loss = ops.gram_loss(features, target_gram)       # style loss with a fused backward
    loss = ops.patch_nce_loss(query, key.detach())    # CUT's PatchNCE over sampled patches
    y = ops.bias_leaky_relu(x, bias, backend="reference")
    with ops.use_backend("triton"):
        y = ops.bias_leaky_relu(x, bias)

Each op lives in its own module beside its pure-torch reference (``<op>_reference``); the
kernels live in csrc/ (C++/CUDA) and kernels/ (Triton). Ops are registered with
torch.library (namespace ``culturegan``), so they work under torch.compile.
"""

from culturegan.ops._backends import (
    BACKENDS,
    BackendUnavailableError,
    registered_ops,
    unavailable_reason,
    use_backend,
)
from culturegan.ops.bias_leaky_relu import bias_leaky_relu, bias_leaky_relu_reference
from culturegan.ops.channel_affine import channel_affine, channel_affine_reference
from culturegan.ops.conv2d_bias_leaky_relu import conv2d_bias_leaky_relu, conv2d_bias_leaky_relu_reference
from culturegan.ops.conv2d_instance_norm_act import conv2d_instance_norm_act, conv_transpose2d_instance_norm_act
from culturegan.ops.conv2d_resample import conv2d_resample, conv2d_resample_reference
from culturegan.ops.culture_stats import culture_stats, culture_stats_reference
from culturegan.ops.feature_stats import feature_stats, feature_stats_reference
from culturegan.ops.gram import gram, gram_reference
from culturegan.ops.gram_loss import gram_loss, gram_loss_reference
from culturegan.ops.instance_norm_act import instance_norm_act, instance_norm_act_reference
from culturegan.ops.modulated_conv2d import modulated_conv2d, modulated_conv2d_reference
from culturegan.ops.patch_nce_loss import patch_nce_loss, patch_nce_loss_reference
from culturegan.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_reference, upsample2d

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "bias_leaky_relu",
    "bias_leaky_relu_reference",
    "channel_affine",
    "channel_affine_reference",
    "conv2d_bias_leaky_relu",
    "conv2d_bias_leaky_relu_reference",
    "conv2d_instance_norm_act",
    "conv2d_resample",
    "conv2d_resample_reference",
    "conv_transpose2d_instance_norm_act",
    "downsample2d",
    "culture_stats",
    "culture_stats_reference",
    "feature_stats",
    "feature_stats_reference",
    "filter2d",
    "gram",
    "gram_loss",
    "gram_loss_reference",
    "gram_reference",
    "instance_norm_act",
    "instance_norm_act_reference",
    "modulated_conv2d",
    "modulated_conv2d_reference",
    "patch_nce_loss",
    "patch_nce_loss_reference",
    "registered_ops",
    "setup_filter",
    "unavailable_reason",
    "upfirdn2d",
    "upfirdn2d_reference",
    "upsample2d",
    "use_backend",
]
