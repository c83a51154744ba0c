"""Build culturegan: the CPU library always, the CUDA library wherever it can be compiled.

Two shared libraries keep the CPU code loadable under a CPU-only torch:
  culturegan/_C       C++ CPU kernels and the op schemas (TORCH_LIBRARY)      always built
  culturegan/_C_cuda  CUDA kernels (TORCH_LIBRARY_IMPL, CUDA key)             built when possible

Environment:
  CULTUREGAN_BUILD_CUDA   unset/auto: build CUDA when torch has CUDA and nvcc is found;
                          1: build it or fail with the reason; 0: skip it.
  TORCH_CUDA_ARCH_LIST    target architectures (default "8.0;9.0+PTX"; no GPU is needed).
  CUDA_HOME / CUDA_PATH   the CUDA toolkit (default: /usr/local/cuda, then nvcc on PATH).
  MAX_JOBS                parallel compile jobs (ninja).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def log(message: str) -> None:
    print(f"culturegan build: {message}", file=sys.stderr, flush=True)


def find_cuda_home() -> Path | None:
    """The CUDA toolkit root: the one holding bin/nvcc (and lib64/libcudart.so)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "bin" / "nvcc").exists():
            return Path(candidate)
    return None


def nvcc_version(cuda_home: Path) -> str | None:
    try:
        out = subprocess.run([str(cuda_home / "bin" / "nvcc"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def cuda_decision(torch_cuda: str | None) -> tuple[Path | None, str | None]:
    """Returns (cuda_home, None) to build CUDA, or (None, reason) to skip it."""
    mode = os.environ.get("CULTUREGAN_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "false", "no", "off"):
        return None, "CULTUREGAN_BUILD_CUDA=0"
    cuda_home = find_cuda_home()
    reason = None
    if torch_cuda is None:
        reason = "this torch is a CPU-only build (torch.version.cuda is None)"
    elif cuda_home is None:
        reason = "nvcc not found (set CUDA_HOME to the CUDA toolkit root)"
    else:
        found = nvcc_version(cuda_home)
        if found is None:
            reason = f"{cuda_home}/bin/nvcc does not run"
        elif found.split(".")[0] != torch_cuda.split(".")[0]:
            reason = f"nvcc {found} at {cuda_home} does not match torch's CUDA {torch_cuda} (major version)"
    if reason and mode in ("1", "true", "yes", "on"):
        sys.exit(f"culturegan build: CULTUREGAN_BUILD_CUDA=1 but the CUDA library cannot be built: {reason}")
    return (None, reason) if reason else (cuda_home, None)


def nvidia_wheel_include_dirs(cuda_home: Path) -> list[str]:
    """Include folders of the nvidia-* wheels for CUDA library headers the toolkit lacks.

    A pip-assembled toolkit may ship no cuSPARSE/cuBLAS headers, while torch's ATen/cuda
    headers include them; torch's own nvidia wheels carry them (e.g. nvidia/cu13/include).
    """
    wanted = [h for h in ("cusparse.h", "cublas_v2.h") if not (cuda_home / "include" / h).exists()]
    if not wanted:
        return []
    found = []
    for entry in sys.path:
        for include in sorted(glob.glob(os.path.join(entry, "nvidia", "*", "include"))):
            if any(os.path.exists(os.path.join(include, h)) for h in wanted) and include not in found:
                found.append(include)
    return found


def main() -> None:
    import torch  # its CUDA version decides below whether the CUDA library is built

    cuda_home, skip_reason = cuda_decision(torch.version.cuda)
    if cuda_home is not None:
        # cpp_extension reads CUDA_HOME at import time; it otherwise guesses from nvcc's path.
        os.environ["CUDA_HOME"] = str(cuda_home)
        # Without a visible GPU torch cannot pick the architectures itself (IndexError).
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # -fno-trapping-math lets GCC if-convert (and so vectorise) loops with float selects; we
    # never enable floating-point exceptions, so results are unchanged.
    cxx_flags = ["-O3", "-fopenmp", "-fno-trapping-math"]
    include_dirs = [str(ROOT / "csrc")]
    cpu_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    cpu_sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    extensions = [
        CppExtension("culturegan._C", cpu_sources, include_dirs=include_dirs,
                     extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"]),
    ]
    built = {"_C": "C++ CPU kernels and op schemas"}
    skipped = {}
    if cuda_home is not None:
        arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
        system_includes = [flag for d in nvidia_wheel_include_dirs(cuda_home) for flag in ("-isystem", d)]
        cuda_sources = sorted(str(p.relative_to(ROOT)) for pattern in ("*.cu", "*.cpp")
                              for p in (ROOT / "csrc" / "cuda").glob(pattern))
        extensions.append(CUDAExtension(
            "culturegan._C_cuda", cuda_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": ["-O3"] + system_includes,
                                "nvcc": ["-O3"] + system_includes}))
        built["_C_cuda"] = f"CUDA kernels for {arch_list} (nvcc at {cuda_home})"
        log(f"building the CUDA library for TORCH_CUDA_ARCH_LIST={arch_list} with {cuda_home}/bin/nvcc")
    else:
        skipped["_C_cuda"] = skip_reason
        log(f"skipping the CUDA library: {skip_reason}")
    log("building the CPU library")

    build_info = {
        "torch_version": torch.__version__,
        "torch_cuda_version": torch.version.cuda,
        "python": sys.version.split()[0],
        "built": built,
        "skipped": skipped,
    }

    class BuildWithInfo(BuildExtension):
        """Records what was built against which torch, so a mismatch is caught at load time."""

        def run(self):
            super().run()
            targets = [Path(self.build_lib) / "culturegan"]
            if self.inplace:
                targets.append(ROOT / "culturegan")
            for target in targets:
                target.mkdir(parents=True, exist_ok=True)
                (target / "_build_info.json").write_text(json.dumps(build_info, indent=2) + "\n")
            log(f"built {', '.join(built)}" + (f"; skipped {', '.join(skipped)}" if skipped else ""))

    setup(
        # every sub-package of culturegan/ (a new one cannot be left out of the wheel), and kernels/
        packages=[*find_packages(include=["culturegan", "culturegan.*"]), "culturegan.kernels"],
        # The Triton kernels live in kernels/ in the source tree and ship as culturegan.kernels.
        package_dir={"culturegan.kernels": "kernels"},
        ext_modules=extensions,
        cmdclass={"build_ext": BuildWithInfo.with_options(no_python_abi_suffix=False)},
    )


if __name__ == "__main__":
    main()
