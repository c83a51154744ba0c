"""culturegan: GPU-kernel-accelerated culture-aware GAN style transfer for PyTorch."""

__version__ = "0.1.0"

from culturegan import ops  # noqa: E402  (loads the compiled libraries and registers the ops)

__all__ = ["ops", "stylize", "__version__"]


def __getattr__(name: str):
    # culturegan.stylize without importing the models and image stack on `import culturegan`
    if name == "stylize":
        from culturegan.transfer import stylize

        return stylize
    raise AttributeError(f"module 'culturegan' has no attribute {name!r}")
