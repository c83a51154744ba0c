"""culturegan: GPU-kernel-accelerated culture-aware GAN style transfer for PyTorch."""

__version__ = "0.1.0"

__all__ = ["ops", "stylize", "__version__"]


def __getattr__(name: str):
    # Loaded on first use, so that `import culturegan` (and `culturegan --help`) imports neither
    # torch nor the compiled libraries. Every culturegan module that calls the ops imports
    # culturegan.ops itself, which registers torch.ops.culturegan.* before any of them runs.
    if name == "ops":
        import importlib

        return importlib.import_module("culturegan.ops")
    if name == "stylize":
        from culturegan.transfer import stylize

        return stylize
    raise AttributeError(f"module 'culturegan' has no attribute {name!r}")
