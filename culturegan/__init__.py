"""culturegan: GPU-kernel-accelerated culture-aware GAN style transfer for PyTorch."""

__version__ = "0.1.0"

from culturegan import ops  # noqa: E402  (loads the compiled libraries and registers the ops)

__all__ = ["ops", "__version__"]
