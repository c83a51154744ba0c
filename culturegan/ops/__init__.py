"""culturegan.ops: fused GAN kernels with cuda, triton, cpu and pure-torch reference backends.

    from culturegan import ops
    y = ops.bias_leaky_relu(x, bias)                  # fastest backend for x's device
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

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "bias_leaky_relu",
    "bias_leaky_relu_reference",
    "registered_ops",
    "unavailable_reason",
    "use_backend",
]
