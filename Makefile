# The commands the README quotes. `make test` and `make bench` set everything up first
# (virtual environment, pinned torch, build), so each works on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.14.1
# torch infers the toolkit from `nvcc` on PATH, which may be a wrapper: name the real one.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml $(shell find csrc -type f 2>/dev/null)

.PHONY: setup test mutation bench wheel wheel-check oldest-torch-check gpu-check clean

setup: $(VENV)/.built

$(VENV)/.deps: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" numpy pybind11 ninja setuptools wheel \
		pytest pytest-benchmark scikit-learn expecttest pytorch-metric-learning==2.9.0 tqdm matplotlib build
	touch $@

$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

# The whole suite: C++ CPU kernels natively, Triton kernels under TRITON_INTERPRET=1 (set by
# tests/conftest.py when no GPU is present), CUDA tests where a GPU is present.
test: setup
	$(PY) -m pytest -q tests

# Mutation testing (tests/mutation/README.md): a seeded 5% sample of the Python mutants (fastloss/ and
# the Triton kernels under the interpreter; MUTATION_SAMPLE=1 for all of them, several hours here),
# then the hand-written C++ mistakes, each with a rebuild of the CPU extension. Not part of CI.
MUTATION_SAMPLE ?= 0.05
mutation: setup
	$(PY) tests/mutation/run.py --sample $(MUTATION_SAMPLE) --jobs 2; python_status=$$?; \
	$(PY) tests/mutation/cpp_mutants.py; cpp_status=$$?; \
	exit $$(( python_status || cpp_status ))

# The benchmark report (bench/report.py; the README's Benchmarks): BENCH=full (default, about 30 min
# on a 2-core CPU) or BENCH=quick (about 3 min). It writes bench/out/<cpu|gpu>/, which git ignores;
# BENCH_ARGS=--refresh-results rewrites the committed bench/results/<cpu|gpu>/ instead. Nothing is
# installed on the system: without tcmalloc the caching-allocator regime uses glibc's own tunables.
BENCH ?= full
BENCH_ARGS ?=
bench: setup
	@echo "make bench: the $(BENCH) report$(if $(filter quick,$(BENCH)),, (BENCH=quick for a subset of about 3 min)); bench/report.py says how long it takes"
	$(PY) bench/report.py $(if $(filter quick,$(BENCH)),--quick) $(BENCH_ARGS)

# A wheel for every GPU arch this nvcc has from sm_80 on (sm_80, 86, 89, 90, and 100 and 120 where
# the toolkit has them), PTX for the newest; dist/fastloss-0.1.0+cu<CUDA>torch<minor>-....whl.
# WHEEL_ARCHS="9.0" for one arch; FASTLOSS_CUDA=0 for a CPU-only wheel (+cputorch<minor>).
NVCC_ARCHS := $(if $(CUDA_HOME),$(shell $(CUDA_HOME)/bin/nvcc --list-gpu-arch 2>/dev/null))
WHEEL_ARCHS ?= 8.0;8.6;8.9;9.0$(if $(filter compute_100,$(NVCC_ARCHS)),;10.0)$(if $(filter compute_120,$(NVCC_ARCHS)),;12.0)+PTX
wheel: $(VENV)/.deps
	TORCH_CUDA_ARCH_LIST="$(WHEEL_ARCHS)" $(PY) -m pip wheel --no-build-isolation --no-deps -w dist .

# The wheels as a user gets them (tests/wheel/check.sh): built from the sdist, inspected, installed
# into a fresh venv without the sources or nvcc, `python -m fastloss` and the suite run against them.
wheel-check: $(VENV)/.deps
	PY=$(abspath $(PY)) bash tests/wheel/check.sh

# The oldest torch CI can install (torch 2.13.0 CPU, with Triton 3.8; tests/wheel/oldest_torch.sh):
# the CPU and interpreted-Triton suite against a build from the sdist.
oldest-torch-check: $(VENV)/.deps
	PY=$(abspath $(PY)) bash tests/wheel/oldest_torch.sh

# On the GPU validation machine (docs/gpu-check.md): its own python3, no venv, no network.
gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf build dist *.egg-info fastloss/_C*.so fastloss/_build_info.py $(VENV)
