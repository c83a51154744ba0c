"""pytest plumbing of the benchmarks: options, parametrization, the summary table and the JSON.

    pytest bench/                                   CPU sizes (or small sizes on a GPU)
    pytest bench/ --gpu-sizes --bench-json out.json  GAN-typical GPU sizes
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

# Benchmarks time the installed build (with its compiled libraries): `python -m pytest` puts the
# working directory first on sys.path, where the source tree's culturegan has no _C. And
# pytest's importlib mode leaves bench/ off sys.path, where the op files find _harness.
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != REPO_ROOT]
sys.path.insert(0, str(BENCH_DIR))

# Under TRITON_INTERPRET=1 every Triton kernel, CUDA ones included, would run in the interpreter;
# triton reads the variable when a kernel is defined, which is later (culturegan imports lazily).
TRITON_INTERPRET_NOTE = ("TRITON_INTERPRET=1 was unset: benchmarks never time the Triton interpreter"
                         if os.environ.pop("TRITON_INTERPRET", None) == "1" else None)

# torch.compile compiles in this process: by default inductor starts a pool of compile workers
# that import torch in the background after the first compile, and on a small CPU they slowed
# whatever was timed next (culturegan's providers run right after compile's) by up to 1.8x
# (patch_nce_loss, 5x256x256 fwd+bwd on 2 cores: 7.3 ms after a compile, 3.6 ms without one).
torch._inductor.config.compile_threads = 1



def _keep_freed_memory() -> str | None:
    """glibc gives large freed blocks back to the kernel (mmap above a threshold, heap trimming),
    so each call that allocates again has its pages faulted in and zeroed anew: on this project's
    2-core VM that cost eager's filter2d (4x64x128x128) 27-33 ms a call against 5 ms without it,
    and every "vs eager" ratio grew with what eager allocates, not with what the kernels do.
    Freed memory is kept instead, as a settled training process and jemalloc or tcmalloc keep
    it: every provider is timed for its arithmetic and memory traffic. Returns the table's note."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator keeps its own habits
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    if libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 2**31 - 1):
        return "glibc keeps freed memory (mallopt: no mmap below 1 GiB, no trimming): no page faults are timed"
    return None


KEEP_FREED_MEMORY_NOTE = _keep_freed_memory()

import _harness  # noqa: E402  (needs the sys.path above)

SESSION_KEY = pytest.StashKey[_harness.Session]()
DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("culturegan benchmarks")
    group.addoption("--gpu-sizes", action="store_true",
                    help="benchmark the GAN-typical GPU sizes (N=8, C 64..512, 32^2..256^2, up to 256 MiB)")
    group.addoption("--bench-json", metavar="PATH", type=Path, default=DEFAULT_JSON,
                    help=f"where to write the results (default {DEFAULT_JSON.relative_to(REPO_ROOT)})")


def pytest_configure(config: pytest.Config) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.getoption("--gpu-sizes") and device.type != "cuda":
        raise pytest.UsageError("--gpu-sizes needs a CUDA device (the CPU sizes are the default)")
    notes = [note for note in (TRITON_INTERPRET_NOTE, KEEP_FREED_MEMORY_NOTE) if note]
    config.stash[SESSION_KEY] = _harness.Session(device, notes)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    bench = getattr(metafunc.function, "op_bench", None)
    if bench is not None:
        session = metafunc.config.stash[SESSION_KEY]
        metafunc.parametrize("bench_param", _harness.params(bench, session.device,
                                                            metafunc.config.getoption("--gpu-sizes")))


@pytest.fixture
def bench_session(request: pytest.FixtureRequest) -> _harness.Session:
    return request.config.stash[SESSION_KEY]


def pytest_sessionfinish(session: pytest.Session) -> None:
    bench = session.config.stash.get(SESSION_KEY, None)
    if bench is not None and bench.measurements:
        bench.write_json(session.config.getoption("--bench-json"))


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: ours closes the report
def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    bench = config.stash.get(SESSION_KEY, None)
    if bench is None or not bench.measurements:
        return
    terminalreporter.section("culturegan benchmarks")
    for line in bench.report_lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"results: {config.getoption('--bench-json')}")
