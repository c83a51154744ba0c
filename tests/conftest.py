"""Test configuration. Without a GPU, Triton runs on the CPU through its interpreter, which must
be enabled before any Triton kernel is defined (culturegan imports its kernels lazily). With a
GPU the Triton kernels are tested compiled, on CUDA tensors (the interpreter would take over
those too)."""

import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The tests hold float32 results to float32's precision. By default torch lets cuDNN, and with it
# the Triton convolution (kernels/conv2d.py follows torch.backends.cudnn.allow_tf32), multiply in
# TF32 (10-bit mantissas): on a GPU the float32 comparisons would measure TF32, not the kernels.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

import pytest  # noqa: E402

import culturegan  # noqa: E402

SOURCE_PACKAGE = Path(__file__).resolve().parents[1] / "culturegan"

if Path(culturegan.__file__).resolve().parent == SOURCE_PACKAGE:
    pytest.exit("the tests imported culturegan from the source tree, which has no compiled libraries: "
                "install it (pip install --no-build-isolation .) and run `pytest tests`, not `python -m pytest`",
                returncode=2)


@pytest.fixture(autouse=True)
def fresh_seed():
    """Fresh random inputs every run; the seed is printed so a failure can be replayed."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    print(f"torch seed: {seed}")
    yield seed
