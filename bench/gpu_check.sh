#!/usr/bin/env bash
# GPU check: build, doctor, the test suite on CUDA, copy/matmul rates and the GPU benchmarks.
#
#   bash bench/gpu_check.sh OUTDIR        (from the repository root, on a CUDA machine)
#
# Writes OUTDIR/{build,doctor,tests,hardware,bench_kernels,bench_blocks}.log, their .json and
# OUTDIR/results-<date>.md. Every step runs under a timeout cut to what is left of an 8-minute
# budget, so a hang costs only its own step; a failed step does not stop the next ones, but the
# script exits non-zero if any failed.
#
# A short lease trims the steps through these variables (each replaces its step's pytest arguments;
# an empty one skips the step):
#   TEST_ARGS           default: tests -x -q -p no:cacheprovider
#   BENCH_KERNELS_ARGS  default: every kernel benchmark file
#   BENCH_BLOCKS_ARGS   default: the block, network, training-step and inference benchmark files
set -u

OUTDIR=${1:?usage: bash bench/gpu_check.sh OUTDIR}
PYTHON=${PYTHON:-python3}
BUDGET_S=${BUDGET_S:-450}  # 8 minutes, less the 10 s a step may overrun its timeout by, and a margin
DEADLINE=$((SECONDS + BUDGET_S))
DATE=$(date -u +%Y-%m-%d)
RESULTS="$OUTDIR/results-$DATE.md"
# Python's -P keeps the working directory off sys.path: the repository root holds the source
# tree's culturegan, without the compiled libraries that the installed one has.
PY=("$PYTHON" -P)
# pip may refuse a system-wide install (PEP 668); this machine is disposable.
export PIP_BREAK_SYSTEM_PACKAGES=1

mkdir -p "$OUTDIR"
STEPS=()  # "name|status|seconds" for the results file
FAILED=()

# run_step NAME MAX_SECONDS COMMAND...: runs COMMAND, its output shown and kept in OUTDIR/NAME.log.
run_step() {
    local name=$1 max=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    local limit=$((left < max ? left : max))
    if ((limit < 10)); then
        STEPS+=("$name|not run: out of time|0")
        FAILED+=("$name")
        return
    fi
    echo "=== $name (timeout ${limit}s)"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
    local rc=${PIPESTATUS[0]} status=ok
    if ((rc == 124 || rc == 137)); then
        status="timed out after ${limit}s"
    elif ((rc != 0)); then
        status="failed (exit $rc)"
    fi
    STEPS+=("$name|$status|$((SECONDS - start))")
    [[ $status == ok ]] || FAILED+=("$name")
}

# The test and benchmark tools; installing them may fail offline, which the later steps then show.
ensure_test_tools() {
    if "${PY[@]}" -c "import pytest, hypothesis, pytest_benchmark" 2>/dev/null; then
        return
    fi
    echo "=== installing pytest, hypothesis, pytest-benchmark"
    timeout 60 "${PY[@]}" -m pip install -q pytest hypothesis pytest-benchmark \
        || echo "could not install the test tools; continuing"
}

# The device, the versions, bf16/fp32 matmul TFLOP/s at 8192^2 and the 1 GiB D2D copy rate.
read -r -d '' HARDWARE_PY <<'PYTHON_END'
import importlib.metadata

import torch


def seconds_per_call(fn, iterations):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / iterations


print(f"device: {torch.cuda.get_device_name()}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, triton {importlib.metadata.version('triton')}")
n = 8192
for dtype in (torch.bfloat16, torch.float32):  # float32 without TF32, torch's default
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    tflops = 2 * n**3 / seconds_per_call(lambda: a @ b, 20) / 1e12
    print(f"matmul {n}x{n} {str(dtype).removeprefix('torch.')}: {tflops:.1f} TFLOP/s")
copy_bytes = 1 << 30
source = torch.empty(copy_bytes, dtype=torch.uint8, device="cuda")
print(f"device-to-device copy 1 GiB: {2 * copy_bytes / seconds_per_call(source.clone, 20) / 1e9:.0f} GB/s")
PYTHON_END

write_results() {
    {
        echo "# culturegan GPU check, $DATE"
        echo
        echo "## Device"
        echo '```'
        cat "$OUTDIR/hardware.log" 2>/dev/null || echo "(no hardware measurements)"
        echo '```'
        echo
        echo "## Steps"
        echo
        echo "| step | status | seconds |"
        echo "|---|---|---|"
        local step
        for step in "${STEPS[@]}"; do
            echo "| ${step//|/ | } |"
        done
        echo
        echo "tests: $(tail -n 1 "$OUTDIR/tests.log" 2>/dev/null || echo 'no log')"
        echo
        echo "## Benchmarks"
        echo
        echo '```'
        # The tables pytest printed in its terminal summaries (bench/conftest.py).
        local log
        for log in bench_kernels bench_blocks; do
            sed -n '/= culturegan benchmarks =/,/^results: /p' "$OUTDIR/$log.log" 2>/dev/null
        done
        echo '```'
    } >"$RESULTS"
    echo "results: $RESULTS"
}

ensure_test_tools
run_step build 180 env MAX_JOBS=16 CUDA_HOME=/usr/local/cuda TORCH_CUDA_ARCH_LIST=9.0 CULTUREGAN_BUILD_CUDA=1 \
    "${PY[@]}" -m pip install --no-build-isolation --no-deps .
run_step doctor 45 "${PY[@]}" -m culturegan doctor
TEST_ARGS=${TEST_ARGS-tests -x -q -p no:cacheprovider}
# The kernels' benchmarks first: the blocks' and networks' compile with max-autotune (minutes)
# and take whatever time is left.
BENCH_KERNELS_ARGS=${BENCH_KERNELS_ARGS-bench/test_bias_leaky_relu.py bench/test_feature_stats.py \
bench/test_gram.py bench/test_patch_nce_loss.py bench/test_upfirdn2d.py bench/test_modulated_conv2d.py}
BENCH_BLOCKS_ARGS=${BENCH_BLOCKS_ARGS-bench/test_conv_blocks.py bench/test_networks.py \
bench/test_training_step.py bench/test_inference.py}
# The variables hold pytest arguments split at spaces (-k expressions are quoted inside with ''),
# which eval keeps whole.
pytest_step() {  # pytest_step NAME MAX_SECONDS ARGS [more pytest arguments]
    local name=$1 max=$2 args=$3
    shift 3
    [[ -n $args ]] || { STEPS+=("$name|skipped (empty arguments)|0"); return; }
    eval "local argv=($args)"
    run_step "$name" "$max" "${PY[@]}" -m pytest "${argv[@]}" "$@"
}
pytest_step tests 150 "$TEST_ARGS"
run_step hardware 45 "${PY[@]}" -c "$HARDWARE_PY"
pytest_step bench_kernels 150 "$BENCH_KERNELS_ARGS" -q -p no:cacheprovider --gpu-sizes \
    --bench-json "$OUTDIR/bench_kernels.json"
pytest_step bench_blocks 240 "$BENCH_BLOCKS_ARGS" -q -p no:cacheprovider --gpu-sizes \
    --bench-json "$OUTDIR/bench_blocks.json"
write_results

if ((${#FAILED[@]})); then
    echo "failed steps: ${FAILED[*]}"
    exit 1
fi
