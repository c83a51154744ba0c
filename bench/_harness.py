"""Generic benchmark harness: times each op against torch eager and torch.compile.

An op's benchmark file declares an OpBench (the eager torch code, the culturegan call per
backend, how to build inputs, the bytes the op must move, optional targets) and exposes
``make_test(bench)`` as a test function. bench/conftest.py parametrizes it over
case (shape, dtype) x mode (fwd, fwd+bwd) x provider (eager, compile, each culturegan backend
for the device), and prints the table once every provider has been timed in the same session.

The plain torch baselines (eager, compile) run the same code in each memory layout of LAYOUTS,
inputs and models alike, their rounds interleaved in one test, and are reported in the faster
layout: a ratio is against the best plain torch a user would run, not against one layout
chosen for them. The table and the JSON name the layout and the other layout's time.

A culturegan backend's rounds are interleaved with eager's (in each of LAYOUTS, on inputs of
their own), and its "vs eager" is against the faster of those interleaved eager rounds: the
machine's drift between tests (up to 25% on a shared VM) cannot make a ratio, only its own
rounds can. Eager's own row keeps its own test's time.

pytest-benchmark times the rounds (so --benchmark-json, --benchmark-compare and its own table
work as usual; for a baseline they hold the faster layout's rounds); a round calls the step
`iterations` times and, on CUDA, synchronizes once at its end, so the launch overhead of small
kernels is averaged over the round instead of adding a synchronize per call. The session keeps
every provider's times, so the closing table gives ratios measured side by side in one run.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import math
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from culturegan import ops

Shape = tuple[int, ...]
Inputs = tuple[torch.Tensor, ...]

FORWARD, TRAINING = "fwd", "fwd+bwd"
MODES = (FORWARD, TRAINING)
EAGER, COMPILE = "eager", "compile"
BASELINES = (EAGER, COMPILE)  # plain torch: timed in every layout, reported in the faster
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
FAST_BACKENDS = ("cpu", "cuda", "triton")  # the ones targets apply to; reference is plain torch

# GAN generator activations, channels halving as resolution doubles. CPU sizes keep
# `pytest bench/` within 5 minutes on 2 cores; (8, 64, 128, 128) float32 is the CPU target.
CPU_CASES = (
    ((8, 64, 128, 128), torch.float32),
    ((8, 64, 128, 128), torch.bfloat16),
    ((8, 128, 64, 64), torch.float32),
    ((8, 256, 32, 32), torch.float32),
)
GPU_SHAPES = ((8, 512, 32, 32), (8, 256, 64, 64), (8, 128, 128, 128), (8, 64, 256, 256))
GPU_CASES = tuple((shape, dtype) for shape in GPU_SHAPES
                  for dtype in (torch.float32, torch.bfloat16, torch.float16)) + (
    ((8, 512, 128, 128), torch.float32),  # 256 MiB: far beyond L2, for the bandwidth target
)

COPY_BYTES = 1 << 30  # copy bandwidth is measured on 1 GiB, as gpu_check.sh does
MATMUL_SIZE = 8192  # the matmul rate is measured on 8192^2 matrices, as gpu_check.sh does


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout of x: plain code that holds models (a network, a training step) builds them in
    the layout of its input, as a user converts model and data alike."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def layout_name(x: torch.Tensor) -> str:
    """x's entry of LAYOUTS ("" for a tensor that is not 4-D)."""
    return next(name for name, layout in LAYOUTS.items() if layout == memory_format(x)) if x.dim() == 4 else ""


# ---------------------------------------------------------------------------- declarations

@dataclasses.dataclass(frozen=True)
class Target:
    """A goal reported on the matching rows of the table (never asserted: timings are noisy)."""

    device_type: str
    mode: str
    metric: str  # "vs_eager", "vs_compile", "copy_fraction", "matmul_fraction" or "memory_vs_eager"
    minimum: float  # the bound: a minimum, except for memory_vs_eager (peak memory / eager's), a maximum
    shape: Shape | None = None
    dtype: torch.dtype | None = None
    min_tensor_bytes: int = 0
    providers: tuple[str, ...] = FAST_BACKENDS

    def applies(self, row: Row) -> bool:
        return (row.device_type == self.device_type and row.mode == self.mode and row.provider in self.providers
                and (self.shape is None or tuple(row.shape) == self.shape)
                and (self.dtype is None or row.dtype == dtype_name(self.dtype))
                and row.tensor_bytes >= self.min_tensor_bytes)

    def met(self, row: Row) -> bool:
        value = getattr(row, self.metric)
        return value <= self.minimum if self.metric == "memory_vs_eager" else value >= self.minimum

    @property
    def label(self) -> str:
        return {"vs_eager": f">={self.minimum:g}x eager", "vs_compile": f">={self.minimum:g}x compile",
                "copy_fraction": f">={self.minimum:.0%} copy bw",
                "matmul_fraction": f">={self.minimum:.0%} matmul rate",
                "memory_vs_eager": f"<={self.minimum:g}x eager memory"}[self.metric]


@dataclasses.dataclass(frozen=True)
class OpBench:
    """Everything the harness needs to benchmark one op."""

    name: str
    # the torch code users would write; also what gets compiled. It runs on inputs in each of
    # LAYOUTS; code that holds models builds them in memory_format(its input).
    eager: Callable[..., torch.Tensor]
    backend: Callable[[str], Callable[..., torch.Tensor]]  # backend name -> the op on that backend
    make_inputs: Callable[[Shape, torch.dtype, torch.device], Inputs]  # floating inputs get grads in fwd+bwd
    bytes_moved: Callable[[Shape, torch.dtype, str], int]  # minimal DRAM traffic of (shape, dtype, mode)
    targets: Sequence[Target] = ()
    cpu_cases: Sequence[tuple[Shape, torch.dtype]] = CPU_CASES
    gpu_cases: Sequence[tuple[Shape, torch.dtype]] = GPU_CASES
    flops: Callable[[Shape, torch.dtype, str], int] | None = None  # for GEMM-like ops: rated against matmul
    check_eps: float = 16  # the sanity check against eager allows this many ulps (1.0's) of the dtype
    gpu_compile_mode: str | None = None  # torch.compile mode on GPUs (e.g. "max-autotune-no-cudagraphs")
    modes: tuple[str, ...] = MODES  # a callable that trains by itself (a whole training step) takes FORWARD only
    check_against_eager: bool = True  # off where providers' outputs differ by design (stateful steps)


@dataclasses.dataclass(frozen=True)
class Param:
    """One test: a case, a mode and a provider."""

    shape: Shape
    dtype: torch.dtype
    mode: str
    provider: str

    @property
    def id(self) -> str:
        return f"{'x'.join(map(str, self.shape))}-{dtype_name(self.dtype)}-{self.mode}-{self.provider}"


def providers(device: torch.device) -> list[str]:
    """eager, compile and the culturegan backends meant for the device: its native one, triton, reference."""
    return [EAGER, COMPILE, *(b for b in (device.type, "triton", "reference") if b in ops.BACKENDS)]


def params(bench: OpBench, device: torch.device, gpu_sizes: bool) -> list[pytest.param]:
    cases = bench.gpu_cases if gpu_sizes else bench.cpu_cases
    return [pytest.param(p, id=p.id) for p in (Param(shape, dtype, mode, provider)
                                              for shape, dtype in cases for mode in bench.modes
                                              for provider in providers(device))]


def make_test(bench: OpBench) -> Callable[..., None]:
    """The test function of an op file; conftest parametrizes its `bench_param`."""

    def test(bench_param: Param, bench_session: Session, benchmark) -> None:
        bench_session.run(bench, bench_param, benchmark)

    test.op_bench = bench
    return test


# -------------------------------------------------------------------------------- running

def _unavailable_reason(provider: str, device: torch.device) -> str | None:
    if provider in (EAGER, COMPILE):
        return None
    if provider == "triton" and device.type == "cpu":
        return "triton on CPU tensors is its interpreter, which benchmarks never time"
    return ops.unavailable_reason(provider, device.type)


def _compiled(fn: Callable, mode: str | None = None) -> Callable:
    # Every case recompiles fn (dynamic=False): reset so dynamo's per-function recompile limit
    # is never reached, past which it would silently run eager code.
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False, mode=mode)


def _implementation(bench: OpBench, provider: str, device: torch.device) -> Callable:
    if provider == EAGER:
        return bench.eager
    if provider == COMPILE:
        return _compiled(bench.eager, bench.gpu_compile_mode if device.type == "cuda" else None)
    return bench.backend(provider)


def _check_against_eager(bench: OpBench, fn: Callable, inputs: Inputs) -> None:
    # Catches a broken kernel before it gets a timing; precision is tests/'s job, hence loose.
    expected = bench.eager(*inputs)
    tolerance = bench.check_eps * torch.finfo(expected.dtype).eps
    torch.testing.assert_close(fn(*inputs), expected, rtol=tolerance, atol=tolerance)


def _in_layout(inputs: Inputs, layout: str) -> Inputs:
    return tuple(t.contiguous(memory_format=LAYOUTS[layout]) if t.dim() == 4 else t for t in inputs)


def _forward_step(fn: Callable, inputs: Inputs) -> Callable[[], None]:
    return lambda: fn(*inputs)


def _training_step(fn: Callable, inputs: Inputs) -> Callable[[], None]:
    leaves = [t.requires_grad_() for t in inputs if t.is_floating_point()]
    grad = torch.randn_like(fn(*inputs))

    def step() -> None:
        for leaf in leaves:
            leaf.grad = None  # accumulating into an existing .grad would time an extra add
        fn(*inputs).backward(grad)

    return step


def _steps_by_layout(param: Param, fn: Callable, inputs: Inputs) -> dict[str, Callable[[], None]]:
    """culturegan's providers run on the inputs as the bench makes them, the baselines in each layout."""
    layouts = ({layout: _in_layout(inputs, layout) for layout in LAYOUTS} if param.provider in BASELINES
               else {layout_name(inputs[0]): inputs})
    make_step = _forward_step if param.mode == FORWARD else _training_step
    return {layout: make_step(fn, layout_inputs) for layout, layout_inputs in layouts.items()}


# --------------------------------------------------------------------------------- timing

@dataclasses.dataclass(frozen=True)
class TimingPolicy:
    rounds: int
    warmup_rounds: int  # >= 1, after one untimed call that compiles and allocates
    min_round_s: float  # a round repeats the step until it lasts this long


TIMING = {"cpu": TimingPolicy(rounds=15, warmup_rounds=2, min_round_s=0.0),
          "cuda": TimingPolicy(rounds=20, warmup_rounds=3, min_round_s=2e-3)}


def _round(step: Callable[[], None], iterations: int, device: torch.device) -> Callable[[], None]:
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run_round() -> None:
        for _ in range(iterations):
            step()
        synchronize()  # the work queued by this round is part of its time

    return run_round


@dataclasses.dataclass(frozen=True)
class Timing:
    """What measure() got for one step."""

    seconds: tuple[float, ...]  # per call, one per round
    iterations: int  # calls per round

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _calls_per_round(step: Callable[[], None], policy: TimingPolicy, device: torch.device) -> int:
    _round(step, 1, device)()  # compiles, allocates, loads kernels
    single = min(_timed(_round(step, 1, device)) for _ in range(policy.warmup_rounds))
    return max(1, math.ceil(policy.min_round_s / single))


def measure(benchmark, steps: dict[str, Callable[[], None]], device: torch.device,
            companions: dict[str, Callable[[], None]] | None = None) -> tuple[str, dict[str, Timing]]:
    """Times each step's rounds with pytest-benchmark, the rounds of the steps and of their
    companions (baselines timed alongside) interleaved in a random order so that the machine's
    drift hits them alike; returns the fastest step's name (its rounds are what pytest-benchmark
    keeps) and every step's and companion's timing."""
    steps_only = list(steps)
    steps = {**steps, **(companions or {})}
    policy = TIMING[device.type]
    iterations = {name: _calls_per_round(step, policy, device) for name, step in steps.items()}
    rounds = {name: _round(step, iterations[name], device) for name, step in steps.items()}
    shuffler = random.Random(0)
    schedule = [name for _ in range(policy.warmup_rounds + policy.rounds)
                for name in shuffler.sample(list(steps), len(steps))]
    warmup = policy.warmup_rounds * len(steps)
    upcoming = iter(schedule)
    benchmark.pedantic(lambda name: rounds[name](), setup=lambda: ((next(upcoming),), {}),
                       rounds=len(schedule) - warmup, warmup_rounds=warmup, iterations=1)
    durations = benchmark.stats.stats.data
    timings = {name: Timing(tuple(d / iterations[name] for d, n in zip(durations, schedule[warmup:]) if n == name),
                            iterations[name]) for name in steps}
    fastest = min(steps_only, key=lambda name: timings[name].median)
    durations[:] = [d for d, n in zip(durations, schedule[warmup:]) if n == fastest]
    return fastest, timings


def _peak_bytes(step: Callable[[], None]) -> int:
    """The most CUDA memory one more step holds at once (everything allocated counts)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -------------------------------------------------------------------------------- results

@dataclasses.dataclass(frozen=True)
class Measurement:
    op: str
    shape: Shape
    dtype: str
    mode: str
    provider: str
    layout: str  # of the timed inputs (and a baseline's models): for a baseline, the faster of LAYOUTS
    seconds: tuple[float, ...]  # per call, one per round
    iterations: int
    layout_medians: dict[str, float]  # each layout timed -> its median seconds per call
    bytes_moved: int
    tensor_bytes: int  # of the op's main tensor (the first input)
    flops: int  # 0 where the op declares none
    peak_bytes: int | None  # CUDA only: the most memory one step held (inputs and weights included)
    eager_alongside: float | None  # a culturegan backend: median of eager's faster layout in its rounds

    @property
    def key(self) -> tuple:
        return self.op, self.shape, self.dtype, self.mode


@dataclasses.dataclass(frozen=True)
class Row:
    """A table / JSON row: a measurement and what is derived from it."""

    op: str
    shape: Shape
    dtype: str
    mode: str
    provider: str
    device_type: str
    layout: str  # the layout timed, for eager and compile the faster (see layout_medians_s)
    layout_medians_s: dict[str, float]  # every layout timed: both for eager and compile, one otherwise
    median_s: float
    min_s: float
    rounds: int
    iterations: int
    bytes_moved: int
    tensor_bytes: int
    gb_per_s: float
    vs_eager: float | None  # eager time / this time: > 1 is faster
    vs_compile: float | None
    copy_fraction: float | None  # of the measured copy bandwidth, CUDA only; > 1 where data stays in L2
    tflops: float | None  # where the op declares its FLOPs
    matmul_fraction: float | None  # of the measured matmul rate in the same dtype, CUDA only
    peak_mib: float | None  # CUDA only
    memory_vs_eager: float | None  # this peak / eager's: < 1 holds less
    target: str  # "", "pass" or "miss", with the goals
    eager_alongside_s: float | None = None  # a culturegan backend: eager timed in its rounds (vs_eager's base)


def _ratio(baseline: float | None, seconds: float) -> float | None:
    return None if baseline is None else baseline / seconds


def _target_verdict(targets: Sequence[Target], row: Row) -> str:
    # A goal whose baseline was not measured in this run (say, -k left eager out) is not judged.
    goals = [t for t in targets if t.applies(row) and getattr(row, t.metric) is not None]
    if not goals:
        return ""
    missed = [t.label for t in goals if not t.met(row)]
    return f"miss ({', '.join(missed)})" if missed else f"pass ({', '.join(t.label for t in goals)})"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    return models[0] if models else platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict:
    return {
        "device": _device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _version("triton"),
        "culturegan": _version("culturegan"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


class Session:
    """What one pytest session measured; the table and the JSON are built from it at the end."""

    def __init__(self, device: torch.device, notes: Sequence[str] = ()) -> None:
        self.device = device
        self.notes = list(notes)
        self.measurements: list[Measurement] = []
        self.skipped: dict[str, str] = {}  # provider -> why it did not run
        self._targets: dict[str, Sequence[Target]] = {}

    def run(self, bench: OpBench, param: Param, benchmark) -> None:
        reason = _unavailable_reason(param.provider, self.device)
        if reason is not None:
            self.skipped[param.provider] = reason
            pytest.skip(f"{param.provider}: {reason}")
        fn = _implementation(bench, param.provider, self.device)
        inputs = bench.make_inputs(param.shape, param.dtype, self.device)
        if param.mode == FORWARD and param.provider != EAGER and bench.check_against_eager:
            _check_against_eager(bench, fn, inputs)  # fwd+bwd reuses the same code, checked here
        steps = _steps_by_layout(param, fn, inputs)
        companions = self._eager_alongside(bench, param) if param.provider in FAST_BACKENDS else {}
        benchmark.group = f"{bench.name} {param.id.rsplit('-', 1)[0]}"
        benchmark.extra_info.update(op=bench.name, shape=list(param.shape), dtype=dtype_name(param.dtype),
                                    mode=param.mode, provider=param.provider, device=self.device.type,
                                    bytes_moved=bench.bytes_moved(param.shape, param.dtype, param.mode))
        layout, timings = measure(benchmark, steps, self.device, companions)
        layout_medians = {name: timings[name].median for name in steps}
        eager_alongside = min((timings[name].median for name in companions), default=None)
        benchmark.extra_info.update(calls_per_round=timings[layout].iterations, layout=layout,
                                    layout_medians_s=layout_medians, eager_alongside_s=eager_alongside)
        peak = _peak_bytes(steps[layout]) if self.device.type == "cuda" else None
        self._targets[bench.name] = bench.targets
        self.measurements.append(Measurement(
            bench.name, param.shape, dtype_name(param.dtype), param.mode, param.provider, layout,
            timings[layout].seconds, timings[layout].iterations, layout_medians,
            bench.bytes_moved(param.shape, param.dtype, param.mode), inputs[0].numel() * inputs[0].element_size(),
            bench.flops(param.shape, param.dtype, param.mode) if bench.flops else 0, peak, eager_alongside))

    def _eager_alongside(self, bench: OpBench, param: Param) -> dict[str, Callable[[], None]]:
        """Eager's steps in each layout, on inputs of their own, to time in the same rounds."""
        eager = dataclasses.replace(param, provider=EAGER)
        inputs = bench.make_inputs(param.shape, param.dtype, self.device)
        return {f"{EAGER} {layout}": step for layout, step in _steps_by_layout(eager, bench.eager, inputs).items()}

    @functools.cached_property
    def copy_bandwidth(self) -> float | None:
        """Device-to-device copy bytes/s (read + write), measured once; None on CPU."""
        if self.device.type != "cuda":
            return None
        source = torch.empty(COPY_BYTES, dtype=torch.uint8, device=self.device)
        target = torch.empty_like(source)
        copy = _round(lambda: target.copy_(source), 10, self.device)
        copy()
        return 2 * COPY_BYTES * 10 / statistics.median(_timed(copy) for _ in range(10))

    @functools.cache
    def matmul_rate(self, dtype: str) -> float | None:
        """FLOP/s of a square matmul in `dtype` (torch defaults: no TF32 for float32), measured once
        per dtype; None on CPU."""
        if self.device.type != "cuda":
            return None
        a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=self.device, dtype=getattr(torch, dtype))
                for _ in range(2))
        matmul = _round(lambda: a @ b, 10, self.device)
        matmul()
        return 2 * MATMUL_SIZE**3 * 10 / statistics.median(_timed(matmul) for _ in range(5))

    def rows(self) -> list[Row]:
        medians = {(m.key, m.provider): statistics.median(m.seconds) for m in self.measurements}
        eager_peaks = {m.key: m.peak_bytes for m in self.measurements if m.provider == EAGER}
        return [self._row(m, medians, eager_peaks.get(m.key)) for m in self.measurements]

    def _row(self, m: Measurement, medians: dict, eager_peak: int | None) -> Row:
        median = medians[m.key, m.provider]
        rate = m.bytes_moved / median
        row = Row(m.op, m.shape, m.dtype, m.mode, m.provider, self.device.type, m.layout, m.layout_medians, median,
                  min(m.seconds), len(m.seconds), m.iterations, m.bytes_moved, m.tensor_bytes, rate / 1e9,
                  _ratio(m.eager_alongside or medians.get((m.key, EAGER)), median),
                  _ratio(medians.get((m.key, COMPILE)), median),
                  None if self.copy_bandwidth is None else rate / self.copy_bandwidth,
                  m.flops / median / 1e12 if m.flops else None, self._matmul_fraction(m, median),
                  None if m.peak_bytes is None else m.peak_bytes / 2**20,
                  None if m.peak_bytes is None or not eager_peak else m.peak_bytes / eager_peak, "")
        return dataclasses.replace(row, target=_target_verdict(self._targets[m.op], row),
                                   eager_alongside_s=m.eager_alongside)

    def _matmul_fraction(self, m: Measurement, median: float) -> float | None:
        rate = self.matmul_rate(m.dtype) if m.flops else None
        return None if rate is None else m.flops / median / rate

    def report_lines(self) -> list[str]:
        env = environment(self.device)
        lines = [f"{env['device']} ({env['device_type']}), torch {env['torch']}, CUDA {env['cuda']}, "
                 f"triton {env['triton']}, {env['cpu_count']} CPUs, {env['torch_threads']} torch threads, "
                 f"{env['date']}"]
        if self.copy_bandwidth is not None:
            lines.append(f"device copy bandwidth (1 GiB clone): {self.copy_bandwidth / 1e9:.0f} GB/s")
        lines += self.notes
        lines.append(f"{' and '.join(BASELINES)}: the same code timed in {' and '.join(LAYOUTS)} (inputs and models), "
                     "rounds interleaved; the faster is reported, the layout column gives the other's extra time")
        lines.append("vs eager of a culturegan backend: against eager's faster layout timed in the same interleaved "
                     "rounds (eager's own row: its own test)")
        lines += format_table(self._table_header(), [self._table_cells(row) for row in self.rows()])
        lines += [f"not run: {provider}: {reason}" for provider, reason in self.skipped.items()]
        return lines

    def _table_header(self) -> list[str]:
        header = ["op", "shape", "dtype", "provider", "layout", "mode", "median", "vs eager", "vs compile"]
        if self.copy_bandwidth is not None:
            header += ["GB/s", "of copy", "TFLOP/s", "of matmul", "peak MiB", "mem vs eager"]
        return header + ["target"]

    def _table_cells(self, row: Row) -> list[str]:
        cells = [row.op, "x".join(map(str, row.shape)), row.dtype, row.provider, format_layout(row), row.mode,
                 format_seconds(row.median_s), format_ratio(row.vs_eager), format_ratio(row.vs_compile)]
        if self.copy_bandwidth is not None:
            cells += [f"{row.gb_per_s:.0f}", f"{row.copy_fraction:.0%}",
                      "" if row.tflops is None else f"{row.tflops:.1f}",
                      "" if row.matmul_fraction is None else f"{row.matmul_fraction:.0%}",
                      "" if row.peak_mib is None else f"{row.peak_mib:.0f}",
                      "" if row.memory_vs_eager is None else f"{row.memory_vs_eager:.2f}x"]
        return cells + [row.target]

    def write_json(self, path: Path) -> None:
        bandwidth = None if self.copy_bandwidth is None else self.copy_bandwidth / 1e9
        document = {**environment(self.device), "copy_bandwidth_gb_per_s": bandwidth,
                    "notes": self.notes, "skipped": self.skipped,
                    "rows": [dataclasses.asdict(row) for row in self.rows()]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")


def format_seconds(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def format_layout(row: Row) -> str:
    """The layout timed, and how much longer each other layout took: "nchw (channels_last +16%)"."""
    others = [f"{name} {median / row.median_s - 1:+.0%}" for name, median in row.layout_medians_s.items()
              if name != row.layout]
    return f"{row.layout} ({', '.join(others)})" if others else row.layout


def format_ratio(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}x"


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(map(len, column)) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return [line(header), line(["-" * width for width in widths]), *map(line, rows)]
