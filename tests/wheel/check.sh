#!/usr/bin/env bash
# `make wheel-check`: what a user of a built wheel gets. From a source distribution (not the
# checkout) it builds a CPU-only wheel and, where nvcc exists, a one-arch CUDA wheel; checks with
# cuobjdump that the CUDA wheel holds machine code for that arch; installs the CPU wheel into a
# fresh virtual environment with no source tree on the path and no nvcc on PATH; runs
# `python -m fastloss` and the test suite against the installed package. Each wheel is built once.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
ARCH=${WHEEL_CHECK_ARCH:-9.0}          # the one arch of the CUDA wheel
WORK=$(mktemp -d /tmp/fastloss-wheel-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export MAX_JOBS=${MAX_JOBS:-2}
step() { echo "== wheel-check: $* ($(date +%T))"; }

step "source distribution"
"$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 || { tail -30 "$WORK/sdist.log"; exit 1; }
SDIST=$(ls "$WORK"/dist/fastloss-*.tar.gz)
mkdir "$WORK/src" && tar -xzf "$SDIST" -C "$WORK/src"
SRC=$(ls -d "$WORK"/src/fastloss-*)
echo "$(basename "$SDIST"): $(du -h "$SDIST" | cut -f1)"
# every source the package builds from is in the sdist (the CUDA sources too, when the CUDA wheel
# is not built here)
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  missing=$(git ls-files csrc kernels fastloss setup.py pyproject.toml | while read -r f; do
    [ -e "$SRC/$f" ] || echo "$f"; done)
  [ -z "$missing" ] || { echo "wheel-check: not in the sdist:"; echo "$missing"; exit 1; }
fi

build_wheel() {  # $1: name, then environment assignments
  local name=$1; shift
  local start=$SECONDS
  (cd "$SRC" && env "$@" "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/wheels/$name" .) \
    >"$WORK/$name.log" 2>&1 || { tail -30 "$WORK/$name.log"; exit 1; }
  local wheel
  wheel=$(ls "$WORK/wheels/$name"/*.whl)
  echo "$(basename "$wheel"): $(du -h "$wheel" | cut -f1), built from the sdist in $((SECONDS - start)) s"
}

step "CPU-only wheel from the sdist"
build_wheel cpu FASTLOSS_CUDA=0
CPU_WHEEL=$(ls "$WORK"/wheels/cpu/*.whl)
case "$(basename "$CPU_WHEEL")" in *+cputorch*) ;; *) echo "wheel-check: CPU wheel not tagged +cpu...: $CPU_WHEEL"; exit 1;; esac
"$PY" -m zipfile -l "$CPU_WHEEL" | grep -q "fastloss/py.typed" || { echo "wheel-check: no fastloss/py.typed in the wheel"; exit 1; }

# WHEEL_CHECK_CUDA=0 skips it (CI: `make test` has just compiled every .cu with the same nvcc)
if [ "${WHEEL_CHECK_CUDA:-1}" != 0 ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
  step "CUDA wheel for sm_${ARCH/./} from the sdist"
  build_wheel cuda FASTLOSS_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" CUDA_HOME="$CUDA_HOME"
  CUDA_WHEEL=$(ls "$WORK"/wheels/cuda/*.whl)
  case "$(basename "$CUDA_WHEEL")" in *+cu*torch*) ;; *) echo "wheel-check: CUDA wheel not tagged +cu...: $CUDA_WHEEL"; exit 1;; esac
  mkdir "$WORK/cuda-so" && (cd "$WORK/cuda-so" && "$PY" -m zipfile -e "$CUDA_WHEEL" .)
  CUOBJDUMP=$("$PY" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))')
  ELF=$("$CUOBJDUMP" --list-elf "$WORK"/cuda-so/fastloss/_C*.so)
  echo "$ELF" | sed 's/^/  /' | head -5
  echo "$ELF" | grep -q "sm_${ARCH/./}" || { echo "wheel-check: no sm_${ARCH/./} machine code in the CUDA wheel"; exit 1; }
else
  echo "(no nvcc, or WHEEL_CHECK_CUDA=0: the CUDA wheel is not built)"
fi

step "fresh virtual environment"
python3 -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
TORCH=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
"$VPY" -m pip install -q "torch==$TORCH" "$CPU_WHEEL" pytest pytest-benchmark scikit-learn expecttest \
  pytorch-metric-learning==2.9.0 tqdm matplotlib 2>&1 | grep -v "is ignored: it is neither" || true
# the tests and what they read, without the package's sources
mkdir "$WORK/run" && cp -r tests bench examples docs README.md pyproject.toml "$WORK/run/"
cd "$WORK/run"
CLEAN_PATH="$WORK/venv/bin:/usr/bin:/bin"

step "python -m fastloss (installed)"
env -i HOME="$HOME" PATH="$CLEAN_PATH" "$VPY" -m fastloss | tee "$WORK/info.txt"
grep -q "built against torch $TORCH" "$WORK/info.txt"
env -i HOME="$HOME" PATH="$CLEAN_PATH" "$VPY" -c 'import fastloss, sys; assert "site-packages" in fastloss.__file__, fastloss.__file__'
if env -i PATH="$CLEAN_PATH" sh -c 'command -v nvcc' >/dev/null; then echo "wheel-check: nvcc on the clean PATH"; exit 1; fi

step "the test suite against the installed wheel"
env -i HOME="$HOME" PATH="$CLEAN_PATH" "$VPY" -m pytest -q -p no:cacheprovider ${WHEEL_CHECK_TESTS:-tests} -x
step "done"
