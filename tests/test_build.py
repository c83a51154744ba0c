"""What `pip install .` built, and what `culturegan doctor` says about it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from culturegan import _libraries


def nvcc_available() -> bool:
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    return shutil.which("nvcc") is not None or any(c and Path(c, "bin", "nvcc").exists() for c in candidates)


def test_cpu_library_is_built_and_loaded():
    status = _libraries.cpu_library()
    assert status.loaded, status.reason
    assert "_C" in _libraries.build_info()["built"]


@pytest.mark.skipif(torch.version.cuda is None or not nvcc_available(),
                    reason="the CUDA library is built only where torch has CUDA and nvcc exists")
def test_cuda_library_was_built_where_torch_has_cuda_and_nvcc_exists():
    """Runs in CI (CUDA torch, nvcc, no GPU): proves the CUDA code compiles, links and loads."""
    info = _libraries.build_info()
    assert "_C_cuda" in info["built"], f"CUDA library skipped: {info.get('skipped')}"
    status = _libraries.cuda_library()
    assert status.loaded, status.reason
    assert torch._C._dispatch_has_kernel_for_dispatch_key("culturegan::bias_leaky_relu", "CUDA")


def test_build_info_names_the_torch_it_was_built_against():
    assert _libraries.build_info()["torch_version"] == torch.__version__


@pytest.mark.parametrize("command", [["culturegan", "doctor"], [sys.executable, "-m", "culturegan.doctor"],
                                     [sys.executable, "-m", "culturegan", "doctor"]])
def test_doctor_reports_versions_libraries_and_backends(command, tmp_path):
    if command[0] == "culturegan":
        command[0] = str(Path(sys.executable).with_name("culturegan"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)  # not the source tree
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"torch {torch.__version__}" in out
    assert "_C " in out and "loaded from" in out
    assert "bias_leaky_relu" in out
    assert "cpu  tensors  cpu       yes" in out
    assert "cpu  tensors  reference yes" in out
    if not torch.cuda.is_available():
        assert "cuda tensors  cuda      no: " in out
