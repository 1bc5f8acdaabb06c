#!/usr/bin/env bash
# `make gpu-check`: one run on the GPU validation machine (docs/gpu-check.md).
# Builds for sm_90, prints the versions, runs the test suite (CUDA kernels and compiled
# Triton against the reference), then the benchmark report (quick plan); the tables print last. Full logs
# and results go to $OUT (the current directory when unset).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
export FASTLOSS_CUDA=1
COMMIT="${FASTLOSS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

echo "== build (arch $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
start=$(date +%s)
if ! "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  echo "gpu-check: BUILD FAILED (log: build.log)"
  exit 1
fi
echo "built in $(( $(date +%s) - start )) s"

echo "== versions"
{
  echo "commit: $COMMIT"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
  "$PY" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda, "| triton", triton.__version__)'
  nvcc --version | tail -2 | head -1
  "$PY" -m fastloss
} 2>&1 | tee "$OUT/versions.txt"

echo "== tests"
start=$(date +%s)
# parallel workers where pytest-xdist exists: most of the time is Triton/inductor compilation
XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 12"
# The GPU-parametrized tests (CUDA kernels, compiled Triton); the CPU ones run in CI.
timeout "${TEST_TIMEOUT:-240}" "$PY" -m pytest -q -p no:cacheprovider tests -o addopts="" -rfE $XDIST \
  -k "${TEST_SELECT:-cuda}" >"$OUT/tests.log" 2>&1
tests_rc=$?
echo "tests exit $tests_rc in $(( $(date +%s) - start )) s: $(tail -1 "$OUT/tests.log")"
grep -E "^(FAILED|ERROR)" "$OUT/tests.log" | head -20

if [ -n "${SKIP_BENCH:-}" ]; then
  echo "gpu-check: tests exit $tests_rc, benchmarks skipped (SKIP_BENCH) (commit $COMMIT)"
  exit "$tests_rc"
fi
echo "== benchmarks"
# the quick plan fits the 8-minute budget; GPU_BENCH=full for every size (about 5 min more)
FASTLOSS_COMMIT="$COMMIT" "$PY" bench/report.py $([ "${GPU_BENCH:-quick}" = full ] || echo --quick) \
  --parts memory-bound --out "$OUT/report" 2>"$OUT/bench-progress.log" | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "gpu-check: tests exit $tests_rc, bench exit $bench_rc (commit $COMMIT)"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
