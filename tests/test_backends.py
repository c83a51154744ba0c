"""Backend selection: per call, per block, by environment; errors and fallbacks."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import culturegan
from culturegan import ops
from culturegan.ops import _backends


def test_auto_picks_the_compiled_cpu_backend_for_cpu_tensors():
    assert _backends._select("cpu", None) == "cpu"


def test_call_block_and_environment_choose_in_that_order(monkeypatch):
    monkeypatch.setenv("CULTUREGAN_BACKEND", "reference")
    assert _backends._select("cpu", None) == "reference"
    with ops.use_backend("cpu"):
        assert _backends._select("cpu", None) == "cpu"
        with ops.use_backend("reference"):
            assert _backends._select("cpu", None) == "reference"
            assert _backends._select("cpu", "cpu") == "cpu"
        assert _backends._select("cpu", None) == "cpu"
    assert _backends._select("cpu", None) == "reference"


TRITON_FIRST = ("triton", "cuda", "reference")


@pytest.mark.parametrize("name", ["upfirdn2d", "conv2d_resample", "modulated_conv2d"])
def test_resampling_ops_prefer_triton_on_cuda_tensors(name):
    """Measured on an H200: upfirdn2d's Triton kernel beat its CUDA one (README, GPU table)."""
    assert importlib.import_module(f"culturegan.ops.{name}").OP.auto_order == {"cuda": TRITON_FIRST}


def test_an_ops_own_auto_order_comes_first_and_a_request_still_wins(monkeypatch):
    usable = {"cuda", "triton", "reference"}
    monkeypatch.setattr(_backends, "unavailable_reason", lambda backend, device: None if backend in usable else "no")
    monkeypatch.setattr(_backends._libraries, "require", lambda library: True)
    assert _backends._select("cuda", None) == "cuda"
    assert _backends._select("cuda", None, TRITON_FIRST) == "triton"
    assert _backends._select("cuda", "cuda", TRITON_FIRST) == "cuda"
    with ops.use_backend("reference"):
        assert _backends._select("cuda", None, TRITON_FIRST) == "reference"
    usable.remove("triton")  # triton not installed: the next in the op's order
    assert _backends._select("cuda", None, TRITON_FIRST) == "cuda"


UNKNOWN_BACKEND = r"unknown backend 'cuda_fast'; expected one of cuda, triton, cpu, reference"
# Arguments each registered op accepts, to call it with a backend name it does not know.
EXAMPLE_ARGUMENTS = {
    "bias_leaky_relu": lambda: (torch.ones(2, 3),),
    "channel_affine": lambda: (torch.ones(2, 3), torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3)),
    "conv2d_bias_leaky_relu": lambda: (torch.ones(1, 3, 5, 5), torch.ones(2, 3, 3, 3)),
    "feature_stats": lambda: (torch.ones(2, 3, 4),),
    "instance_norm_act": lambda: (torch.ones(2, 3, 4),),
    "conv2d_instance_norm_act": lambda: (torch.ones(1, 3, 5, 5), torch.ones(2, 3, 3, 3)),
    "conv_transpose2d_instance_norm_act": lambda: (torch.ones(1, 3, 4, 4), torch.ones(3, 2, 3, 3)),
    "gram": lambda: (torch.ones(2, 3, 4),),
    "culture_stats": lambda: (torch.ones(2, 3, 4),),
    "gram_loss": lambda: (torch.ones(2, 3, 4), torch.ones(3, 3)),
    "patch_nce_loss": lambda: (torch.ones(2, 4, 3), torch.ones(2, 4, 3)),
    "upfirdn2d": lambda: (torch.ones(1, 3, 4, 4), torch.ones(2, 2)),
    "conv2d_resample": lambda: (torch.ones(1, 3, 4, 4), torch.ones(2, 3, 3, 3)),
    "modulated_conv2d": lambda: (torch.ones(1, 3, 4, 4), torch.ones(2, 3, 3, 3), torch.ones(1, 3)),
}


@pytest.mark.parametrize("op", ops.registered_ops())
def test_every_op_rejects_an_unknown_backend_naming_the_choices(op):
    assert op in EXAMPLE_ARGUMENTS, f"give EXAMPLE_ARGUMENTS of the op {op}"
    with pytest.raises(ValueError, match=UNKNOWN_BACKEND):
        getattr(ops, op)(*EXAMPLE_ARGUMENTS[op](), backend="cuda_fast")


def test_use_backend_rejects_an_unknown_backend_naming_the_choices():
    with pytest.raises(ValueError, match=UNKNOWN_BACKEND):
        ops.use_backend("cuda_fast").__enter__()


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("CULTUREGAN_BACKEND", "fastest")
    with pytest.raises(ValueError, match="unknown CULTUREGAN_BACKEND value 'fastest'"):
        ops.bias_leaky_relu(torch.ones(2, 3))


def test_explicit_backend_for_the_wrong_device_raises():
    with pytest.raises(ops.BackendUnavailableError, match="the cuda backend runs cuda tensors, not cpu tensors"):
        ops.bias_leaky_relu(torch.ones(2, 3), backend="cuda")


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        ops.bias_leaky_relu(torch.ones(2, 3), backend="triton")


def test_every_op_declares_every_backend():
    for op, implementations in ops.registered_ops().items():
        assert set(implementations) == set(ops.BACKENDS), op


# ------------------------------------------------- broken installations (in a subprocess)

PROBE = textwrap.dedent("""
    import warnings, torch
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        from culturegan import ops
        x, b = torch.randn(2, 3, 4, 4), torch.randn(3)
        y1 = ops.bias_leaky_relu(x, b)
        y2 = ops.bias_leaky_relu(x, b)
    assert torch.equal(y1, ops.bias_leaky_relu_reference(x, b)) and torch.equal(y1, y2)
    messages = [str(w.message) for w in caught if "compiled library" in str(w.message)]
    print("WARNINGS", len(messages))
    print(messages[0] if messages else "")
""")


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the installed package, to break in one way or another."""
    target = tmp_path / "culturegan"
    shutil.copytree(Path(culturegan.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def run_probe(package_copy: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CULTUREGAN_")}
    environment.update(PYTHONPATH=str(package_copy.parent), TRITON_INTERPRET="0", **env)
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=environment,
                          cwd=package_copy.parent, timeout=300)


def test_missing_library_falls_back_with_one_warning(package_copy):
    for library in package_copy.glob("_C*.so"):
        library.unlink()
    result = run_probe(package_copy)
    assert result.returncode == 0, result.stderr
    assert "WARNINGS 1" in result.stdout
    assert "compiled library _C is unavailable" in result.stdout and "ops fall back" in result.stdout


def test_missing_library_in_strict_mode_raises(package_copy):
    for library in package_copy.glob("_C*.so"):
        library.unlink()
    result = run_probe(package_copy, CULTUREGAN_STRICT="1")
    assert result.returncode != 0
    assert "compiled library _C is unavailable" in result.stderr and "CULTUREGAN_STRICT=1" in result.stderr


def test_library_built_for_another_torch_is_not_loaded(package_copy):
    info_path = package_copy / "_build_info.json"
    info = json.loads(info_path.read_text())
    info["torch_version"] = "2.0.0+cpu"
    info_path.write_text(json.dumps(info))
    result = run_probe(package_copy)
    assert result.returncode == 0, result.stderr
    assert "WARNINGS 1" in result.stdout
    assert f"built against torch 2.0.0+cpu but torch {torch.__version__} is running" in result.stdout
    assert "pip install --no-build-isolation --force-reinstall" in result.stdout
