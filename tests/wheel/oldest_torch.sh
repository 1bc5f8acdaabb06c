#!/usr/bin/env bash
# `make oldest-torch-check`: the CPU kernels and the interpreted Triton kernels built and tested
# against the oldest torch this machine can install without a multi-GB download (torch 2.13.0,
# CPU build; the floor, 2.11, runs on the GPU machine: see the README's "Supported torch
# versions"). Triton stays at 3.8: the interpreter of Triton 3.6 cannot run a loop whose bound is
# a kernel argument ("only 0-dimensional arrays can be converted to Python scalars" in every
# reduction's `for start in range(0, count, BLOCK)`), which compiled Triton 3.6 runs. Built from
# the sdist, installed into a fresh virtual environment, the suite run against the installed package.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
OLD_TORCH=${OLD_TORCH:-2.13.0}
OLD_TRITON=${OLD_TRITON:-3.8.0}
WORK=$(mktemp -d /tmp/fastloss-oldest-torch.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export MAX_JOBS=${MAX_JOBS:-2}
step() { echo "== oldest-torch-check: $* ($(date +%T))"; }

step "torch $OLD_TORCH and Triton $OLD_TRITON in a fresh virtual environment"
python3 -m venv "$WORK/venv"
VPY=$WORK/venv/bin/python
"$VPY" -m pip install -q "torch==$OLD_TORCH" "triton==$OLD_TRITON" numpy pybind11 ninja setuptools wheel pytest \
  pytest-benchmark scikit-learn expecttest pytorch-metric-learning==2.9.0 tqdm matplotlib 2>&1 \
  | grep -v "is ignored: it is neither" || true
"$VPY" -c 'import torch, triton; print("torch", torch.__version__, "| triton", triton.__version__)'

step "CPU-only build from the sdist against it"
"$PY" -m build --sdist --no-isolation --outdir "$WORK/dist" . >"$WORK/sdist.log" 2>&1 || { tail -30 "$WORK/sdist.log"; exit 1; }
mkdir "$WORK/src" && tar -xzf "$WORK"/dist/fastloss-*.tar.gz -C "$WORK/src"
(cd "$WORK"/src/fastloss-* && FASTLOSS_CUDA=0 "$VPY" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/wheel" .) \
  >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; exit 1; }
"$VPY" -m pip install -q --no-deps "$WORK"/wheel/*.whl
ls "$WORK"/wheel

step "the test suite against it"
mkdir "$WORK/run" && cp -r tests bench examples docs README.md pyproject.toml "$WORK/run/"
cd "$WORK/run"
env -i HOME="$HOME" PATH="$WORK/venv/bin:/usr/bin:/bin" "$VPY" -m fastloss
env -i HOME="$HOME" PATH="$WORK/venv/bin:/usr/bin:/bin" "$VPY" -m pytest -q -p no:cacheprovider ${OLDEST_TESTS:-tests} ${PYTEST_ARGS--x}
step "done"
