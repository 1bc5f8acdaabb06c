"""pytest-benchmark suite: MSE forward+backward, fastloss's backends against torch eager and
torch.compile, plus the device copy that sets the bandwidth ceiling.

    .venv/bin/python -m pytest bench/test_bench_mse.py --benchmark-only
(bench/report.py runs the same cases and prints the table with ratios.)
"""

import pytest
import torch

import cases

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = [1 << 18, 1 << 22, 1 << 25]


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
@pytest.mark.parametrize("provider", list(cases.providers(DEVICE)))
def test_mse_forward_backward(benchmark, provider, n):
    x, t = cases.make_inputs(n, torch.float32, DEVICE)
    step = cases.providers(DEVICE)[provider]()
    step(x, t)  # warm-up (and compilation)

    def run():
        step(x, t)
        _sync()

    benchmark.extra_info["bytes"] = cases.mse_bytes(n, torch.float32)
    benchmark(run)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"2^{n.bit_length() - 1}")
def test_copy_ceiling(benchmark, n):
    copy, nbytes = cases.copy_step(n, torch.float32, DEVICE)

    def run():
        copy()
        _sync()

    benchmark.extra_info["bytes"] = nbytes
    benchmark(run)
