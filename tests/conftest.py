"""Test configuration: Triton runs on the CPU through its interpreter, so it must be enabled
before anything imports triton (culturegan imports it lazily, torch on demand)."""

import os
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

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
    import torch

    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    print(f"torch seed: {seed}")
    yield seed
